"""Metrics: SSIM (equal to scikit-image's), PSNR, RMSE, MSE -- batched, each with an explicit data_range."""

from .basic import mse, psnr, rmse
from .ssim import ssim

__all__ = ["ssim", "psnr", "rmse", "mse"]
