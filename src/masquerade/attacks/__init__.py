"""Attacks, one module per family; importing this package registers them."""

from . import disguise, shufflebits  # noqa: F401
