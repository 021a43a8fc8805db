"""JPEG, twice: the real codec (Pillow, for evaluation) and a differentiable approximation (for optimisation).

The approximation follows baseline JPEG as libjpeg encodes it at a given quality: RGB -> YCbCr (JFIF), 4:2:0
chroma subsampling (2×2 means), level shift, 8×8 DCT-II, quantisation by the standard tables scaled for the quality
(libjpeg's rule), then the way back (bilinear chroma upsampling: libjpeg's "fancy" triangle filter). Rounding
is replaced by round(x) + (x - round(x))³ (Shin & Song, 2017), which keeps the rounded value's neighbourhood and a
usable gradient. Images whose sides are not multiples of 16 are padded by edge replication and cropped back.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from masquerade.errors import InputError

__all__ = ["jpeg_real", "jpeg_approx", "quant_tables"]

_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    float,
).reshape(8, 8)
_CHROMA = np.array(
    [
        17,
        18,
        24,
        47,
        99,
        99,
        99,
        99,
        18,
        21,
        26,
        66,
        99,
        99,
        99,
        99,
        24,
        26,
        56,
        99,
        99,
        99,
        99,
        99,
        47,
        66,
        99,
        99,
        99,
        99,
        99,
        99,
    ]
    + [99] * 32,
    float,
).reshape(8, 8)  # ITU-T T.81 Annex K tables


def quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's luminance and chrominance tables for ``quality`` (1-100), baseline (entries 1-255)."""
    if not 1 <= quality <= 100:
        raise InputError(f"JPEG quality must be 1-100, got {quality}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip(np.floor((t * scale + 50) / 100), 1, 255) for t in (_LUMA, _CHROMA))  # type: ignore


def jpeg_real(images: torch.Tensor, quality: int = 90) -> torch.Tensor:
    """Compress and decompress each image with Pillow's libjpeg (4:2:0, the codec's default): float N×3×H×W in
    [0, 1] in and out, the input quantised to 8 bits first as a saved photo would be."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError("jpeg_real: expected N×3×H×W colour images in [0, 1]")
    out = []
    for im in (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(images.dtype) / 255


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m.to(dtype=dtype, device=device)  # orthonormal DCT-II: X = M x Mᵀ


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    r = torch.round(x)
    return r + (x - r) ** 3


def _code(plane: torch.Tensor, table: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Quantise and dequantise one plane (N×H×W, sides multiples of 8) block by block."""
    n, h, w = plane.shape
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # N × bh × bw × 8 × 8
    coef = m @ blocks @ m.T
    coef = _soft_round(coef / table) * table
    back = m.T @ coef @ m
    return back.transpose(2, 3).reshape(n, h, w)


def jpeg_approx(images: torch.Tensor, quality: float | torch.Tensor = 90) -> torch.Tensor:
    """Differentiable JPEG at ``quality`` (a number, or one per image) on float N×3×H×W in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError("jpeg_approx: expected N×3×H×W colour images in [0, 1]")
    n, _, h, w = images.shape
    q = torch.as_tensor(quality, dtype=torch.float64).reshape(-1)
    if q.numel() not in (1, n):
        raise InputError("jpeg_approx: give one quality, or one per image")
    tabs = [quant_tables(int(round(float(v)))) for v in (q if q.numel() == n else q.repeat(n))]
    luma = torch.tensor(np.stack([t[0] for t in tabs]), dtype=images.dtype, device=images.device)[:, None, None]
    chroma = torch.tensor(np.stack([t[1] for t in tabs]), dtype=images.dtype, device=images.device)[:, None, None]
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(images * 255, (0, pw, 0, ph), mode="replicate")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    m = _dct_matrix(images.dtype, images.device)
    y = _code(y - 128, luma, m) + 128
    sub = [F.avg_pool2d(c[:, None], 2)[:, 0] for c in (cb, cr)]
    cb, cr = (
        F.interpolate(_code(c - 128, chroma, m)[:, None] + 128, scale_factor=2, mode="bilinear", align_corners=False)[
            :, 0
        ]
        for c in sub
    )
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    out = torch.stack([r, g, b], 1)[:, :, :h, :w] / 255
    return out.clamp(0, 1)
