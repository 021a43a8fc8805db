"""Fused InstaHide encoding (compiled, ``masquerade._native``): mix k images with their coefficients and flip signs
in one pass.

For each encoding i and channel c:  out = sign_i,c * (sum_j lam_ij * (scale_tj,c * src_j[partner_ij, c] + shift_tj,c))
where t_j says whether slot j draws from the private set or the public pool (each with its own pixel affine map).
The sign mask is bit-packed (numpy.packbits order over the flattened C×H×W pixels; a set bit flips the sign).
Arithmetic is float32 in a fixed order: the shifts first, then the slots one by one.
"""

from __future__ import annotations

import numpy as np

from masquerade import _native
from masquerade._threads import parallel


def mix_encode(
    priv: np.ndarray,
    pub: np.ndarray,
    partners: np.ndarray,
    slot_public: np.ndarray,
    lam: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    mask: np.ndarray,
    flip: bool,
    out: np.ndarray,
) -> None:
    """Shapes and dtypes are checked here; the compiled code checks buffer sizes and every partner index (a bad
    index would read outside the arrays)."""
    n, n_ch, n_px = out.shape
    k = partners.shape[1] if partners.ndim == 2 else -1
    if partners.shape != (n, k) or lam.shape != (n, k) or slot_public.shape != (k,):
        raise ValueError("mix_encode: partners, lam and slot_public disagree with the output's shape")
    if (
        priv.shape[1:] != (n_ch, n_px)
        or pub.shape[1:] != (n_ch, n_px)
        or scale.shape != (2, n_ch)
        or shift.shape != (2, n_ch)
    ):
        raise ValueError("mix_encode: images or the pixel affine maps disagree with the output's shape")
    if flip and (mask.ndim != 2 or mask.shape[0] != n or mask.shape[1] * 8 < n_ch * n_px):
        raise ValueError("mix_encode: the sign mask is too small for the images")
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("mix_encode: the output must be a contiguous float32 array")
    f32 = [np.ascontiguousarray(a, dtype=np.float32) for a in (priv, pub, lam, scale, shift)]
    idx = np.ascontiguousarray(partners, dtype=np.int64)
    slots = np.ascontiguousarray(slot_public, dtype=np.uint8)
    bits = np.ascontiguousarray(mask, dtype=np.uint8)
    parallel(
        _native.mix_encode,
        n,
        f32[0],
        f32[1],
        idx,
        slots,
        f32[2],
        f32[3],
        f32[4],
        bits,
        bool(flip),
        out,
        len(priv),
        len(pub),
        n,
        k,
        n_ch,
        n_px,
        bits.shape[1] if bits.ndim == 2 else 0,
        min_items=256,
    )
