"""Bit-shuffle kernels (compiled, ``masquerade._native``): permute the 32 bits of every uint32.

Keys arrive as ``perm`` rows (uint8, 32 each, MSB-first: output bit j takes input bit perm[j]); ``inverse`` applies
the inverse permutation without building it. For one key the four 256-entry tables ``lut[b][v]`` hold byte b's
value v with its bits already moved, so a word is shuffled by four lookups ORed together. A table costs 1,024
words to build, so tables are built once for a fixed key, once per row for per-vector keys, and per-element keys
use the 32-step bit loop instead. The compiled code refuses a key row that is not a permutation.
"""

from __future__ import annotations

import numpy as np

from masquerade import _native
from masquerade._threads import parallel

MIN_WORDS = 1 << 18  # words per thread: below this, one thread


def _words(x: np.ndarray, out: np.ndarray, where: str) -> None:
    if x.dtype != np.uint32 or out.dtype != np.uint32 or x.shape != out.shape:
        raise ValueError(f"{where}: expected two uint32 arrays of one shape")
    if not (x.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError(f"{where}: the arrays must be contiguous")


def _perm(perm: np.ndarray, rows: int, where: str) -> np.ndarray:
    p = np.ascontiguousarray(perm, dtype=np.uint8)
    if p.size != 32 * rows:
        raise ValueError(f"{where}: expected {rows} permutation rows of 32")
    return p


def shuffle_fixed(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:
    """x, out: (N, D) uint32; perm: (32,) uint8 -- one permutation for everything."""
    _words(x, out, "shuffle_fixed")
    n, d = x.shape
    parallel(
        _native.shuffle_rows,
        n,
        x,
        _perm(perm, 1, "shuffle_fixed"),
        out,
        n,
        d,
        1,
        inverse,
        min_items=max(1, MIN_WORDS // max(d, 1)),
    )


def shuffle_rows(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:
    """x, out: (N, D) uint32; perm: (N, 32) uint8 -- one permutation per row."""
    _words(x, out, "shuffle_rows")
    n, d = x.shape
    parallel(
        _native.shuffle_rows,
        n,
        x,
        _perm(perm, n, "shuffle_rows"),
        out,
        n,
        d,
        n,
        inverse,
        min_items=max(1, MIN_WORDS // max(d, 1)),
    )


def shuffle_elements(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:
    """x, out: (M,) uint32; perm: (M, 32) uint8 -- one permutation per element (32-step bit loop)."""
    _words(x, out, "shuffle_elements")
    m = x.size
    parallel(
        _native.shuffle_elements, m, x, _perm(perm, m, "shuffle_elements"), out, m, inverse, min_items=MIN_WORDS // 8
    )


def fisher_yates(rand: np.ndarray, out: np.ndarray) -> None:
    """out[i] = a permutation of 0..31 from 31 random uint32 words rand[i] (Fisher-Yates; index by multiply-shift,
    bias below 32 / 2^32)."""
    n = out.shape[0]
    if rand.shape != (n, 31) or rand.dtype != np.uint32 or out.shape != (n, 32) or out.dtype != np.uint8:
        raise ValueError("fisher_yates: expected (n, 31) uint32 words and an (n, 32) uint8 output")
    if not out.flags.c_contiguous:
        raise ValueError("fisher_yates: the output must be contiguous")
    parallel(_native.fisher_yates, n, np.ascontiguousarray(rand), out, n, min_items=1 << 15)
