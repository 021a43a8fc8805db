"""Structural similarity, batched in torch, equal to scikit-image's ``structural_similarity``.

For each image pair this computes exactly what
``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=R)`` computes (per-channel SSIM maps,
cropped by half a window, averaged over pixels and channels), in float64, for a whole batch at once:

- default: a ``win_size``×``win_size`` uniform window (7) and the sample covariance (N/(N-1) normalisation);
- ``gaussian_weights=True``: a Gaussian window of ``sigma`` 1.5 truncated at 3.5 sigma (11×11), as skimage does.

Both run in compiled kernels (``_ssim_kernel``), parallel over pairs: uint8 pairs with the uniform window take an
exact-integer kernel; float32 and float64 pairs (and uint8 with the Gaussian window) a separable filter of the five
local statistics in float64 arithmetic. Other dtypes are converted to float64 first. Only "valid" window positions
are computed: skimage filters the whole image and crops ``(win_size - 1) // 2`` pixels from each border, which leaves
exactly the positions where the window fits inside the image.

Float32 input is read as float32 and computed in float64, so the result is the float64 SSIM of those pixels;
scikit-image computes float32 input in float32, which is less exact (differences of about 1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from masquerade.errors import InputError

__all__ = ["ssim", "ssim_map", "ssim_loss", "as_batch"]


def _raw(x: torch.Tensor | np.ndarray, *, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise InputError(f"{name}: unsupported dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a tensor or array of images, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise InputError(f"{name}: expected N×C×H×W images, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{name}: unsupported dtype {x.dtype}")
    return x.detach().cpu()


def as_batch(x: torch.Tensor | np.ndarray, *, name: str) -> torch.Tensor:
    """N×C×H×W (or C×H×W) tensor/array -> float64 N×C×H×W tensor."""
    return _raw(x, name=name).to(torch.float64)


def _gaussian_1d(sigma: float, truncate: float) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def check_data_range(data_range: float, name: str) -> None:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise InputError(f"{name}: data_range must be a positive number, got {data_range!r}")


def check_units(
    a: torch.Tensor, b: torch.Tensor, data_range: float, name: str, *, floating: bool | None = None
) -> None:
    """Refuse a ``data_range`` that contradicts the pixels: values spanning more than it (uint8 images scored with
    ``data_range=1``), or float images in [0, 1] scored with ``data_range`` > 2 (as if they were 0..255)."""
    check_data_range(data_range, name)
    if not a.numel():
        return
    lo_a, hi_a = (float(v) for v in torch.aminmax(a))
    lo_b, hi_b = (float(v) for v in torch.aminmax(b))
    check_span(
        min(lo_a, lo_b),
        max(hi_a, hi_b),
        data_range,
        name,
        floating=a.is_floating_point() if floating is None else floating,
    )


def check_span(lo: float, hi: float, data_range: float, name: str, *, floating: bool) -> None:
    """The data-range check of :func:`check_units` from the pixels' minimum and maximum (NaN if any is NaN)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name}: the images contain NaN or infinite values")
    if hi - min(lo, 0.0) > data_range * (1 + 1e-6):
        raise InputError(
            f"{name}: pixel values span [{lo:.4g}, {hi:.4g}], wider than data_range={data_range}; "
            f"uint8 images take data_range=255"
        )
    if floating and data_range > 2 and 0 < hi <= 1 and lo >= -1:
        raise InputError(
            f"{name}: float images in [{lo:.3g}, {hi:.3g}] with data_range={data_range}: images in "
            f"[0, 1] take data_range=1"
        )


