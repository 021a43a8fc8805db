"""Small image classifiers written here (no torchvision): a CIFAR ResNet-18 and fast ResNet-9 variants."""

from .resnet import MODELS, ResNet9, ResNet18, create_model, list_models

__all__ = ["create_model", "list_models", "MODELS", "ResNet18", "ResNet9"]
