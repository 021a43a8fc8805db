"""Fused block moves for AES disguising (numba): quantise and gather blocks into one byte buffer, and back.

``gather_u8``: out[n, c, j] = round(255 · x[n, c, block src[j]]) as b² bytes (row-major within the block).
``scatter_f32``: out[n, c, block j] = blocks[n, c, src[j]] / 255.
Together with one AES call over the whole buffer they replace several full-size numpy passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def gather_u8(x: np.ndarray, b: int, src: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n, c, h, w = x.shape
    gw = w // b
    m = src.shape[0]
    for i in prange(n):
        for ch in range(c):
            for j in range(m):
                s = src[j]
                y0 = (s // gw) * b
                x0 = (s % gw) * b
                for r in range(b):
                    for q in range(b):
                        v = x[i, ch, y0 + r, x0 + q] * np.float32(255.0)
                        out[i, ch, j, r * b + q] = np.uint8(np.rint(v))


@njit(parallel=True, cache=True, nogil=True)
def scatter_f32(blocks: np.ndarray, b: int, src: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    n, c, h, w = out.shape
    gw = w // b
    m = src.shape[0]
    scale = np.float32(255.0)
    for i in prange(n):
        for ch in range(c):
            for j in range(m):
                y0 = (j // gw) * b
                x0 = (j % gw) * b
                s = src[j]
                for r in range(b):
                    for q in range(b):
                        out[i, ch, y0 + r, x0 + q] = np.float32(blocks[i, ch, s, r * b + q]) / scale
