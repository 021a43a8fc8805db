"""Protections, one module each; importing this package registers them."""

from . import disguise, identity, instahide  # noqa: F401
