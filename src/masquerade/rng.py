"""Randomness: explicit generators everywhere, the operating system's CSPRNG by default.

Every random function in masquerade takes ``rng``: ``None`` (fresh, unpredictable randomness), an ``int`` seed (a
reproducible experiment), a :class:`numpy.random.Generator` or a :class:`torch.Generator`. Nothing uses the global
RNG of numpy, torch or :mod:`random`.

With ``rng=None`` the generator is Philox-4x64-10 (a counter-based generator built from a block cipher design) keyed
with 256 bits read from :func:`secrets.token_bytes`, i.e. the operating system's CSPRNG; its output is as hard to
predict as that key. A seed gives numpy's default PCG64 stream, recorded in the run folder so the experiment can be
repeated. Raw secret bytes (AES keys) never come from a generator: use :func:`secure_bytes`.
"""

from __future__ import annotations

import secrets
import sys
from typing import TYPE_CHECKING, Union

import numpy as np

from masquerade.errors import InputError

if TYPE_CHECKING:
    import torch

RngLike = Union[None, int, np.random.Generator, "torch.Generator"]

__all__ = ["RngLike", "secure_rng", "secure_bytes", "as_generator", "torch_generator", "describe_rng", "spawn"]


def secure_rng() -> np.random.Generator:
    """A generator keyed from the operating system's CSPRNG (never reproducible)."""
    key = np.frombuffer(secrets.token_bytes(16), dtype=np.uint64).copy()
    counter = np.frombuffer(secrets.token_bytes(32), dtype=np.uint64).copy()
    return np.random.Generator(np.random.Philox(key=key, counter=counter))


def secure_bytes(n: int) -> bytes:
    """``n`` bytes straight from the operating system's CSPRNG (for cipher keys)."""
    if n < 0:
        raise InputError(f"secure_bytes: n must be >= 0, got {n}")
    return secrets.token_bytes(n)


def as_generator(rng: RngLike = None) -> np.random.Generator:
    """Turn any accepted ``rng`` into a :class:`numpy.random.Generator` (never the global one)."""
    if rng is None:
        return secure_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    torch = sys.modules.get("torch")  # a torch Generator can only come from a program that imported torch
    if torch is not None and isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    if isinstance(rng, (bool, np.bool_)):
        raise InputError(f"rng must be None, an int seed or a generator, not {rng!r}")
    if isinstance(rng, (int, np.integer)):
        if rng < 0:
            raise InputError(f"a seed must be a non-negative integer, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.RandomState):
        raise InputError("rng: numpy.random.RandomState is the legacy global-style API; pass a seed or a Generator")
    raise InputError(f"rng must be None, an int seed, a numpy Generator or a torch Generator, not {type(rng).__name__}")


def torch_generator(rng: RngLike = None) -> torch.Generator:
    """A CPU :class:`torch.Generator` derived from ``rng`` (a torch generator is returned as is)."""
    import torch

    if isinstance(rng, torch.Generator):
        return rng
    gen = as_generator(rng)
    g = torch.Generator()
    g.manual_seed(int(gen.integers(0, 2**63 - 1)))
    return g


def spawn(rng: RngLike, n: int) -> list[np.random.Generator]:
    """``n`` independent child generators (for parallel or per-epoch streams)."""
    gen = as_generator(rng)
    return [np.random.default_rng(int(s)) for s in gen.integers(0, 2**63 - 1, size=n)] if n else []


def describe_rng(rng: RngLike) -> dict[str, object]:
    """What to record in a run folder's config: the seed when there is one, never generator state."""
    if rng is None:
        return {"source": "os-csprng", "seed": None}
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return {"source": "seed", "seed": int(rng)}
    return {"source": type(rng).__name__, "seed": None}
