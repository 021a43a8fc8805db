"""Data: ImageSet, loaders, downloads with checksums, bundled offline sources, public patch pools.

Names load on first use (``masquerade list`` reads the bundled catalogue without importing the loaders)."""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {"ImageSet": "imageset", "to_uint8": "imageset", "load_images": "loaders", "load_photos": "loaders",
         "fetch_dataset": "fetch", "DATASETS": "fetch", "BUNDLED": "bundled", "list_bundled": "bundled",
         "extract_patches": "patches", "sift_keypoint_counts": "patches"}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'masquerade.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"masquerade.data.{home}"), name)
    globals()[name] = value
    return value
