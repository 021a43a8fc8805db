"""Run a compiled kernel over ranges of its items on several threads (the kernels release the GIL).

``parallel(fn, n, *args)`` calls ``fn(*args, start, stop)`` for consecutive ranges covering ``0..n``: one range per
thread, on a pool made once per process, or one call on this thread when the work is small. The number of threads
is the CPUs this process may use (no more than torch's thread setting), or ``$MASQUERADE_THREADS``.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

__all__ = ["parallel", "threads"]

_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """``$MASQUERADE_THREADS``, else the CPUs this process may use, capped by torch's thread setting where torch is
    loaded (a worker that set ``torch.set_num_threads(1)`` to share the machine gets one thread here too)."""
    env = os.environ.get("MASQUERADE_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = max(1, os.cpu_count() or 1)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        cpus = min(cpus, max(1, int(torch.get_num_threads())))
    return cpus


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: make a new pool on first use."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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
    try:
        fn(*args, bounds[0], bounds[1])  # this thread takes the first range
    finally:
        wait(futures)  # never return (or raise) while other ranges still write
    for f in futures:
        f.result()  # the first error of another range, if any
