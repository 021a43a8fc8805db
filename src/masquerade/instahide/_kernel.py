"""Fused InstaHide encoding (numba): mix k images with their coefficients and flip signs in one pass.

For each encoding i and channel c:  out = sign_i,c * (sum_j lam_ij * (scale_tj,c * src_j[partner_ij, c] + shift_tj,c))
where t_j says whether slot j draws from the private set or the public pool (each with its own pixel affine map).
The sign mask is bit-packed (numpy.packbits order over the flattened C×H×W pixels; a set bit flips the sign).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def _mix_encode(priv: np.ndarray, pub: np.ndarray, partners: np.ndarray, slot_public: np.ndarray,
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


def mix_encode(priv: np.ndarray, pub: np.ndarray, partners: np.ndarray, slot_public: np.ndarray,
               lam: np.ndarray, scale: np.ndarray, shift: np.ndarray, mask: np.ndarray, flip: bool,
               out: np.ndarray) -> None:
    """The compiled kernel behind bounds checks: every index it follows is checked here first (compiled code does
    not check, and a bad index would read or write outside the arrays)."""
    n, n_ch, n_px = out.shape
    k = partners.shape[1] if partners.ndim == 2 else -1
    if partners.shape != (n, k) or lam.shape != (n, k) or slot_public.shape != (k,):
        raise ValueError("mix_encode: partners, lam and slot_public disagree with the output's shape")
    if priv.shape[1:] != (n_ch, n_px) or pub.shape[1:] != (n_ch, n_px) or scale.shape != (2, n_ch) \
            or shift.shape != (2, n_ch):
        raise ValueError("mix_encode: images or the pixel affine maps disagree with the output's shape")
    if k and partners.size:
        pub_slots = slot_public.astype(bool)
        if partners.min() < 0 or (partners[:, ~pub_slots] >= len(priv)).any() \
                or (partners[:, pub_slots] >= len(pub)).any():
            raise ValueError("mix_encode: a partner index lies outside the private set or the public pool")
    if flip and (mask.shape[0] != n or mask.shape[1] * 8 < n_ch * n_px):
        raise ValueError("mix_encode: the sign mask is too small for the images")
    _mix_encode(priv, pub, partners, slot_public, lam, scale, shift, mask, flip, out)
