"""SSIM kernels (compiled, ``masquerade._native``), parallel over image pairs.

``ssim_box_u8``: uint8 pixels and the uniform window. Every window sum (of x, y, x², y², xy) is an integer, kept in
int64; the SSIM numerator and denominator are formed from exact integers, so the only rounding is the final float64
arithmetic. One pass over each plane: vertical running sums, then horizontal running sums and the formula.

``ssim_separable``: float32 or float64 pixels and any separable window (uniform or Gaussian weights): the five local
statistics are filtered along columns, then rows, at the valid positions, in float64.
"""

from __future__ import annotations

import numpy as np

from masquerade import _native
from masquerade._threads import parallel

MIN_PAIRS = 64  # pairs per thread


def ssim_box_u8(
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    x_strides: tuple[int, ...],
    y_strides: tuple[int, ...],
    win: int,
    c1n: float,
    c2n: float,
    cov: float,
    out: np.ndarray,
) -> tuple[float, float, int]:
    """Mean SSIM of each uint8 pair into ``out``; ``c1n``, ``c2n`` are C1, C2 times (win²)². ``x``, ``y``: contiguous
    buffers holding the N×C×H×W images at the given element strides. Returns the smallest and largest pixel."""
    n = shape[0]
    if x.dtype != np.uint8 or y.dtype != np.uint8 or out.shape != (n,) or out.dtype != np.float64:
        raise ValueError("ssim_box_u8: two uint8 buffers and a float64 output of N")
    if not (x.flags.c_contiguous and y.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("ssim_box_u8: the buffers must be contiguous")
    span = np.empty((n, 3))
    parallel(
        _native.ssim_box_u8,
        n,
        x,
        y,
        out,
        span,
        *shape,
        *x_strides,
        *y_strides,
        int(win),
        float(c1n),
        float(c2n),
        float(cov),
        min_items=MIN_PAIRS,
    )
    if not n:
        return 0.0, 0.0, 0
    return float(span[:, 0].min()), float(span[:, 1].max()), 0


def ssim_separable(
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    x_strides: tuple[int, ...],
    y_strides: tuple[int, ...],
    weights: np.ndarray,
    c1: float,
    c2: float,
    cov: float,
    out: np.ndarray,
) -> tuple[float, float, int]:
    """Mean SSIM of each float32 or float64 pair into ``out``, with the separable window ``weights`` (1-D); returns
    the smallest and largest pixel and the number of non-finite pixels, found in the same pass.

    ``x`` and ``y`` are contiguous buffers holding N×C×H×W images (``shape``) at the given element strides (an NHWC
    array read as NCHW needs no copy); the compiled code checks that the strides stay inside the buffers."""
    n = shape[0]
    if x.dtype != y.dtype or x.dtype not in (np.float32, np.float64) or out.shape != (n,) or out.dtype != np.float64:
        raise ValueError("ssim_separable: two float32 or float64 buffers and a float64 output of N")
    if not (x.flags.c_contiguous and y.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("ssim_separable: the buffers must be contiguous")
    if len(x_strides) != 4 or len(y_strides) != 4:
        raise ValueError("ssim_separable: four strides per batch")
    wt = np.ascontiguousarray(weights, dtype=np.float64)
    span = np.empty((n, 3))
    parallel(
        _native.ssim_sep,
        n,
        x,
        y,
        x.dtype == np.float64,
        wt,
        out,
        span,
        *shape,
        *x_strides,
        *y_strides,
        float(c1),
        float(c2),
        float(cov),
        min_items=MIN_PAIRS,
    )
    if not n:
        return 0.0, 0.0, 0
    return float(span[:, 0].min()), float(span[:, 1].max()), int(span[:, 2].sum())
