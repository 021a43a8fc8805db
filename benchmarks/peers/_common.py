"""Shared by the peer adapters: arguments, cold/warm timing, the JSON record, stub modules."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable


def parse(peer: str, cases: tuple[str, ...], n_default: int, n_help: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=f"Time the published code of {peer} (see benchmarks/peers/README.md).")
    ap.add_argument("--repo", required=True, help="checkout of the peer's repository (benchmarks/peers/env.py)")
    ap.add_argument("--case", required=True, choices=cases)
    ap.add_argument("--n", type=int, default=n_default, help=n_help)
    ap.add_argument("--repeat", type=int, default=3, help="warm calls after the cold one (the best is reported)")
    ap.add_argument("--json", required=True, help="where to write the result")
    return ap.parse_args()


def write(path: str, record: dict) -> None:
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


def skip(args: argparse.Namespace, peer: str, reason: str) -> None:
    write(args.json, {"peer": peer, "case": args.case, "skip": reason})
    sys.exit(0)


@contextlib.contextmanager
def quiet():
    """Swallow what the peer's code prints (progress lines), so that only our JSON line is on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def cold_warm(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Seconds of the first call (cold) and the best of ``repeat`` further calls (warm, as timeit reports)."""
    with quiet():
        t = time.perf_counter()
        fn()
        cold = time.perf_counter() - t
        times = []
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return cold, min(times)


def add_repo(path: str) -> Path:
    repo = Path(path).resolve()
    if not repo.is_dir():
        raise SystemExit(f"no checkout at {repo}")
    sys.path.insert(0, str(repo))
    return repo


class _Placeholder:
    """What a stub module hands out for any name: fails only if the peer's code actually uses it."""

    def __init__(self, *a, **k):
        raise RuntimeError(
            "this is a stub standing in for a module that cannot be imported here; it is off the "
            "measured path and must not be called"
        )


class StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_Placeholder,), {})


def stub_modules(*names: str) -> list[str]:
    """Put empty stub modules (any attribute is a placeholder class) into sys.modules for these dotted names."""
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            full = ".".join(parts[:i])
            if full not in sys.modules:
                mod = StubModule(full)
                mod.__path__ = []  # a package, so that submodules can be imported from it
                sys.modules[full] = mod
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[full])
    return list(names)


def forget(prefix: str) -> None:
    """Drop a half-imported package (and its submodules) from sys.modules."""
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]
