"""Run a compiled kernel over ranges of its items on several threads (the kernels release the GIL).

``parallel(fn, n, *args)`` calls ``fn(*args, start, stop)`` for consecutive ranges covering ``0..n``: one range per
thread, on a pool made once per process, or one call on this thread when the work is small. The number of threads
is the CPUs this process may use, or ``$MASQUERADE_THREADS``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

__all__ = ["parallel", "threads"]

_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    env = os.environ.get("MASQUERADE_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def parallel(fn: Callable[..., Any], n: int, *args: Any, min_items: int = 1) -> None:
    """``fn(*args, start, stop)`` over ``0..n`` in one range per thread (ranges of at least ``min_items``)."""
    global _pool
    t = min(threads(), n // max(1, min_items))
    if t <= 1:
        fn(*args, 0, n)
        return
    if _pool is None or _pool._max_workers < t:
        _pool = ThreadPoolExecutor(max_workers=t, thread_name_prefix="masquerade")
    bounds = [n * i // t for i in range(t + 1)]
    futures = [_pool.submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(1, t)]
    fn(*args, bounds[0], bounds[1])               # this thread takes the first range
    for f in futures:
        f.result()
