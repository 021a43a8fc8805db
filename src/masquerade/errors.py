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


def error_line(exc: BaseException, limit: int = 160) -> str:
    """A foreign library's exception as part of one of our lines: the first sentence of its first non-empty line,
    cut at ``limit`` characters (torch's messages run to paragraphs of advice), or its type where it says nothing."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = text.split(". ")[0].rstrip(". ")  # the first sentence: what went wrong, not the advice after it
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
