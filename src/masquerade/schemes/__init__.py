"""Protections, one module each; importing this package registers them."""

from . import identity  # noqa: F401
