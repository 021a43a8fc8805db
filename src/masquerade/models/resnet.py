"""ResNets for 32×32 inputs.

- ``resnet18``: the CIFAR ResNet-18 of the InstaHide code (3×3 stem, [2, 2, 2, 2] basic blocks, 64-512 channels).
- ``resnet9``: the DAWNBench-style ResNet-9 (prep conv, three pooled stages, two residual blocks), 64-512 channels.
- ``fastresnet``: ResNet-9 at half width (32-256 channels), about 8× cheaper; our default for CPU runs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["ResNet18", "ResNet9", "create_model", "list_models", "MODELS"]


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
            _conv_bn(in_channels, w), _conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w),
            _conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.linear = nn.Linear(8 * w, num_classes)
        self.scale = 0.125  # the DAWNBench net scales its logits down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.net(x)) * self.scale


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "resnet9": lambda num_classes=10, in_channels=3: ResNet9(num_classes, in_channels, 64),
    "fastresnet": lambda num_classes=10, in_channels=3: ResNet9(num_classes, in_channels, 32),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
