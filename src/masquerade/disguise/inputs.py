"""What every attack on DisguisedNets checks of its inputs, and which schemes it targets."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from masquerade.errors import InputError

__all__ = ["images_array", "auxiliary_array", "known_pairs_arrays", "check_block", "dataset_disguise"]


def images_array(x: torch.Tensor | np.ndarray, where: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 4:
        raise InputError(f"{where}: expected N×C×H×W images, got shape {a.shape}")
    return a.astype(np.float64)


def auxiliary_array(auxiliary: Any, z: np.ndarray, where: str) -> np.ndarray:
    """Auxiliary images (an ImageSet, tensor or array) as N×C×H×W float64, refused unless shaped like ``z``'s."""
    aux = images_array(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, where)
    if aux.shape[1:] != z.shape[1:]:
        raise InputError(f"{where}: auxiliary images are {aux.shape[1:]}, the encodings {z.shape[1:]}")
    return aux


def known_pairs_arrays(known_pairs: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        plain, cipher = known_pairs
    except (TypeError, ValueError):
        raise InputError(f"{where}: known_pairs is a (plain images, disguised images) tuple") from None
    p, c = images_array(plain, where), images_array(cipher, where)
    if p.shape != c.shape:
        raise InputError(f"{where}: plain and disguised pairs differ in shape: {p.shape} vs {c.shape}")
    return p, c


def check_block(block: int, where: str) -> None:
    if not isinstance(block, int) or block < 1:
        raise InputError(f"{where}: block must be a positive integer, got {block!r}")


def dataset_disguise(scheme: Any) -> Any:
    """The settings of a DisguisedNets scheme under one dataset key (what these attacks break), else None."""
    if getattr(scheme, "name", None) != "disguise" or scheme.settings.key_scope != "dataset":
        return None
    return scheme.settings
