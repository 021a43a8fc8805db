"""Data: ImageSet, loaders, downloads with checksums, bundled offline sources, public patch pools.

Names load on first use (``masquerade list`` reads the bundled catalogue without importing the loaders)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers (``X as X``: re-exported)
    from masquerade.data.bundled import BUNDLED as BUNDLED
    from masquerade.data.bundled import list_bundled as list_bundled
    from masquerade.data.fetch import DATASETS as DATASETS
    from masquerade.data.fetch import fetch_dataset as fetch_dataset
    from masquerade.data.imageset import ImageSet as ImageSet
    from masquerade.data.imageset import to_uint8 as to_uint8
    from masquerade.data.loaders import load_images as load_images
    from masquerade.data.loaders import load_photos as load_photos
    from masquerade.data.patches import extract_patches as extract_patches
    from masquerade.data.patches import public_pool as public_pool
    from masquerade.data.patches import sift_keypoint_counts as sift_keypoint_counts

_HOME = {
    "ImageSet": "imageset",
    "to_uint8": "imageset",
    "load_images": "loaders",
    "load_photos": "loaders",
    "fetch_dataset": "fetch",
    "DATASETS": "fetch",
    "BUNDLED": "bundled",
    "list_bundled": "bundled",
    "extract_patches": "patches",
    "sift_keypoint_counts": "patches",
    "public_pool": "patches",
}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'masquerade.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"masquerade.data.{home}"), name)
    globals()[name] = value
    return value
