"""Protections, one module each; importing this package registers them."""

from . import identity, instahide  # noqa: F401
