"""Classifiers for 32×32 inputs.

- ``resnet18``: the CIFAR ResNet-18 of the InstaHide code (3×3 stem, [2, 2, 2, 2] basic blocks, 64-512 channels).
- ``resnet9``: the DAWNBench-style ResNet-9 (prep conv, three pooled stages, two residual blocks), 64-512 channels.
- ``fastresnet``: ResNet-9 at half width (32-256 channels), about 8× cheaper; our default for CPU runs.
- ``resnet20`` / ``resnet20-4``: the CIFAR ResNet-20 of the gradient-inversion papers (16 or 64 base channels).
- ``convnet`` / ``convnet16``: the eight-layer ConvNet of "Inverting Gradients" (width 64 or 16).
- ``lenet-zhu``: the small sigmoid LeNet of "Deep Leakage from Gradients".
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from masquerade.errors import InputError

__all__ = ["ResNet18", "ResNet9", "ResNet20", "ConvNet", "create_model", "check_input", "list_models", "MODELS"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _conv_bn(c, c)
        self.b = _conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class ResNet9(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w),
            nn.MaxPool2d(2),
            _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.linear = nn.Linear(8 * w, num_classes)
        self.scale = 0.125  # the DAWNBench net scales its logits down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.net(x)) * self.scale


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of the gradient-inversion papers: a 3×3 stem, three stages of three basic blocks
    (``width``, 2×, 4× channels; strides 1, 2, 2), global average pooling. ATS uses ``width=64`` ("ResNet20-4")."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ConvNet(nn.Module):
    """The ConvNet of "Inverting Gradients" (width 64): eight 3×3 conv-BN-ReLU layers (1, 2, 2, 4, 4, 4 × width,
    max-pool 3, 4, 4 × width, max-pool 3) and a linear layer on the 3×3 map."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 2 * width, 4 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        layers.append(nn.MaxPool2d(3))
        for _ in range(2):
            layers += [nn.Conv2d(4 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU()]
        layers += [nn.MaxPool2d(3), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(36 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class LeNetZhu(nn.Module):
    """The small sigmoid LeNet of "Deep Leakage from Gradients" (three 5×5 conv layers of 12 channels, a linear
    layer on the 8×8 map), with its uniform(-0.5, 0.5) initialisation."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1),
            nn.Sigmoid(),
            nn.Flatten(),
        )
        self.fc = nn.Linear(768, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.uniform_(m.weight, -0.5, 0.5)
                assert m.bias is not None
                nn.init.uniform_(m.bias, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet-zhu": LeNetZhu,
    "resnet20": lambda num_classes=10, in_channels=3: ResNet20(num_classes, in_channels, 16),
    "resnet20-4": lambda num_classes=10, in_channels=3: ResNet20(num_classes, in_channels, 64),
    "convnet": lambda num_classes=10, in_channels=3: ConvNet(num_classes, in_channels, 64),
    "convnet16": lambda num_classes=10, in_channels=3: ConvNet(num_classes, in_channels, 16),
    "resnet18": ResNet18,
    "resnet9": lambda num_classes=10, in_channels=3: ResNet9(num_classes, in_channels, 64),
    "fastresnet": lambda num_classes=10, in_channels=3: ResNet9(num_classes, in_channels, 32),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def refusal(net: nn.Module, shape: Sequence[int]) -> str | None:
    """Why ``net`` cannot take C×H×W images (a head sized for another input, pooling below 1×1, another channel
    count): the first line of the error of one forward pass of a zero image, or None where it can."""
    c, h, w = (int(v) for v in shape)
    param = next(net.parameters(), None)
    try:
        with torch.no_grad():
            net(torch.zeros(1, c, h, w, device=None if param is None else param.device))
    except RuntimeError as exc:
        return str(exc).splitlines()[0][:120]
    return None


def check_input(name: str, shape: Sequence[int], *, what: str = "the model") -> None:
    """Refuse, in one line, C×H×W images a fresh ``name`` network cannot take (see :func:`refusal`)."""
    c, h, w = (int(v) for v in shape)
    why = refusal(create_model(name, num_classes=2, in_channels=c).eval(), shape)
    if why is not None:
        raise InputError(
            f"{what} {name} does not take {c}×{h}×{w} images ({why}); resize them (--size) or choose another"
        )


def create_model(name: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
