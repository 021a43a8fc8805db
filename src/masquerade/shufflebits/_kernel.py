"""Bit-shuffle kernels (numba): permute the 32 bits of every uint32.

Keys arrive as ``perm`` rows (uint8, 32 each, MSB-first: output bit j takes input bit perm[j]); ``inverse`` applies
the inverse permutation without building it. For one key the four 256-entry tables ``lut[b][v]`` hold byte b's
value v with its bits already moved, so a word is shuffled by four lookups ORed together. A table costs 1,024
words to build, so tables are built once for a fixed key, once per row for per-vector keys, and per-element keys
use the 32-step bit loop instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def _dest(perm: np.ndarray, inverse: bool, dest: np.ndarray) -> None:  # pragma: no cover - compiled
    """dest[i] = the output bit (LSB numbering) that input bit i moves to."""
    for j in range(32):
        if inverse:
            dest[31 - j] = 31 - perm[j]
        else:
            dest[31 - perm[j]] = 31 - j


@njit(cache=True, nogil=True, inline="always")
def _build_lut(perm: np.ndarray, inverse: bool, lut: np.ndarray) -> None:  # pragma: no cover - compiled
    dest = np.empty(32, np.uint32)
    _dest(perm, inverse, dest)
    for b in range(4):
        lut[b, 0] = 0
        for t in range(8):
            bit = np.uint32(1) << dest[8 * b + t]
            step = 1 << t
            for v in range(step):
                lut[b, v | step] = lut[b, v] | bit


@njit(cache=True, nogil=True, inline="always")
def _apply_lut(row: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Four table lookups ORed together per word."""
    for j in range(row.shape[0]):
        w = row[j]
        out[j] = lut[0, w & 0xFF] | lut[1, (w >> 8) & 0xFF] | lut[2, (w >> 16) & 0xFF] | lut[3, w >> 24]


@njit(parallel=True, cache=True, nogil=True)
def shuffle_fixed(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:  # pragma: no cover
    """x, out: (N, D) uint32; perm: (32,) uint8 -- one permutation for everything."""
    lut = np.empty((4, 256), np.uint32)
    _build_lut(perm, inverse, lut)
    for i in prange(x.shape[0]):
        _apply_lut(x[i], lut, out[i])


@njit(parallel=True, cache=True, nogil=True)
def shuffle_rows(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:  # pragma: no cover
    """x, out: (N, D) uint32; perm: (N, 32) uint8 -- one permutation per row."""
    for i in prange(x.shape[0]):
        lut = np.empty((4, 256), np.uint32)
        _build_lut(perm[i], inverse, lut)
        _apply_lut(x[i], lut, out[i])


@njit(parallel=True, cache=True, nogil=True)
def shuffle_elements(x: np.ndarray, perm: np.ndarray, inverse: bool, out: np.ndarray) -> None:  # pragma: no cover
    """x, out: (M,) uint32; perm: (M, 32) uint8 -- one permutation per element (32-step bit loop)."""
    for i in prange(x.shape[0]):
        w = x[i]
        r = np.uint32(0)
        p = perm[i]
        if inverse:
            for j in range(32):
                r |= ((w >> np.uint32(31 - j)) & np.uint32(1)) << np.uint32(31 - p[j])
        else:
            for j in range(32):
                r |= ((w >> np.uint32(31 - p[j])) & np.uint32(1)) << np.uint32(31 - j)
        out[i] = r


@njit(parallel=True, cache=True, nogil=True)
def fisher_yates(rand: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[i] = a permutation of 0..31 from 31 random uint32 words rand[i] (Fisher-Yates; index by multiply-shift,
    bias below 32 / 2^32)."""
    for i in prange(out.shape[0]):
        row = out[i]
        for t in range(32):
            row[t] = t
        for t in range(31, 0, -1):
            j = (np.uint64(rand[i, 31 - t]) * np.uint64(t + 1)) >> np.uint64(32)
            tmp = row[t]
            row[t] = row[j]
            row[j] = tmp
