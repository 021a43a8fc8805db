"""Fused block moves for AES disguising (compiled, ``masquerade._native``): quantise and gather blocks into one
byte buffer, and back.

``gather_u8``: out[n, c, j] = round(255 · x[n, c, block src[j]]) as b² bytes (row-major within the block).
``scatter_f32``: out[n, c, block j] = blocks[n, c, src[j]] / 255.
Both walk the image plane in memory order through a per-plane offset table (the block moves stay inside one
channel plane, which fits in L1). Together with one AES call over the whole buffer they replace several full-size
numpy passes; they run on every core, which also spreads the first touch of freshly allocated output pages.
"""

from __future__ import annotations

import numpy as np

from masquerade import _native
from masquerade._threads import parallel

MIN_PLANES = 512  # planes per thread: below this, one thread


def plane_offsets(h: int, w: int, b: int, src: np.ndarray) -> np.ndarray:
    """For every pixel of a plane (row-major), its byte offset in the block buffer whose block j holds block src[j]."""
    gw = w // b
    where = np.empty(len(src), np.int64)
    where[src] = np.arange(len(src))  # plane block -> buffer slot
    y, x = np.divmod(np.arange(h * w), w)
    block = (y // b) * gw + x // b
    return (where[block] * b * b + (y % b) * b + x % b).astype(np.int64)


def _runs(offsets: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """The offset table as runs: the longest r dividing the plane such that each r consecutive pixels go to r
    consecutive bytes (r = b for b×b blocks), and the start of each run."""
    p = offsets.size
    for r in sorted({d for d in range(1, min(p, 64) + 1) if p % d == 0}, reverse=True):
        table = offsets.reshape(-1, r)
        if np.array_equal(table, table[:, :1] + np.arange(r)):
            return np.ascontiguousarray(table[:, 0]), r
    raise ValueError(f"{where}: bad offset table")  # pragma: no cover - r = 1 always matches


def _check(
    offsets: np.ndarray, a: np.ndarray, b: np.ndarray, a_dtype: type, b_dtype: type, where: str
) -> tuple[int, int]:
    """The compiled code checks buffer sizes and that every run lies inside the plane; shapes and dtypes are
    checked here."""
    if a.shape != b.shape or a.ndim != 3 or offsets.shape != (a.shape[2],):
        raise ValueError(f"{where}: the arrays and the offset table disagree in shape")
    if a.dtype != a_dtype or b.dtype != b_dtype or offsets.dtype != np.int64:
        raise ValueError(f"{where}: expected {np.dtype(a_dtype)} -> {np.dtype(b_dtype)} with int64 offsets")
    if not (a.flags.c_contiguous and b.flags.c_contiguous and offsets.flags.c_contiguous):
        raise ValueError(f"{where}: the arrays must be contiguous")
    return a.shape[0] * a.shape[1], a.shape[2]


def gather_u8(x: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """x: (N, C, P) float32 in [0, 1]; out: (N, C, P) uint8 with out[n, c, offsets[p]] = round(255 · x[n, c, p])
    (values outside [0, 1] saturate)."""
    planes, p = _check(offsets, x, out, np.float32, np.uint8, "gather_u8")
    runs, r = _runs(offsets, "gather_u8")
    parallel(_native.gather_u8, planes, x, runs, out, planes, p, r, min_items=MIN_PLANES)


def scatter_f32(blocks: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """blocks: (N, C, P) uint8; out: (N, C, P) float32 with out[n, c, p] = blocks[n, c, offsets[p]] / 255."""
    planes, p = _check(offsets, blocks, out, np.uint8, np.float32, "scatter_f32")
    runs, r = _runs(offsets, "scatter_f32")
    parallel(_native.scatter_f32, planes, blocks, runs, out, planes, p, r, min_items=MIN_PLANES)
