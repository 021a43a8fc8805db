"""A model that takes [0, 1] images and standardises them itself, so attacks and metrics see pixel space."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """``model((x - mean) / std)``; mean and std are buffers (saved with the weights, never trained)."""

    mean: torch.Tensor
    std: torch.Tensor
    arch: str               # these two are set on models read from a file (masquerade.models.load_model)
    info: dict[str, Any]

    def __init__(self, model: nn.Module, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
                 ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)
