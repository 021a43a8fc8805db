"""Metrics: SSIM (equal to scikit-image's), PSNR, RMSE, MSE -- batched, each with an explicit data_range;
model-based recognition (MR) of reconstructions. Privacy scores (the success threshold, best-match scoring) are in
:mod:`masquerade.metrics.privacy`."""

from masquerade.metrics.basic import mse, psnr, rmse
from masquerade.metrics.recognition import recognition_accuracy
from masquerade.metrics.ssim import ssim

__all__ = ["ssim", "psnr", "rmse", "mse", "recognition_accuracy"]
