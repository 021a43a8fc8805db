"""Blind image-quality models behind one interface: ``score(images)`` -> N scores on 0-100 (higher is better),
differentiable, with a ``threshold`` (a photo scoring above it counts as good quality; 50 in the MediaEval task).

- :class:`BrisqueQuality` -- 100 - BRISQUE, in torch (the default white-box target; runs offline);
- :class:`TorchScriptQuality` -- any TorchScript (or torch.export ``.pt2``) model, with the input scale it expects
  and the output range that is mapped onto 0-100.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from masquerade.errors import InputError, error_line

__all__ = ["QualityModel", "BrisqueQuality", "TorchScriptQuality"]


class QualityModel(nn.Module):
    """Base: subclasses implement ``score``; images are float N×C×H×W in [0, 1]."""

    name = "quality"

    def __init__(self, threshold: float = 50.0) -> None:
        super().__init__()
        if not 0 <= threshold <= 100:
            raise InputError(f"{self.name}: threshold must lie in [0, 100], got {threshold}")
        self.threshold = float(threshold)

    def score(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(images)

    def is_good(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.score(images) > self.threshold


def _check(images: object, where: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"{where}: expected images as a float N×C×H×W tensor (C = 1 or 3) in [0, 1]")
    if not images.is_floating_point():
        raise InputError(f"{where}: expected float pixels in [0, 1], got {images.dtype}")
    return images


class BrisqueQuality(QualityModel):
    """100 - BRISQUE (BRISQUE: lower is better). Photos of good quality score well above 50."""

    name = "brisque"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        from masquerade.quality.brisque import brisque_score

        return 100.0 - brisque_score(_check(images, self.name))


class TorchScriptQuality(QualityModel):
    """A user's TorchScript model. ``input_range``: the pixel range it expects ((0, 1) or (-1, 1), as KonCept512);
    ``output_range``: its score range, mapped linearly onto 0-100 (KonIQ MOS is already 0-100)."""

    name = "torchscript"

    def __init__(
        self,
        path: str | Path,
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        output_range: tuple[float, float] = (0.0, 100.0),
        threshold: float = 50.0,
    ) -> None:
        super().__init__(threshold)
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such TorchScript model file")
        import logging
        import warnings

        quiet = logging.getLogger("torch.export")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # its own log line would repeat the error below
        try:
            if p.suffix == ".pt2":  # a torch.export program (TorchScript's successor)
                self.model = torch.export.load(str(p)).module()
            else:
                with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; users still
                    warnings.simplefilter("ignore", DeprecationWarning)  # ship their models that way
                    self.model = torch.jit.load(str(p), map_location="cpu")
                self.model.eval()
        except Exception as exc:  # noqa: BLE001 - a damaged archive fails in zipfile, pickle, torch or elsewhere
            raise InputError(f"{p}: not a TorchScript (.pt) or torch.export (.pt2) model ({error_line(exc)})") from None
        finally:
            quiet.setLevel(level)
        self.path = p
        lo, hi = output_range
        if hi <= lo or input_range[1] <= input_range[0]:
            raise InputError("TorchScriptQuality: ranges are (low, high) with low < high")
        self.input_range, self.output_range = input_range, output_range

    def score(self, images: torch.Tensor) -> torch.Tensor:
        x = _check(images, self.name)
        a, b = self.input_range
        try:
            out = self.model(x * (b - a) + a)
        except Exception as exc:  # noqa: BLE001 - the user's program may fail in any way on these photos
            raise InputError(
                f"{self.path}: the model fails on photos of {tuple(x.shape[1:])} ({error_line(exc)})"
            ) from None
        if not isinstance(out, torch.Tensor) or out.numel() < len(x) or out.numel() % len(x):
            raise InputError(
                f"{self.path}: the model must return one score per photo (a tensor), got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
            )
        out = out.reshape(len(x), -1)[:, 0]
        lo, hi = self.output_range
        return (out - lo) * (100.0 / (hi - lo))
