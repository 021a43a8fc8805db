"""Moved: gradient inversion belongs to no single scheme, so it lives in :mod:`masquerade.attacks.gradient_inversion`.
This module keeps the old imports working for one release."""

from masquerade.attacks.gradient_inversion import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DLG,
    DLGSettings,
    GradientInversion,
    InversionResult,
    InversionSettings,
    InvertingGradients,
    client_gradient,
    evaluation_view,
    gradient_cost,
    gradient_norm,
    infer_labels,
    per_sample_gradients,
    total_variation,
)

_GradientInversion = GradientInversion  # the name before it was public (one release)

__all__ = [
    "GradientInversion",
    "InversionSettings",
    "DLGSettings",
    "InvertingGradients",
    "DLG",
    "InversionResult",
    "client_gradient",
    "infer_labels",
    "per_sample_gradients",
    "evaluation_view",
    "total_variation",
    "gradient_cost",
    "gradient_norm",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]
