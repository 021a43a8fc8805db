"""Fused block moves for AES disguising (numba): quantise and gather blocks into one byte buffer, and back.

``gather_u8``: out[n, c, j] = round(255 · x[n, c, block src[j]]) as b² bytes (row-major within the block).
``scatter_f32``: out[n, c, block j] = blocks[n, c, src[j]] / 255.
Both walk the image plane in memory order through a per-plane offset table (the block moves stay inside one
channel plane, which fits in L1). Together with one AES call over the whole buffer they replace several full-size
numpy passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def plane_offsets(h: int, w: int, b: int, src: np.ndarray) -> np.ndarray:
    """For every pixel of a plane (row-major), its byte offset in the block buffer whose block j holds block src[j]."""
    gw = w // b
    where = np.empty(len(src), np.int64)
    where[src] = np.arange(len(src))                # plane block -> buffer slot
    y, x = np.divmod(np.arange(h * w), w)
    block = (y // b) * gw + x // b
    return (where[block] * b * b + (y % b) * b + x % b).astype(np.int64)


@njit(parallel=True, cache=True, nogil=True)
def _gather_u8(x: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """x: (N, C, P) float32 in [0, 1]; out: (N, C, P) uint8 with out[n, c, offsets[p]] = round(255 · x[n, c, p])."""
    n, c, p = x.shape
    for i in prange(n):
        for ch in range(c):
            src = x[i, ch]
            dst = out[i, ch]
            for q in range(p):
                dst[offsets[q]] = np.uint8(np.rint(src[q] * np.float32(255.0)))


@njit(parallel=True, cache=True, nogil=True)
def _scatter_f32(blocks: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """blocks: (N, C, P) uint8; out: (N, C, P) float32 with out[n, c, p] = blocks[n, c, offsets[p]] / 255."""
    n, c, p = out.shape
    for i in prange(n):
        for ch in range(c):
            src = blocks[i, ch]
            dst = out[i, ch]
            for q in range(p):
                dst[q] = np.float32(src[offsets[q]]) / np.float32(255.0)


def _check_offsets(offsets: np.ndarray, a: np.ndarray, b: np.ndarray, where: str) -> None:
    """Compiled code does not check bounds: every offset must address the buffer, and the two arrays agree."""
    if a.shape != b.shape or a.ndim != 3 or offsets.shape != (a.shape[2],):
        raise ValueError(f"{where}: the arrays and the offset table disagree in shape")
    if offsets.size and (offsets.min() < 0 or offsets.max() >= a.shape[2]):
        raise ValueError(f"{where}: an offset lies outside the block buffer")


def gather_u8(x: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """Bounds-checked entry to the compiled gather (see the module docstring)."""
    _check_offsets(offsets, x, out, "gather_u8")
    _gather_u8(x, offsets, out)


def scatter_f32(blocks: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """Bounds-checked entry to the compiled scatter (see the module docstring)."""
    _check_offsets(offsets, blocks, out, "scatter_f32")
    _scatter_f32(blocks, offsets, out)
