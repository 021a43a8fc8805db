"""ImageSet: uint8 images with optional labels, class names and per-image names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from masquerade.errors import InputError
from masquerade.rng import RngLike, as_generator

if TYPE_CHECKING:
    import torch

__all__ = ["resize_image", "stack_images", "resized", "ImageSet", "to_uint8"]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] (any layout) to uint8, clamped and rounded to nearest: the one quantiser we use."""
    import torch

    return (x.detach().cpu().float().clamp(0, 1) * 255.0).round().to(torch.uint8)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A batch of images as stored on disk: uint8 N×H×W×C (C = 1 or 3), plus labels and names.

    ``to_tensor()`` gives the API form, float32 N×C×H×W in [0, 1]. Indexing with an int returns ``(image, label)``;
    with a slice, a boolean mask or an index array it returns a new ImageSet.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] = field(default=())
    source: str = ""

    def __post_init__(self) -> None:
        imgs = self.images
        if not isinstance(imgs, np.ndarray):
            raise InputError(f"ImageSet: images must be a numpy array, got {type(imgs).__name__}")
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if imgs.ndim != 4 or imgs.shape[3] not in (1, 3):
            raise InputError(f"ImageSet: images must be N×H×W×C with C in (1, 3), got shape {imgs.shape}")
        if imgs.dtype != np.uint8:
            raise InputError(f"ImageSet: images must be uint8, got {imgs.dtype}")
        object.__setattr__(self, "images", imgs)
        n = imgs.shape[0]
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise InputError(f"ImageSet: {n} images but labels of shape {labels.shape}")
            if labels.size and not np.issubdtype(labels.dtype, np.integer):
                raise InputError(f"ImageSet: labels must be integers, got {labels.dtype}")
            labels = labels.astype(np.int64, copy=False)
            if labels.size and labels.min() < 0:
                raise InputError("ImageSet: labels must be non-negative")
            if self.classes and labels.size and labels.max() >= len(self.classes):
                raise InputError(f"ImageSet: label {labels.max()} but only {len(self.classes)} classes")
            object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        names = tuple(str(s) for s in self.names) if len(self.names) else tuple(f"{i:05d}" for i in range(n))
        if len(names) != n:
            raise InputError(f"ImageSet: {n} images but {len(names)} names")
        object.__setattr__(self, "names", names)

    # -- basic properties ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        h, w, c = self.images.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        if self.labels is not None and self.labels.size:
            return int(self.labels.max()) + 1
        return 0

    def __repr__(self) -> str:
        h, w, c = self.image_shape
        lab = f", {self.num_classes} classes" if self.labels is not None else ", unlabelled"
        src = f", source={self.source!r}" if self.source else ""
        return f"ImageSet({len(self)} images {h}×{w}×{c}{lab}{src})"

    # -- indexing ----------------------------------------------------------------------------------------------------
    def __getitem__(
        self, index: int | slice | Sequence[int] | np.ndarray
    ) -> "ImageSet | tuple[np.ndarray, int | None]":
        if isinstance(index, (int, np.integer)):
            i = int(index)
            label = None if self.labels is None else int(self.labels[i])
            return self.images[i], label
        return self.select(index)

    def select(self, index: slice | Sequence[int] | np.ndarray) -> "ImageSet":
        """A new ImageSet of the chosen images (slice, index array or boolean mask)."""
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise InputError(f"ImageSet: boolean mask of shape {idx.shape} for {len(self)} images")
                idx = np.flatnonzero(idx)
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise InputError(f"ImageSet: index arrays must be integers or booleans, got {idx.dtype}")
            idx = idx.astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise InputError(f"ImageSet: index out of range for {len(self)} images")
        names = np.asarray(self.names, dtype=object)[idx] if len(self) else ()
        return ImageSet(
            self.images[idx], None if self.labels is None else self.labels[idx], self.classes, tuple(names), self.source
        )

    # -- conversions -----------------------------------------------------------------------------------------------
    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """float32 N×C×H×W in [0, 1]."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(self.images.transpose(0, 3, 1, 2)))
        return x.to(device=device, dtype=torch.float32).div_(255.0)

    def labels_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        import torch

        if self.labels is None:
            raise InputError(f"{self!r} has no labels")
        return torch.from_numpy(self.labels).to(device)

    @classmethod
    def from_tensor(
        cls,
        x: torch.Tensor,
        labels: np.ndarray | torch.Tensor | None = None,
        *,
        classes: Sequence[str] = (),
        names: Sequence[str] = (),
        source: str = "",
    ) -> "ImageSet":
        """Quantise a float N×C×H×W batch in [0, 1] back to uint8 (round to nearest)."""
        import torch

        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise InputError("ImageSet.from_tensor: expected an N×C×H×W tensor")
        arr = to_uint8(x).permute(0, 2, 3, 1).numpy()
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        return cls(np.ascontiguousarray(arr), labels, tuple(classes), tuple(names), source)

    def to_rgb(self) -> "ImageSet":
        """Repeat a single channel three times (no-op for colour images)."""
        if self.image_shape[2] == 3:
            return self
        return ImageSet(np.repeat(self.images, 3, axis=3), self.labels, self.classes, self.names, self.source)

    def with_labels(self, labels: np.ndarray | None, classes: Sequence[str] = ()) -> "ImageSet":
        return ImageSet(self.images, labels, tuple(classes), self.names, self.source)

    @staticmethod
    def concat(sets: Sequence["ImageSet"]) -> "ImageSet":
        if not sets:
            raise InputError("ImageSet.concat: nothing to concatenate")
        shapes = {s.image_shape for s in sets}
        if len(shapes) != 1:
            raise InputError(f"ImageSet.concat: image shapes differ: {sorted(shapes)}")
        has = {s.labels is not None for s in sets}
        if len(has) != 1:
            raise InputError("ImageSet.concat: some sets have labels and some do not")
        labels = np.concatenate([s.labels for s in sets]) if sets[0].labels is not None else None
        names = tuple(n for s in sets for n in s.names)
        return ImageSet(
            np.concatenate([s.images for s in sets]),
            labels,
            sets[0].classes,
            names,
            "+".join(sorted({s.source for s in sets if s.source})),
        )

    # -- sampling ----------------------------------------------------------------------------------------------------
    def subset(self, *, n: int | None = None, per_class: int | None = None, rng: RngLike = None) -> "ImageSet":
        """A random subset: ``n`` images, or ``per_class`` images of every class (balanced); original order kept."""
        if (n is None) == (per_class is None):
            raise InputError("subset: give exactly one of n= or per_class=")
        gen = as_generator(rng)
        if n is not None:
            if not 0 <= n <= len(self):
                raise InputError(f"subset: n={n} but the set has {len(self)} images")
            idx = np.sort(gen.choice(len(self), size=n, replace=False))
            return self.select(idx)
        assert per_class is not None
        if self.labels is None:
            raise InputError("subset(per_class=...) needs labels")
        if per_class < 0:
            raise InputError(f"subset: per_class must be >= 0, got {per_class}")
        chosen = []
        for c in range(self.num_classes):
            members = np.flatnonzero(self.labels == c)
            if len(members) < per_class:
                name = self.classes[c] if self.classes else c
                raise InputError(f"subset: class {name!r} has {len(members)} images, fewer than per_class={per_class}")
            chosen.append(gen.choice(members, size=per_class, replace=False))
        return self.select(np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64))

    def split(
        self, parts: float | Sequence[float] | Sequence[int], *, rng: RngLike = None, stratify: bool = True
    ) -> tuple["ImageSet", ...]:
        """Split into disjoint random parts.

        ``parts`` is a fraction (``0.8`` -> 80 % / 20 %), a list of fractions summing to at most 1 (the rest, if any,
        becomes a last part), or a list of counts. With labels and ``stratify`` each class is split in proportion.
        """
        n = len(self)
        if isinstance(parts, bool):
            raise TypeError(f"split: parts must be a fraction or a list, not {parts!r}")
        if isinstance(parts, (float, int)):
            parts = [float(parts)]
        parts = list(parts)
        if not parts:
            raise InputError("split: parts is empty")
        if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts) and sum(parts) > 1:
            counts = [int(p) for p in parts]
            if any(c < 0 for c in counts) or sum(counts) > n:
                raise InputError(f"split: counts {counts} do not fit {n} images")
            fractions = [c / n for c in counts] if n else [0.0] * len(counts)
        else:
            fractions = [float(p) for p in parts]
            if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
                raise InputError(f"split: fractions {fractions} must be >= 0 and sum to at most 1")
            counts = None
        if counts is None and sum(fractions) < 1 - 1e-9:
            fractions.append(1.0 - sum(fractions))
        gen = as_generator(rng)
        if counts is None:
            bounds = np.round(np.cumsum([0.0] + fractions) * n).astype(np.int64)
            bounds[-1] = min(bounds[-1], n)
        else:
            bounds = np.cumsum([0] + counts)
        if stratify and self.labels is not None:
            # Shuffle within each class, then order every image by its relative rank in its class: any contiguous
            # cut of that order holds each class in proportion (to within one image), and totals are exact.
            key = np.empty(n)
            for c in np.unique(self.labels):
                members = gen.permutation(np.flatnonzero(self.labels == c))
                key[members] = (np.arange(len(members)) + gen.random(len(members))) / len(members)
            order = np.argsort(key, kind="stable")
        else:
            order = gen.permutation(n)
        out = [order[bounds[j] : bounds[j + 1]] for j in range(len(bounds) - 1)]
        return tuple(self.select(np.sort(o)) for o in out)


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (Lanczos) to ``size`` = (height, width)."""
    from PIL import Image

    h, w = img.shape[:2]
    th, tw = size
    if (h, w) == (th, tw):
        return img
    scale = max(th / h, tw / w)
    ch, cw = min(h, round(th / scale)), min(w, round(tw / scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top : top + ch, left : left + cw]
    im = Image.fromarray(crop[..., 0] if crop.shape[2] == 1 else crop)
    out = np.asarray(im.resize((tw, th), Image.Resampling.LANCZOS))
    return out[..., None] if out.ndim == 2 else out


def stack_images(images: list[np.ndarray], names: list[str], size: tuple[int, int] | None, where: str) -> np.ndarray:
    if not images:
        raise InputError(f"{where}: no images found")
    if len({im.shape[2] for im in images}) > 1:
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    if size is not None:
        images = [resize_image(im, size) for im in images]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(i for i, im in enumerate(images) if im.shape != first)
        raise InputError(
            f"{where}: images have different sizes ({names[0]} is {first[1]}×{first[0]}, "
            f"{names[odd]} is {images[odd].shape[1]}×{images[odd].shape[0]}); pass size= to resize "
            f"them, or use load_photos() to keep each at its own size"
        )
    return np.stack(images)


def resized(ds: ImageSet, size: tuple[int, int] | None) -> ImageSet:
    if size is None or ds.image_shape[:2] == size:
        return ds
    imgs = np.stack([resize_image(im, size) for im in ds.images])
    return ImageSet(imgs, ds.labels, ds.classes, ds.names, ds.source)
