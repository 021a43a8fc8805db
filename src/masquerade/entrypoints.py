"""Plugins of other packages, as the installed distributions declare them in the entry-point groups
``masquerade.schemes`` and ``masquerade.attacks``: names and ``module:Class`` targets, read without importing any
plugin. :mod:`masquerade.registry` serves them by name; :mod:`masquerade.keys` finds a plugin key's module here.
Nothing here imports torch or another masquerade module."""

from __future__ import annotations

import logging
import re

__all__ = ["plugin_entries"]

_VALID_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
_VALID_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _warn(message: str) -> None:
    logging.getLogger("masquerade.registry").warning("masquerade: warning: %s", message)


def plugin_entries(group: str, kind: str) -> dict[str, tuple[str, str]]:
    """name -> (``module:Class``, ``"(from Distribution)"``) of the ``group`` entry points of every installed
    distribution. One distribution at a time: a malformed entry_points.txt anywhere in the environment must not take
    down ``masquerade list`` and every command with it; what cannot be read, or names no ``module:Class``, is skipped
    with a warning. The first distribution to declare a name keeps it."""
    from importlib.metadata import distributions

    out: dict[str, tuple[str, str]] = {}
    for dist in distributions():
        try:
            found = [ep for ep in dist.entry_points if ep.group == group]
            who = (dist.metadata["Name"] or "a plugin") if found else ""  # METADATA is slow to parse
        except Exception as exc:  # noqa: BLE001 - foreign metadata may fail in any way
            _warn(
                f"skipped the {group} entry points of a distribution whose metadata cannot be read "
                f"({type(exc).__name__}: {exc})"
            )
            continue
        for ep in found:
            if not _VALID_NAME.fullmatch(ep.name or "") or not _VALID_TARGET.fullmatch(ep.value or ""):
                _warn(
                    f"skipped {kind} entry point {ep.name!r} = {ep.value!r} from {who}: expected a "
                    f"lower-case name = 'package.module:Class'"
                )
                continue
            out.setdefault(ep.name, (ep.value, f"(from {who})"))
    return out
