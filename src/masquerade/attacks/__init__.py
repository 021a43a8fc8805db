"""Attacks, one module per family; importing this package registers them."""

from . import disguise, feature_inversion, gradient_inversion, shufflebits  # noqa: F401
