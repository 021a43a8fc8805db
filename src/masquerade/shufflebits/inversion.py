"""Moved: the feature API and the attacks through it belong to no single scheme, so they live in
:mod:`masquerade.attacks.feature_inversion`. This module keeps the old imports working for one release."""

from masquerade.attacks.feature_inversion import (
    Decoder,
    FeatureAPI,
    FeatureAttribute,
    FeatureInversion,
    cosine_distance,
    represent,
)

__all__ = ["FeatureAPI", "Decoder", "FeatureAttribute", "FeatureInversion", "cosine_distance", "represent"]
