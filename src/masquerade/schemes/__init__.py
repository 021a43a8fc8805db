"""Protections, one module each; importing this package registers them."""

from . import disguise, identity, instahide, shufflebits  # noqa: F401
