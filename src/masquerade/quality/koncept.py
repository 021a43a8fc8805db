"""KonCept512 (Hosu et al., KonIQ-10k), the MediaEval 2020 Pixel Privacy task's quality model, in the layout of the
``ZhengyuZhao/koniq-PyTorch`` port, so that its weights file loads unchanged.

The port wraps an Inception-ResNet-v2 (the widely used ``pretrainedmodels`` layout: ``conv2d_1a`` ... ``conv2d_7b``,
``avgpool_1a``) as ``base`` -- an ``nn.Sequential`` of its children without the classifier, so its parameters are
named ``base.0.conv.weight`` ... ``base.14.bn.running_var`` -- and a head ``fc``: 1536 -> 2048 -> 1024 -> 256 -> 1
(Linear, ReLU, BatchNorm1d, Dropout 0.25/0.25/0.5). Inputs are 512×384 photos scaled to [-1, 1]; the output is the
KonIQ MOS on 0-100. ``avgpool_1a`` is the fixed 8×8 average pool of the ImageNet model: on a 384×512 input the last
feature map is 10×14 and the pool reads its top-left 8×8 window, exactly as the trained model did.

The weights cannot be downloaded here; ``KonCept512Quality(weights=None)`` builds a randomly initialised model for
architecture and speed tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from masquerade.errors import InputError, error_line
from masquerade.quality.models import QualityModel, _check

__all__ = ["InceptionResNetV2Base", "KonCept512", "KonCept512Quality"]


class BasicConv2d(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class Mixed_5b(nn.Module):  # noqa: N801 - the published module names
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, 1)
        self.branch1 = _seq(BasicConv2d(192, 48, 1), BasicConv2d(48, 64, 5, padding=2))
        self.branch2 = _seq(
            BasicConv2d(192, 64, 1), BasicConv2d(64, 96, 3, padding=1), BasicConv2d(96, 96, 3, padding=1)
        )
        self.branch3 = _seq(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), BasicConv2d(192, 64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _Residual(nn.Module):
    """Inception-ResNet block: branches, concatenated, a 1×1 conv scaled and added to the input, ReLU."""

    scale: float
    relu_out: bool
    branch0: nn.Module
    branch1: nn.Module
    branch2: nn.Module  # absent from blocks with two branches
    conv2d: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch0(x), self.branch1(x)] + ([self.branch2(x)] if hasattr(self, "branch2") else [])
        out = self.conv2d(torch.cat(branches, 1)) * self.scale + x
        return torch.relu(out) if self.relu_out else out


class Block35(_Residual):
    def __init__(self, scale: float = 0.17) -> None:
        super().__init__()
        self.scale, self.relu_out = scale, True
        self.branch0 = BasicConv2d(320, 32, 1)
        self.branch1 = _seq(BasicConv2d(320, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = _seq(
            BasicConv2d(320, 32, 1), BasicConv2d(32, 48, 3, padding=1), BasicConv2d(48, 64, 3, padding=1)
        )
        self.conv2d = nn.Conv2d(128, 320, 1)


class Block17(_Residual):
    def __init__(self, scale: float = 0.10) -> None:
        super().__init__()
        self.scale, self.relu_out = scale, True
        self.branch0 = BasicConv2d(1088, 192, 1)
        self.branch1 = _seq(
            BasicConv2d(1088, 128, 1),
            BasicConv2d(128, 160, (1, 7), padding=(0, 3)),
            BasicConv2d(160, 192, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1088, 1)


class Block8(_Residual):
    def __init__(self, scale: float = 0.20, no_relu: bool = False) -> None:
        super().__init__()
        self.scale, self.relu_out = scale, not no_relu
        self.branch0 = BasicConv2d(2080, 192, 1)
        self.branch1 = _seq(
            BasicConv2d(2080, 192, 1),
            BasicConv2d(192, 224, (1, 3), padding=(0, 1)),
            BasicConv2d(224, 256, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(448, 2080, 1)


class Mixed_6a(nn.Module):  # noqa: N801
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, 3, stride=2)
        self.branch1 = _seq(
            BasicConv2d(320, 256, 1), BasicConv2d(256, 256, 3, padding=1), BasicConv2d(256, 384, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed_7a(nn.Module):  # noqa: N801
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _seq(BasicConv2d(1088, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = _seq(BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3, stride=2))
        self.branch2 = _seq(
            BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3, padding=1), BasicConv2d(288, 320, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


def InceptionResNetV2Base() -> nn.Sequential:  # noqa: N802 - a layout, named as such
    """The ImageNet model's children up to (and including) ``avgpool_1a``, in order (16 modules)."""
    return nn.Sequential(
        BasicConv2d(3, 32, 3, stride=2),
        BasicConv2d(32, 32, 3),
        BasicConv2d(32, 64, 3, padding=1),
        nn.MaxPool2d(3, stride=2),
        BasicConv2d(64, 80, 1),
        BasicConv2d(80, 192, 3),
        nn.MaxPool2d(3, stride=2),
        Mixed_5b(),
        nn.Sequential(*[Block35(0.17) for _ in range(10)]),
        Mixed_6a(),
        nn.Sequential(*[Block17(0.10) for _ in range(20)]),
        Mixed_7a(),
        nn.Sequential(*[Block8(0.20) for _ in range(9)]),
        Block8(no_relu=True),
        BasicConv2d(2080, 1536, 1),
        nn.AvgPool2d(8, count_include_pad=False),
    )


class KonCept512(nn.Module):
    """The port's ``model_qa(num_classes=1)``: ``base`` + ``fc``; input in [-1, 1], output the MOS (0-100)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = InceptionResNetV2Base()
        self.fc = nn.Sequential(
            nn.Linear(1536, 2048),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(2048),
            nn.Dropout(0.25),
            nn.Linear(2048, 1024),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(1024),
            nn.Dropout(0.25),
            nn.Linear(1024, 256),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(256),
            nn.Dropout(0.5),
            nn.Linear(256, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.base(x).reshape(len(x), -1))


class KonCept512Quality(QualityModel):
    """KonCept512 as a :class:`QualityModel`: photos in [0, 1] are scaled to [-1, 1] (the task scores 512×384 photos
    as they are; other sizes run too, but the model was trained at 512×384). ``weights``: the port's state-dict
    file (loaded with ``weights_only=True``), or None for a random model."""

    name = "koncept512"

    def __init__(self, weights: str | Path | None = None, *, threshold: float = 50.0) -> None:
        super().__init__(threshold)
        self.net = KonCept512()
        if weights is not None:
            p = Path(weights)
            if not p.is_file():
                raise InputError(f"{p}: no such KonCept512 weights file")
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - zipfile, pickle (weights_only refusals) and torch errors
                raise InputError(f"{p}: not a PyTorch weights file ({error_line(exc)})") from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
            ):
                raise InputError(f"{p}: not a KonCept512 state dict (names to tensors)")
            state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
            try:
                missing, unexpected = self.net.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shapes that do not fit
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                raise InputError(
                    f"{p}: not a KonCept512 state dict ({lines[min(1, len(lines) - 1)].strip()})"
                ) from None
            if missing or unexpected:
                raise InputError(
                    f"{p}: not a KonCept512 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
        self.net.eval()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        x = _check(images, self.name)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[2:]) < 299:
            raise InputError(f"koncept512: photos must be at least 299 pixels on each side, got {tuple(x.shape[2:])}")
        return self.net(x * 2 - 1)[:, 0]
