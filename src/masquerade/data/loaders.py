"""Loading images from folders, files, ``.npz`` arrays, CIFAR archives and the bundled sources."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, Sequence, TypedDict

import numpy as np

from masquerade.data.imageset import ImageSet, resize_image, resized, stack_images
from masquerade.errors import InputError

__all__ = ["load_images", "load_photos", "load_npy", "IMAGE_SUFFIXES", "decode_image", "resize_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
_IGNORED = {"thumbs.db", "desktop.ini"}
_CIFAR_DIRS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}
MAX_PIXELS = 100_000_000  # refuse decompression bombs beyond 100 megapixels per image


def max_total_pixels() -> int:
    """What one command may load in all: ``$MASQUERADE_MAX_TOTAL_PIXELS`` pixels (default 1.5 billion, about
    4.5 GB of RGB), so many large images cannot exhaust memory where each alone is within :data:`MAX_PIXELS`."""
    text = os.environ.get("MASQUERADE_MAX_TOTAL_PIXELS", "")
    try:
        return int(text) if text else 1_500_000_000
    except ValueError:
        raise InputError(f"$MASQUERADE_MAX_TOTAL_PIXELS must be an integer, got {text!r}") from None


class PixelBudget:
    """A running total of the pixels a command loads, refused past :func:`max_total_pixels`."""

    def __init__(self, where: str) -> None:
        self.where, self.limit = where, max_total_pixels()
        self.left = self.limit

    def take(self, pixels: int, name: str) -> None:
        self.left -= int(pixels)
        if self.left < 0:
            raise InputError(
                f"{self.where}: more than {self.limit:,} pixels in all (reached at {name}); load fewer "
                f"or smaller images, or raise $MASQUERADE_MAX_TOTAL_PIXELS"
            )


Size = int | tuple[int, int] | None


def _norm_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def decode_image(
    data: bytes | str | os.PathLike[str], *, name: str, channels: int | None = None, budget: PixelBudget | None = None
) -> np.ndarray:
    """Decode one image file to uint8 H×W×C (C = 3 for colour, 1 for grey unless ``channels`` says otherwise)."""
    from PIL import Image, UnidentifiedImageError

    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{name}: {im.width}×{im.height} is larger than the {MAX_PIXELS:,}-pixel limit")
            if budget is not None:
                budget.take(im.width * im.height, name)
            im.load()
            grey = im.mode in ("1", "L", "LA", *_WIDE_MODES)
            want = channels if channels is not None else (1 if grey else 3)
            if want not in (1, 3):
                raise InputError(f"channels must be 1 or 3, got {channels}")
            if im.mode in _WIDE_MODES:
                plane = _wide_to_uint8(np.asarray(im), im.mode, name)  # PIL's convert would clip to white
                arr = plane[..., None] if want == 1 else np.repeat(plane[..., None], 3, axis=2)
            elif want == 1:
                arr = np.asarray(im.convert("L"))[..., None]
            else:
                arr = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}: refused, a possible decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # grey planes of more than 8 bits


def _wide_to_uint8(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    """One grey plane of more than 8 bits to uint8 by its declared depth: 16-bit values scaled by 255/65535,
    floats taken as [0, 1]. 32-bit integers declare no depth, so they are read only when they fit 16 bits."""
    if mode == "F":
        a = a.astype(np.float64)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise InputError(f"{name}: a floating-point image with values outside [0, 1]; save it as 8 or 16 bits")
        return np.round(a * 255).astype(np.uint8)
    a = a.astype(np.int64)
    if mode == "I" and (a.min() < 0 or a.max() > 65535):
        raise InputError(f"{name}: a 32-bit integer image with values outside 0..65535; save it as 8 or 16 bits")
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _image_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name.lower() in _IGNORED or p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{p}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        files.append(p)
    return files


def load_photos(path: str | os.PathLike[str], *, channels: int | None = 3) -> tuple[list[np.ndarray], list[str]]:
    """Images of any sizes, each at its own resolution: a folder (recursively), one file, or ``bundled:photos``."""
    spec = str(path)
    if spec.startswith("bundled:"):
        from masquerade.data.bundled import bundled_photos

        return bundled_photos(spec.split(":", 1)[1])
    p = Path(path)
    if p.is_file():
        return [decode_image(p, name=str(p), channels=channels)], [p.name]
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    files = sorted(
        f
        for f in p.rglob("*")
        if f.is_file()
        and f.name.lower() not in _IGNORED
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    )
    bad = [f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise InputError(f"{bad[0]}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if not files:
        raise InputError(f"{p}: no images found")
    budget = PixelBudget(str(p))
    return (
        [decode_image(f, name=str(f), channels=channels, budget=budget) for f in files],
        [str(f.relative_to(p)) for f in files],
    )


def load_images(
    path: str | os.PathLike[str], *, size: Size = None, split: str = "train", channels: int | None = None
) -> ImageSet:
    """Load an :class:`ImageSet` from any supported source.

    - ``"bundled:NAME"``: data shipped inside our dependencies (see :func:`masquerade.data.list_bundled`);
    - a folder: class sub-folders (sorted names become labels 0..C-1) or a flat folder of images (no labels);
    - a single image file;
    - an ``.npz`` with ``images`` (uint8 N×H×W[×C]) and optionally ``labels``, ``classes``, ``names``; or ``.npy``;
    - a CIFAR-10/100 python archive (``cifar-10-python.tar.gz``) or its extracted folder; ``split`` picks
      ``"train"`` or ``"test"``.

    Images of different sizes are refused unless ``size`` (int or (height, width)) asks for a resize
    (centre crop to the aspect ratio, then Lanczos). ``channels`` forces 1 or 3 channels.
    """
    target = _norm_size(size)
    spec = str(path)
    if spec.startswith("bundled:"):
        from masquerade.data.bundled import load_bundled

        ds = load_bundled(spec.split(":", 1)[1], size=target)
        return _force_channels(ds, channels)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        kind = _cifar_kind(p)
        if kind:
            return resized(_force_channels(_load_cifar_dir(p, kind, split), channels), target)
        return _load_folder(p, target, channels)
    name = p.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return resized(_force_channels(_load_cifar_tar(p, split), channels), target)
    if name.endswith(".npz"):
        return resized(_force_channels(_load_npz(p), channels), target)
    if name.endswith(".npy"):
        arr = load_npy(p)
        return resized(_force_channels(_as_imageset(arr, None, (), (), str(p), str(p)), channels), target)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        img = decode_image(p, name=str(p), channels=channels)
        if target is not None:
            img = resize_image(img, target)
        return ImageSet(img[None], names=(p.name,), source=str(p))
    raise InputError(f"{p}: unsupported file type (folders, images, .npz, .npy and CIFAR archives are supported)")


def _force_channels(ds: ImageSet, channels: int | None) -> ImageSet:
    if channels is None or ds.image_shape[2] == channels:
        return ds
    if channels == 3:
        return ds.to_rgb()
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float64)
        grey = np.clip(np.round(ds.images.astype(np.float64) @ weights), 0, 255).astype(np.uint8)[..., None]
        return ImageSet(grey, ds.labels, ds.classes, ds.names, ds.source)
    raise InputError(f"channels must be 1 or 3, got {channels}")


def _load_folder(p: Path, size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        loose = [
            f
            for f in p.iterdir()
            if f.is_file()
            and not f.name.startswith(".")
            and f.name.lower() not in _IGNORED
            and f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if loose:
            raise InputError(
                f"{p}: mixes class sub-folders with loose images (e.g. {loose[0].name}); "
                "put every image in a class folder, or use a flat folder"
            )
        images, names, labels = [], [], []
        budget = PixelBudget(str(p))
        for label, d in enumerate(subdirs):
            for f in _image_files(d):
                images.append(decode_image(f, name=str(f), channels=channels, budget=budget))
                names.append(f"{d.name}/{f.name}")
                labels.append(label)
        arr = stack_images(images, names, size, str(p))
        return ImageSet(arr, np.asarray(labels, np.int64), tuple(d.name for d in subdirs), tuple(names), str(p))
    files = _image_files(p)
    budget = PixelBudget(str(p))
    images = [decode_image(f, name=str(f), channels=channels, budget=budget) for f in files]
    arr = stack_images(images, [f.name for f in files], size, str(p))
    return ImageSet(arr, None, (), tuple(f.name for f in files), str(p))


def load_npy(p: Path) -> np.ndarray:
    """A plain numeric .npy (never pickled objects), its declared size checked before anything is allocated."""
    try:
        head = np.load(p, mmap_mode="r", allow_pickle=False)  # the header and the file's size, no allocation
        if head.size > max_total_pixels() * 4:
            raise InputError(
                f"{p}: declares {head.size:,} values, more than this command loads ($MASQUERADE_MAX_TOTAL_PIXELS)"
            )
        del head
        return np.load(p, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: not a plain numeric .npy array ({exc}); object arrays are never loaded") from None


def _load_npz(p: Path) -> ImageSet:
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            if "images" not in files:
                raise InputError(f"{p}: an .npz of images needs an 'images' array; it has {sorted(files)}")
            images = z["images"]
            labels = z["labels"] if "labels" in files else None
            classes = tuple(str(c) for c in z["classes"]) if "classes" in files else ()
            names = tuple(str(c) for c in z["names"]) if "names" in files else ()
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npz file ({exc})") from None
    return _as_imageset(images, labels, classes, names, str(p), str(p))


def _as_imageset(
    images: np.ndarray, labels: Any, classes: Sequence[str], names: Sequence[str], source: str, where: str
) -> ImageSet:
    if images.dtype != np.uint8:
        raise InputError(f"{where}: images must be uint8 (N×H×W×C), got {images.dtype}")
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
        raise InputError(f"{where}: images look like N×C×H×W {images.shape}; files hold N×H×W×C")
    if images.ndim >= 1 and len(images) == 0:
        raise InputError(f"{where}: holds no images")
    try:
        return ImageSet(images, labels, tuple(classes), tuple(names), source)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


# -- CIFAR python archives (pickled dicts: read with an unpickler that can build only plain data) -------------------
class _DataOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, bytes and numpy arrays; refuses every other global (so never runs code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is loaded)")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{where}: not a CIFAR batch ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a CIFAR batch (no dict inside)")
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


class _CifarFiles(TypedDict):
    train: list[str]
    test: list[str]
    meta: str
    labels: str
    names: str


_CIFAR_FILES: dict[str, _CifarFiles] = {
    "cifar10": {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
    },
    "cifar100": {
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
    },
}


def _cifar_kind(p: Path) -> str | None:
    for folder, kind in _CIFAR_DIRS.items():
        if p.name == folder or (p / folder).is_dir():
            return kind
    if (p / "batches.meta").is_file() and (p / "test_batch").is_file():
        return "cifar10"
    if (p / "meta").is_file() and (p / "test").is_file() and (p / "train").is_file():
        return "cifar100"
    return None


def _cifar_build(kind: str, split: str, read: Any, where: str) -> ImageSet:
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    spec = _CIFAR_FILES[kind]
    meta = _unpickle(read(spec["meta"]), f"{where}/{spec['meta']}")
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names"]])
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for fname in spec["train"] if split == "train" else spec["test"]:
        batch = _unpickle(read(fname), f"{where}/{fname}")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[spec["labels"]], dtype=np.int64))
            names.extend(f.decode() if isinstance(f, bytes) else str(f) for f in batch.get("filenames", []))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{where}/{fname}: malformed CIFAR batch ({exc})") from None
    imgs = np.ascontiguousarray(np.concatenate(images))
    if len(names) != len(imgs):
        names = []
    return ImageSet(imgs, np.concatenate(labels), classes, tuple(names), f"{kind}:{split}")


def _load_cifar_dir(p: Path, kind: str, split: str) -> ImageSet:
    folder = next((p / d for d in _CIFAR_DIRS if (p / d).is_dir()), p)

    def read(name: str) -> bytes:
        f = folder / name
        if not f.is_file():
            raise InputError(f"{f}: missing from the CIFAR folder")
        return f.read_bytes()

    return _cifar_build(kind, split, read, str(folder))


def _load_cifar_tar(p: Path, split: str) -> ImageSet:
    try:
        tar = tarfile.open(p)
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{p}: not a readable tar archive ({exc})") from None
    with tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        top = {n.split("/", 1)[0] for n in members}
        kind = next((_CIFAR_DIRS[t] for t in top if t in _CIFAR_DIRS), None)
        if kind is None:
            raise InputError(f"{p}: not a CIFAR-10/100 python archive (top folders: {sorted(top)})")
        folder = next(t for t in top if t in _CIFAR_DIRS)

        def read(name: str) -> bytes:
            m = members.get(f"{folder}/{name}")
            fh = tar.extractfile(m) if m else None
            if fh is None:
                raise InputError(f"{p}: {folder}/{name} is missing from the archive")
            return fh.read()

        return _cifar_build(kind, split, read, str(p))
