"""Fused InstaHide encoding (numba): mix k images with their coefficients and flip signs in one pass.

For each encoding i and channel c:  out = sign_i,c * (sum_j lam_ij * (scale_tj,c * src_j[partner_ij, c] + shift_tj,c))
where t_j says whether slot j draws from the private set or the public pool (each with its own pixel affine map).
The sign mask is bit-packed (numpy.packbits order over the flattened C×H×W pixels; a set bit flips the sign).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def mix_encode(priv: np.ndarray, pub: np.ndarray, partners: np.ndarray, slot_public: np.ndarray,
               lam: np.ndarray, scale: np.ndarray, shift: np.ndarray, mask: np.ndarray, flip: bool,
               out: np.ndarray) -> None:  # pragma: no cover - compiled
    n, n_ch, n_px = out.shape
    k = partners.shape[1]
    # sign lookup: byte value -> the 8 signs it encodes (most significant bit first, as numpy.packbits)
    lut = np.empty((256, 8), dtype=np.float32)
    for v in range(256):
        for t in range(8):
            lut[v, t] = np.float32(-1.0) if (v >> (7 - t)) & 1 else np.float32(1.0)
    aligned = n_px % 8 == 0
    for i in prange(n):
        for c in range(n_ch):
            row = out[i, c]
            off = np.float32(0.0)
            for j in range(k):
                t = 1 if slot_public[j] else 0
                off += lam[i, j] * shift[t, c]
            for p in range(n_px):
                row[p] = off
            for j in range(k):
                t = 1 if slot_public[j] else 0
                w = lam[i, j] * scale[t, c]
                if slot_public[j]:
                    src = pub[partners[i, j], c]
                else:
                    src = priv[partners[i, j], c]
                for p in range(n_px):
                    row[p] += w * src[p]
            if flip and aligned:
                b0 = (c * n_px) >> 3
                for b in range(n_px >> 3):
                    signs = lut[mask[i, b0 + b]]
                    for t in range(8):
                        row[8 * b + t] *= signs[t]
            elif flip:
                base = c * n_px
                for p in range(n_px):
                    q = base + p
                    if (mask[i, q >> 3] >> (7 - (q & 7))) & 1:
                        row[p] = -row[p]
