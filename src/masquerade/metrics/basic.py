"""Pixel metrics: MSE, RMSE and PSNR per image, each with an explicit ``data_range``."""

from __future__ import annotations

import math

import numpy as np
import torch

from masquerade.errors import InputError
from masquerade.metrics.ssim import as_batch, check_units

__all__ = ["mse", "rmse", "psnr"]


def _pair(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, name: str, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_batch(x, name=f"{name} x"), as_batch(y, name=f"{name} y")
    if a.shape != b.shape:
        raise InputError(f"{name}: the two batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    check_units(a, b, data_range, name, floating=_floating(x) and _floating(y))
    return a, b


def _floating(x: torch.Tensor | np.ndarray) -> bool:
    return bool(x.is_floating_point()) if isinstance(x, torch.Tensor) else np.asarray(x).dtype.kind == "f"


def _check_range(data_range: float, name: str) -> None:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise InputError(f"{name}: data_range must be a positive number, got {data_range!r}")


def mse(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, data_range: float) -> torch.Tensor:
    """Mean squared error per image on the [0, 1] scale (pixel differences divided by ``data_range``)."""
    _check_range(data_range, "mse")
    a, b = _pair(x, y, "mse", data_range)
    return ((a - b) / data_range).pow(2).mean(dim=(1, 2, 3))


def rmse(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, data_range: float) -> torch.Tensor:
    """Root mean squared error per image on the [0, 1] scale (0 = equal, 1 = opposite extremes)."""
    return mse(x, y, data_range=data_range).sqrt()


def psnr(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, as ``skimage.metrics.peak_signal_noise_ratio`` (inf if equal)."""
    _check_range(data_range, "psnr")
    a, b = _pair(x, y, "psnr", data_range)
    err = (a - b).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / err)
