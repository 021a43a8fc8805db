"""Helpers shared by the schemes: input checks at the API boundary."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..keys import Key

__all__ = ["check_images", "check_key", "keygen_for", "encode_with"]


def check_images(x: object, *, where: str, range01: bool = True) -> torch.Tensor:
    """Validate a float32 N×C×H×W batch (in [0, 1] when ``range01``) and return it."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{where}: expected a torch.Tensor of images (N×C×H×W float32 in [0, 1]), "
                         f"got {type(x).__name__}; ImageSet.to_tensor() gives one")
    if x.ndim != 4:
        raise InputError(f"{where}: expected images as N×C×H×W, got a tensor of shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise InputError(f"{where}: expected float32 pixels, got {x.dtype}")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN propagates into lo/hi
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{where}: images contain NaN or infinite values")
        if range01 and (lo < 0 or hi > 1):
            raise InputError(f"{where}: pixels must lie in [0, 1], found [{lo:.3g}, {hi:.3g}]")
    return x


def check_key(key: object, cls: type[Key], *, where: str, n: int | None = None) -> None:
    """Refuse a key of another scheme, or one drawn for a different number of images."""
    if not isinstance(key, cls):
        other = getattr(key, "scheme", type(key).__name__)
        raise InputError(f"{where}: expected a {cls.scheme!r} key, got one for {other!r}")
    key_n = getattr(key, "n", None)
    if n is not None and key_n is not None and key_n != n:
        raise InputError(f"{where}: the key was drawn for {key_n} images, the batch has {n}")


def keygen_for(scheme: Any, n: int, rng: Any, shape: tuple[int, int, int], pool_size: int = 0,
               base: Key | None = None) -> Key:
    """``scheme.keygen`` with the image shape, public pool size and base key passed to schemes that take them."""
    params = inspect.signature(scheme.keygen).parameters
    kwargs: dict[str, Any] = {}
    if base is not None:
        if "base" not in params:
            raise InputError(f"{scheme.name}: keys of this scheme cannot be extended to new images")
        kwargs["base"] = base
    if "shape" in params:
        kwargs["shape"] = shape
    if "pool_size" in params:
        kwargs["pool_size"] = pool_size
    return scheme.keygen(n, rng, **kwargs)


def encode_with(scheme: Any, x: torch.Tensor, key: Key, public: torch.Tensor | None = None,
                rng: Any = None) -> torch.Tensor:
    """``scheme.encode`` with the public pool (schemes that mix one in) and ``rng`` (schemes that add noise)."""
    params = inspect.signature(scheme.encode).parameters
    kwargs: dict[str, Any] = {}
    if "public" in params:
        kwargs["public"] = public
    if "rng" in params:
        kwargs["rng"] = rng
    return scheme.encode(x, key, **kwargs)
