"""Attacks that belong to no single scheme (the scheme-specific ones live beside their scheme)."""
