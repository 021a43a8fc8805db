"""Small image classifiers written here (no torchvision): a CIFAR ResNet-18, fast ResNet-9 variants, ResNet-20 and
the ConvNet of the gradient-inversion papers."""

from masquerade.models.io import load_model, save_model
from masquerade.models.normalized import Normalized
from masquerade.models.resnet import MODELS, ConvNet, ResNet9, ResNet18, ResNet20, create_model, list_models

__all__ = [
    "Normalized",
    "save_model",
    "load_model",
    "create_model",
    "list_models",
    "MODELS",
    "ResNet18",
    "ResNet9",
    "ResNet20",
    "ConvNet",
]
