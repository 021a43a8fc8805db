"""Where models and optimisations run: ``--device auto|cpu|cuda[:N]|mps`` and ``device=`` in the workflows.

A workflow resolves its device once (:func:`resolve_device`) and moves its inputs there in one place; the algorithms
then follow their inputs' device (new tensors are made ``like`` the ones they were given), and results come back to
the CPU before they are written. Compiled kernels (SSIM, the InstaHide, DisguisedNets and ShuffleBits kernels) and
NumPy stages stay on the CPU whatever the device. ``auto`` picks CUDA, then Apple's MPS, then the CPU; asking for a
device this machine's torch does not have is a one-line :class:`~masquerade.errors.InputError`.

Parsing a device name (:func:`check_device_name`) imports no torch, so the command line checks ``--device`` at once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Union

from masquerade.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICE_NAMES",
    "DeviceLike",
    "check_device_name",
    "resolve_device",
    "device_label",
    "same_device",
    "model_device",
    "require_float64",
]

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")

DeviceLike = Union[str, "torch.device", None]


def check_device_name(name: str) -> str:
    """``name`` if it names a device kind we know (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a
    one-line error. Availability is checked by :func:`resolve_device`."""
    text = str(name).strip().lower()
    if not _NAME.match(text):
        raise InputError(f"unknown device {name!r}; expected {DEVICE_NAMES}")
    return text


def resolve_device(device: DeviceLike = None) -> torch.device:
    """The ``torch.device`` that ``device`` names (None means ``cpu``, the default of every workflow), checked
    against what this machine's torch can use."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = check_device_name(device or "cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise InputError(
                "device mps: this machine's torch has no usable MPS (Apple GPU) backend; use --device cpu or auto"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "was built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU"
        raise InputError(f"device {name}: this machine's torch {torch.__version__} {why}; use --device cpu or auto")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(
            f"device {name}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``mps`` and ``mps:0``, ``cuda`` and ``cuda:0`` of the current device are)."""
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any): where an algorithm that follows its
    model runs."""
    import torch

    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def require_float64(device: torch.device, what: str) -> None:
    """A one-line error where ``what`` needs float64 arithmetic on a device without it (Apple's MPS)."""
    if device.type == "mps":
        raise InputError(f"{what} computes in float64, which the mps device does not have; use --device cpu")


def device_label(device: torch.device) -> str:
    """How run folders and reports name a device: ``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``mps``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
