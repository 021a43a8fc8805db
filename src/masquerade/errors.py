"""Errors meant for people: one line that says what is wrong and where.

The command line maps :class:`InputError` (bad usage or bad input) to exit code 2 and every other
:class:`MasqueradeError` to exit code 1; neither prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class MasqueradeError(Exception):
    """A failure the user can act on; the message is a single line."""

    exit_code = 1


class InputError(MasqueradeError, ValueError):
    """Bad input: a wrong shape, a file that is not an image, a key for another scheme, bad settings."""

    exit_code = 2


class IntegrityError(MasqueradeError):
    """Data failed a check (a checksum, a format version, a truncated file)."""

    exit_code = 1


class NotInvertibleError(MasqueradeError):
    """``decode`` was asked of a scheme that cannot be inverted, even with its key."""

    exit_code = 2
