"""A fused SSIM kernel for uint8 images and the uniform window (numba).

For uint8 pixels every window sum (of x, y, x², y², xy) is an integer, so this kernel keeps them in int64 and forms
the SSIM numerator and denominator from exact integers; the only rounding is the final float64 arithmetic. One pass
over each image plane: vertical running sums (vectorisable across columns), then horizontal running sums and the
SSIM formula. Parallel over images.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def ssim_box_u8(x: np.ndarray, y: np.ndarray, win: int, c1n: float, c2n: float, cov: float,
                out: np.ndarray) -> None:  # pragma: no cover - compiled
    n_img, n_ch, h, w = x.shape
    ho = h - win + 1
    wo = w - win + 1
    npts = win * win
    for n in prange(n_img):
        col = np.zeros((5, w), dtype=np.int64)
        total = 0.0
        for c in range(n_ch):
            col[:, :] = 0
            for i in range(win - 1):
                for j in range(w):
                    a = np.int64(x[n, c, i, j])
                    b = np.int64(y[n, c, i, j])
                    col[0, j] += a
                    col[1, j] += b
                    col[2, j] += a * a
                    col[3, j] += b * b
                    col[4, j] += a * b
            for i in range(ho):
                r = i + win - 1
                for j in range(w):
                    a = np.int64(x[n, c, r, j])
                    b = np.int64(y[n, c, r, j])
                    col[0, j] += a
                    col[1, j] += b
                    col[2, j] += a * a
                    col[3, j] += b * b
                    col[4, j] += a * b
                sx = np.int64(0)
                sy = np.int64(0)
                sxx = np.int64(0)
                syy = np.int64(0)
                sxy = np.int64(0)
                for j in range(win - 1):
                    sx += col[0, j]
                    sy += col[1, j]
                    sxx += col[2, j]
                    syy += col[3, j]
                    sxy += col[4, j]
                for j in range(wo):
                    k = j + win - 1
                    sx += col[0, k]
                    sy += col[1, k]
                    sxx += col[2, k]
                    syy += col[3, k]
                    sxy += col[4, k]
                    sxsy = sx * sy
                    a1 = 2.0 * sxsy + c1n
                    b1 = float(sx * sx + sy * sy) + c1n
                    a2 = 2.0 * cov * float(npts * sxy - sxsy) + c2n
                    b2 = cov * float(npts * (sxx + syy) - sx * sx - sy * sy) + c2n
                    total += (a1 * a2) / (b1 * b2)
                    sx -= col[0, j]
                    sy -= col[1, j]
                    sxx -= col[2, j]
                    syy -= col[3, j]
                    sxy -= col[4, j]
                for j in range(w):
                    a = np.int64(x[n, c, i, j])
                    b = np.int64(y[n, c, i, j])
                    col[0, j] -= a
                    col[1, j] -= b
                    col[2, j] -= a * a
                    col[3, j] -= b * b
                    col[4, j] -= a * b
        out[n] = total / (n_ch * ho * wo)
