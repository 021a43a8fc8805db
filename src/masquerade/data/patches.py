"""Public patch pools (InstaHide's public data): random square crops kept when SIFT finds enough keypoints.

Each candidate crop has a side drawn uniformly from ``size_range`` (clipped to the photo's shorter side) and a
uniform position; OpenCV's SIFT with default parameters runs on the crop's grey version at the photo's own
resolution, and the crop is kept when it finds *more than* ``min_keypoints`` keypoints; kept crops are resized to
``out_size`` (area interpolation). Candidates are drawn in fixed-size batches from one generator and accepted in
order, so a seed gives the same patches however many threads run SIFT. Results for a seed are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from masquerade.data.imageset import ImageSet
from masquerade.errors import InputError, MasqueradeError
from masquerade.fileio import save_npz
from masquerade.progress import bar
from masquerade.rng import RngLike, as_generator

__all__ = ["extract_patches", "sift_keypoint_counts", "default_cache_dir", "public_pool"]

PhotoSource = str | os.PathLike[str] | ImageSet | Sequence[np.ndarray] | tuple[Sequence[np.ndarray], Sequence[str]]


def default_cache_dir() -> Path:
    env = os.environ.get("MASQUERADE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "masquerade") / "patches"


def _as_photos(photos: PhotoSource) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(photos, (str, os.PathLike)):
        from masquerade.data.loaders import load_photos

        return load_photos(photos)
    if isinstance(photos, ImageSet):
        return list(photos.images), list(photos.names)
    if (
        isinstance(photos, tuple)
        and len(photos) == 2
        and isinstance(photos[1], (list, tuple))
        and all(isinstance(s, str) for s in photos[1])
    ):
        imgs, names = list(photos[0]), list(photos[1])
    else:
        imgs = list(photos)  # type: ignore[arg-type]
        names = [f"photo-{i}" for i in range(len(imgs))]
    for i, im in enumerate(imgs):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] not in (1, 3):
            raise InputError(
                f"extract_patches: photo {names[i]} must be uint8 H×W×C, got "
                f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}"
            )
    if len({im.shape[2] for im in imgs}) > 1:  # grey photos among colour ones: make every patch colour
        imgs = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in imgs]
    return imgs, names


def sift_keypoint_counts(crops: Sequence[np.ndarray], *, threads: int | None = None) -> np.ndarray:
    """Number of keypoints OpenCV's default SIFT finds on each crop (grey), in order."""
    from masquerade.extras import require

    cv2 = require("cv2")

    def count(img: np.ndarray) -> int:
        grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return len(cv2.SIFT_create().detect(np.ascontiguousarray(grey), None))

    workers = threads or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(crops) < 8:
        return np.array([count(c) for c in crops], dtype=np.int64)
    with ThreadPoolExecutor(workers) as pool:
        return np.fromiter(pool.map(count, crops), dtype=np.int64, count=len(crops))


def _digest(imgs: list[np.ndarray], params: dict[str, object]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(params, sort_keys=True).encode())
    for im in imgs:
        h.update(str(im.shape).encode())
        h.update(np.ascontiguousarray(im).data)
    return h.hexdigest()


