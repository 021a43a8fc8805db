"""Protections, one module each; importing this package registers them."""

from . import ats, disguise, identity, instahide, shufflebits  # noqa: F401
