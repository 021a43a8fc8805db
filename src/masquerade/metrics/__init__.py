"""Metrics: SSIM (equal to scikit-image's), PSNR, RMSE, MSE -- batched, each with an explicit data_range;
model-based recognition (MR) of reconstructions; privacy scores (:mod:`masquerade.metrics.privacy`: the success
threshold and best-match scoring).

Names load on first use, so that the success threshold can be read without importing torch (``--help`` stays
light)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from masquerade.metrics.basic import mse, psnr, rmse
    from masquerade.metrics.recognition import recognition_accuracy
    from masquerade.metrics.ssim import ssim

__all__ = ["ssim", "psnr", "rmse", "mse", "recognition_accuracy"]

_HOME = {"mse": "basic", "psnr": "basic", "rmse": "basic", "recognition_accuracy": "recognition", "ssim": "ssim"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"masquerade.metrics.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'masquerade.metrics' has no attribute {name!r}")
