"""Model-based recognition (MR): how often an independent classifier, trained on clean data, still recognises the
class of a reconstructed image. It complements PSNR/SSIM, whose differences of 1-2 dB say little about whether a
person (or a model) can tell what a reconstruction shows."""

from __future__ import annotations

import torch

from masquerade.errors import InputError

__all__ = ["recognition_accuracy"]


@torch.no_grad()
def recognition_accuracy(
    classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch: int = 500
) -> float:
    """Top-1 accuracy of ``classifier`` (a model that takes [0, 1] images) on ``images`` against ``labels``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputError("recognition_accuracy: images must be an N×C×H×W tensor in [0, 1]")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if len(labels) != len(images):
        raise InputError(f"recognition_accuracy: {len(images)} images but {len(labels)} labels")
    if not len(images):
        raise InputError("recognition_accuracy: no images")
    classifier.eval()
    pred = torch.cat([classifier(images[i : i + batch].float()).argmax(1) for i in range(0, len(images), batch)])
    return float((pred == labels).float().mean())
