"""Model files: weights in ``.safetensors`` (no pickle: loading a model never runs code) with the architecture,
class count and input standardisation in its metadata, so a file alone rebuilds a model that takes [0, 1] images."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from masquerade.errors import InputError
from masquerade.fileio import atomic_path, parse_json
from masquerade.models.normalized import Normalized
from masquerade.models.resnet import create_model

__all__ = ["save_model", "load_model"]


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    *,
    arch: str,
    num_classes: int,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    in_channels: int = 3,
    info: dict | None = None,
    image_size: Sequence[int] | None = None,
) -> Path:
    """Write ``model`` (an ``arch`` network that takes standardised inputs) with its standardisation and the image
    size it was trained on (``image_size``, else a :class:`Normalized` model's own), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: model files are written as .safetensors")
    inner = model.model if isinstance(model, Normalized) else model
    state = {k: v.detach().contiguous().clone() for k, v in inner.state_dict().items()}
    meta = {
        "arch": arch,
        "num_classes": str(int(num_classes)),
        "in_channels": str(int(in_channels)),
        "mean": json.dumps([float(v) for v in torch.as_tensor(mean).flatten()]),
        "std": json.dumps([float(v) for v in torch.as_tensor(std).flatten()]),
        "info": json.dumps(info or {}),
    }
    size = image_size if image_size is not None else getattr(model, "image_size", None)
    if size is not None:
        meta["image_size"] = json.dumps([int(v) for v in size])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file; an unreadable one is ``InputError("PATH: not a WHAT (...)")``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a {what} ({e})") from None
    return meta, state


def load_model(path: str | os.PathLike[str]) -> Normalized:
    """Rebuild the model of a file written by :func:`save_model`, in eval mode, taking [0, 1] images."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    meta, state = read_safetensors(path, "masquerade model file")
    if "arch" not in meta:
        raise InputError(f"{path}: not a masquerade model file (no architecture in its metadata)")
    try:
        num_classes, in_channels = int(meta["num_classes"]), int(meta["in_channels"])
        mean = parse_json(meta["mean"], where=f"{path}: model metadata 'mean'")
        std = parse_json(meta["std"], where=f"{path}: model metadata 'std'")
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: damaged model metadata ({type(exc).__name__}: {exc})") from None
    if not (1 <= num_classes <= 100_000 and 1 <= in_channels <= 64):
        raise InputError(
            f"{path}: model metadata asks for {num_classes} classes and {in_channels} input channels; "
            f"refused (at most 100,000 and 64)"
        )

    def ok(v: object) -> bool:
        return (
            isinstance(v, list)
            and len(v) == in_channels
            and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        )

    if not (ok(mean) and ok(std) and min(std) > 0):
        raise InputError(f"{path}: damaged model metadata (mean/std: {in_channels} finite numbers each, std > 0)")
    model = create_model(meta["arch"], num_classes=num_classes, in_channels=in_channels)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not fit a {meta['arch']} ({str(e).splitlines()[0]})") from None
    size = parse_json(meta.get("image_size", "null"), where=f"{path}: model metadata 'image_size'")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 1 <= v <= 16384 for v in size)
    ):
        raise InputError(f"{path}: damaged model metadata (image_size: two sizes from 1 to 16384)")
    out = Normalized(model, mean, std, image_size=size).eval()
    out.arch = meta["arch"]
    out.info = parse_json(meta.get("info", "{}"), where=f"{path}: model metadata 'info'", expect=dict)
    return out
