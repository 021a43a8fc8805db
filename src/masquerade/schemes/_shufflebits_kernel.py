"""Bit-shuffle kernels (numba): permute the 32 bits of every uint32 through per-byte lookup tables.

A permutation is given as ``dest`` (uint8, 32 per key): input bit i (LSB numbering) moves to bit ``dest[i]``. For one
key the four 256-entry tables ``lut[b][v]`` hold byte b's value v with its bits already moved, so a word is shuffled
by four lookups ORed together. A table costs 1,024 words to build, so tables are built once for a fixed key, once per
row for per-vector keys, and per-element keys use the 32-step bit loop instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def _build_lut(dest: np.ndarray, lut: np.ndarray) -> None:  # pragma: no cover - compiled
    for b in range(4):
        lut[b, 0] = 0
        for t in range(8):
            bit = np.uint32(1) << np.uint32(dest[8 * b + t])
            step = 1 << t
            for v in range(step):
                lut[b, v | step] = lut[b, v] | bit


@njit(parallel=True, cache=True, nogil=True)
def shuffle_fixed(x: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """x, out: (N, D) uint32; dest: (32,) uint8 -- one permutation for everything."""
    lut = np.empty((4, 256), np.uint32)
    _build_lut(dest, lut)
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            w = x[i, j]
            out[i, j] = (lut[0, w & 0xFF] | lut[1, (w >> 8) & 0xFF] | lut[2, (w >> 16) & 0xFF]
                         | lut[3, w >> 24])


@njit(parallel=True, cache=True, nogil=True)
def shuffle_rows(x: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """x, out: (N, D) uint32; dest: (N, 32) uint8 -- one permutation per row."""
    n, d = x.shape
    for i in prange(n):
        lut = np.empty((4, 256), np.uint32)
        _build_lut(dest[i], lut)
        for j in range(d):
            w = x[i, j]
            out[i, j] = (lut[0, w & 0xFF] | lut[1, (w >> 8) & 0xFF] | lut[2, (w >> 16) & 0xFF]
                         | lut[3, w >> 24])


@njit(parallel=True, cache=True, nogil=True)
def shuffle_elements(x: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """x, out: (M,) uint32; dest: (M, 32) uint8 -- one permutation per element (32-step bit loop)."""
    for i in prange(x.shape[0]):
        w = x[i]
        r = np.uint32(0)
        for t in range(32):
            r |= ((w >> np.uint32(t)) & np.uint32(1)) << np.uint32(dest[i, t])
        out[i] = r
