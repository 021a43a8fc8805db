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
    arch: str  # these two are set on models read from a file (masquerade.models.load_model)
    info: dict[str, Any]

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        *,
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).clone())
        # the H×W the model was trained on, where known: other sizes run through pooling layers but mean nothing
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mean.shape[1]
        if x.ndim != 4 or x.shape[1] != c:
            from masquerade.errors import InputError

            raise InputError(f"the model takes N×{c}×H×W images, got {tuple(x.shape)}")
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            from masquerade.errors import InputError

            h, w = self.image_size
            raise InputError(
                f"the model was trained on {h}×{w} images, got {x.shape[-2]}×{x.shape[-1]}: use "
                f"images of its size (--size {h}) or a model trained on yours"
            )
        return self.model((x - self.mean) / self.std)

    def check_takes(self, shape: Sequence[int], *, what: str = "the model") -> None:
        """Refuse, in one line, C×H×W images this model cannot take (another channel count or size than it was
        trained on, a head sized for other inputs, pooling below 1×1): one forward pass of a zero image."""
        from masquerade.errors import InputError
        from masquerade.models.resnet import refusal

        c, h, w = (int(v) for v in shape)
        try:
            why = refusal(self, shape)
        except InputError as exc:  # this wrapper's own checks: channels, the size it was trained on
            raise InputError(f"{what}: {exc}") from None
        if why is not None:
            raise InputError(f"{what}: the model does not take {c}×{h}×{w} images ({why})")