def ssim(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    data_range: float,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
    truncate: float = 3.5,
) -> torch.Tensor:
    """Mean SSIM of each pair of images in two N×C×H×W batches (float or uint8): a float64 tensor of N values.

    ``data_range`` is required (255 for uint8 pixels, 1 for [0, 1] floats): guessing it from the dtype is the
    mistake scikit-image deprecated.
    """
    a = _raw(x, name="ssim x")
    b = _raw(y, name="ssim y")
    if a.shape != b.shape:
        raise InputError(f"ssim: the two batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    uint8 = a.dtype == torch.uint8 and b.dtype == torch.uint8
    check_data_range(data_range, "ssim")  # the kernels find the pixels' span in their own pass: checked below
    if K1 < 0 or K2 < 0 or sigma <= 0:
        raise InputError("ssim: K1, K2 must be >= 0 and sigma > 0")
    if gaussian_weights:
        kernel = _gaussian_1d(sigma, truncate)
        win = kernel.numel() if win_size is None else win_size
        if win != kernel.numel():
            # skimage ignores win_size with Gaussian weights except for its cropping and N; keep it consistent.
            raise InputError(
                f"ssim: with gaussian_weights the window is {kernel.numel()}×{kernel.numel()} "
                f"(sigma={sigma}, truncate={truncate}); do not pass win_size={win_size}"
            )
    else:
        win = 7 if win_size is None else int(win_size)
        if win < 1 or win % 2 == 0:
            raise InputError(f"ssim: win_size must be odd and positive, got {win_size}")
        kernel = torch.full((win,), 1.0 / win, dtype=torch.float64)
    h, w = a.shape[2:]
    if a.shape[1] < 1:
        raise InputError("ssim: the images have no channels")
    if win > min(h, w):
        raise InputError(f"ssim: win_size {win} exceeds the image size {h}×{w}; pass a smaller odd win_size")
    n_points = win * win
    cov_norm = n_points / (n_points - 1) if use_sample_covariance and n_points > 1 else 1.0
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    out = np.empty(a.shape[0], dtype=np.float64)
    if not a.shape[0]:
        return torch.from_numpy(out)
    if uint8 and not gaussian_weights and win <= 255:  # larger windows: sums beyond 2^53, the float path
        from masquerade.metrics._ssim_kernel import ssim_box_u8

        xa, sa = _strided(a)
        xb, sb = _strided(b)
        lo, hi, _ = ssim_box_u8(
            xa, xb, tuple(a.shape), sa, sb, win, c1 * n_points**2, c2 * n_points**2, float(cov_norm), out
        )
        check_span(lo, hi, data_range, "ssim", floating=False)
        return torch.from_numpy(out)
    from masquerade.metrics._ssim_kernel import ssim_separable

    small = (torch.float32, torch.uint8, torch.int8)  # held exactly by float32: half the memory of float64
    dtype = torch.float32 if a.dtype in small and b.dtype in small else torch.float64
    xa, sa = _strided(a.to(dtype))
    xb, sb = _strided(b.to(dtype))
    lo, hi, nonfinite = ssim_separable(xa, xb, tuple(a.shape), sa, sb, kernel.numpy(), c1, c2, float(cov_norm), out)
    check_span(math.nan if nonfinite else lo, hi, data_range, "ssim", floating=a.is_floating_point())
    return torch.from_numpy(out)


def _strided(t: torch.Tensor) -> tuple[np.ndarray, tuple[int, ...]]:
    """A contiguous buffer holding the N×C×H×W tensor ``t`` and t's element strides into it: no copy when ``t`` is
    contiguous, or a permuted view of contiguous N×H×W×C memory (what ``images.permute(0, 3, 1, 2)`` gives)."""
    if not t.is_contiguous():
        nhwc = t.permute(0, 2, 3, 1)
        if nhwc.is_contiguous():
            return nhwc.numpy(), tuple(t.stride())
        t = t.contiguous()
    return t.numpy(), tuple(t.stride())


def ssim_map(a: torch.Tensor, b: torch.Tensor, *, data_range: float, win_size: int = 7) -> torch.Tensor:
    """The SSIM of every valid ``win_size``×``win_size`` window (N×C×(H-w+1)×(W-w+1)) with :func:`ssim`'s uniform
    window and sample covariance, in differentiable torch ops: what :func:`ssim_loss` averages, and what a score
    over part of an image (some windows only) selects from."""
    import torch.nn.functional as F

    check_data_range(data_range, "ssim_map")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pool = lambda t: F.avg_pool2d(t, win_size, 1)  # noqa: E731
    ua, ub = pool(a), pool(b)
    cov = win_size**2 / (win_size**2 - 1)
    va, vb, vab = cov * (pool(a * a) - ua * ua), cov * (pool(b * b) - ub * ub), cov * (pool(a * b) - ua * ub)
    return ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))


def ssim_loss(a: torch.Tensor, b: torch.Tensor, *, data_range: float) -> torch.Tensor:
    """1 - mean SSIM with :func:`ssim`'s defaults (7×7 uniform window, sample covariance, valid positions), in
    differentiable torch ops, for training networks on the metric they are scored with."""
    check_data_range(data_range, "ssim_loss")
    return 1 - ssim_map(a, b, data_range=data_range).mean()
