"""Data: ImageSet, loaders, downloads with checksums, bundled offline sources, public patch pools."""

from .bundled import BUNDLED, list_bundled
from .fetch import DATASETS, fetch_dataset
from .imageset import ImageSet, to_uint8
from .loaders import load_images, load_photos
from .patches import extract_patches, sift_keypoint_counts

__all__ = ["ImageSet", "load_images", "load_photos", "fetch_dataset", "DATASETS", "BUNDLED", "list_bundled",
           "extract_patches", "sift_keypoint_counts", "to_uint8"]