def extract_patches(
    photos: PhotoSource,
    n: int,
    size_range: tuple[int, int] = (64, 160),
    *,
    out_size: int = 32,
    min_keypoints: int = 40,
    rng: RngLike = None,
    cache: bool | str | os.PathLike[str] = True,
    batch: int = 256,
    max_candidates: int | None = None,
    progress: bool | None = None,
) -> ImageSet:
    """Cut ``n`` SIFT-filtered square patches from ``photos`` and resize them to ``out_size``.

    ``photos``: a folder or ``bundled:photos``, an ImageSet, a list of uint8 H×W×C arrays, or ``(arrays, names)``.
    The result's ``names`` record each patch's provenance as ``photo@y,x+side``. With an integer seed the result is
    cached (``cache=False`` disables, a path chooses the folder; default ``$MASQUERADE_CACHE/patches``).
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"extract_patches: n must be a non-negative int, got {n!r}")
    lo, hi = (int(size_range[0]), int(size_range[1]))
    if not 1 <= lo <= hi:
        raise InputError(f"extract_patches: size_range must satisfy 1 <= low <= high, got {size_range}")
    if out_size < 1 or min_keypoints < 0 or batch < 1:
        raise InputError("extract_patches: out_size and batch must be positive, min_keypoints >= 0")
    imgs, names = _as_photos(photos)
    short = np.array([min(im.shape[:2]) for im in imgs], dtype=np.int64)
    usable = np.flatnonzero(short >= lo)
    if usable.size == 0:
        raise InputError(f"extract_patches: every photo is smaller than the smallest crop ({lo} px)")
    params = {
        "n": int(n),
        "size_range": [lo, hi],
        "out_size": out_size,
        "min_keypoints": min_keypoints,
        "batch": batch,
        "version": 1,
    }
    cache_file = None
    seeded = isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)
    if cache and seeded:
        folder = default_cache_dir() if cache is True else Path(cache)
        cache_file = folder / f"{_digest(imgs, {**params, 'seed': int(rng)})}.npz"  # type: ignore[arg-type]
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                return ImageSet(z["images"], None, (), tuple(str(s) for s in z["names"]), "patches")
    from masquerade.extras import require

    cv2 = require("cv2")

    gen = as_generator(rng)
    limit = max_candidates if max_candidates is not None else 50 * n + 2000
    out_imgs: list[np.ndarray] = []
    out_names: list[str] = []
    tried = 0
    with bar(total=n, desc="SIFT patches", unit="patch", disable=None if progress is None else not progress) as pb:
        while len(out_imgs) < n:
            if tried >= limit:
                raise MasqueradeError(
                    f"extract_patches: only {len(out_imgs)} of {n} patches passed the SIFT filter "
                    f"after {tried} candidates; lower min_keypoints or enlarge size_range"
                )
            which = usable[gen.integers(0, usable.size, size=batch)]
            top = np.minimum(hi, short[which])
            side = lo + np.floor(gen.random(batch) * (top - lo + 1)).astype(np.int64)
            u_y, u_x = gen.random(batch), gen.random(batch)
            heights = np.array([imgs[i].shape[0] for i in which])
            widths = np.array([imgs[i].shape[1] for i in which])
            ys = np.floor(u_y * (heights - side + 1)).astype(np.int64)
            xs = np.floor(u_x * (widths - side + 1)).astype(np.int64)
            crops = [imgs[i][y : y + s, x : x + s] for i, y, x, s in zip(which, ys, xs, side)]
            counts = sift_keypoint_counts(crops)
            tried += batch
            for j in np.flatnonzero(counts > min_keypoints):
                if len(out_imgs) == n:
                    break
                crop = crops[j]
                small = cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_AREA)
                out_imgs.append(small.reshape(out_size, out_size, crop.shape[2]))
                out_names.append(f"{names[which[j]]}@{ys[j]},{xs[j]}+{side[j]}")
                pb.update(1)
    channels = imgs[usable[0]].shape[2]
    images = np.stack(out_imgs) if out_imgs else np.zeros((0, out_size, out_size, channels), np.uint8)
    result = ImageSet(images, None, (), tuple(out_names), "patches")
    if cache_file is not None:
        save_npz(cache_file, images=images, names=np.array(out_names))
    return result


def public_pool(
    source: str | os.PathLike[str] | ImageSet, n: int, *, size: int, rng: RngLike = None, min_keypoints: int = 40
) -> ImageSet:
    """A public patch pool: a ready patch set (``.npz``/ImageSet, used as is) or ``n`` SIFT-filtered patches cut
    from a folder of photos (or ``bundled:photos``)."""
    if isinstance(source, ImageSet):
        pool = source
    elif str(source).endswith((".npz", ".npy")):
        from masquerade.data.loaders import load_images

        pool = load_images(source)
    else:
        seed = rng if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else None
        return extract_patches(
            source,
            n,
            out_size=size,
            min_keypoints=min_keypoints,
            rng=seed if seed is not None else as_generator(rng),
            cache=seed is not None,
        )
    if pool.image_shape[:2] != (size, size):
        raise InputError(
            f"public patches are {pool.image_shape[0]}×{pool.image_shape[1]}, the private images {size}×{size}"
        )
    return pool.to_rgb()
