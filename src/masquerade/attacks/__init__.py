"""Attacks, one module per family; importing this package registers them."""

from . import disguise  # noqa: F401
