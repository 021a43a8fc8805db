"""Progress bars for long loops: on when stderr is a terminal, off with ``--quiet`` or when piped."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_QUIET = False

__all__ = ["set_quiet", "is_quiet", "track", "bar"]


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar of this process."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET or os.environ.get("MASQUERADE_QUIET", "") not in ("", "0")


def _disabled(disable: bool | None) -> bool:
    if disable is not None:
        return disable
    if is_quiet():
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


def track(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None
) -> Iterator[T]:
    """Iterate with a progress bar (see module docstring for when it shows)."""
    yield from tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=_disabled(disable), leave=False, dynamic_ncols=True
    )


def bar(
    *, total: int | None = None, desc: str = "", unit: str = "it", unit_scale: bool = False, disable: bool | None = None
) -> tqdm:
    """A manual progress bar (``with bar(total=n) as b: b.update(k)``)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=_disabled(disable),
        leave=False,
        dynamic_ncols=True,
    )
