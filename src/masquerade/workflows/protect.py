"""Protect a data set with a scheme (encodings + a key file kept apart), and reveal it again with the key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from masquerade.errors import InputError, NotInvertibleError

__all__ = ["protect", "reveal", "load_features", "public_pool_for"]

PathLike = str | os.PathLike[str]


def public_pool_for(scheme: Any, n_images: int, image_shape: tuple[int, int, int], public: PathLike | None, *,
                    patches: int = 10000, seed: int | None = None) -> Any:
    """The public patch pool a cross-mode scheme mixes in (None for other schemes): loaded from a patch ``.npz`` or
    cut from photos, one patch per public slot of every image, at most ``patches``."""
    from masquerade.instahide.challenge import public_pool

    s = scheme.settings
    if getattr(s, "mode", "") != "cross":
        return None
    if not public:
        raise InputError(f"{scheme.name} in cross mode needs --public (photos or a patch .npz: the public pool)")
    h, _, c = image_shape
    if c == 1:
        raise InputError("cross-dataset InstaHide mixes colour patches: the private images must be colour too")
    return public_pool(public, min(patches, n_images * (s.k - s.p)), size=h, rng=seed)


def _check_key_apart(key: Path, out: Path) -> None:
    if key.resolve().is_relative_to(out.resolve()):
        raise InputError(f"{key}: keep the key apart from the data (--key must not be inside {out})")


def load_features(path: PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Float32 features from a .npy, or from a .npz (the array named ``features``, or its only array); the other
    arrays of a .npz (labels, names) are passed along untouched."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise InputError(f"{path}: expected a .npy or .npz file of float32 features")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a numeric array file ({exc})") from None
    others: dict[str, np.ndarray] = {}
    if isinstance(loaded, np.ndarray):
        feats = loaded
    else:
        with loaded:
            names = list(loaded.files)
            name = "features" if "features" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise InputError(f"{path}: holds {names}; name the feature array 'features'")
            feats = loaded[name]
            others = {k: loaded[k] for k in names if k != name}
    if feats.dtype != np.float32 or feats.ndim < 2:
        raise InputError(f"{path}: expected float32 features N × D, got {feats.dtype} {feats.shape}")
    return feats, others


def protect(data: PathLike, scheme: str, *, out: PathLike, key: PathLike, settings: dict[str, Any] | None = None,
            public: PathLike | None = None, public_patches: int = 10000, seed: int | None = None,
            force: bool = False, run_out: PathLike | None = None) -> dict[str, Any]:
    """Protect ``data`` (images: folder, .npz, CIFAR archive, ``bundled:NAME``; features: .npy/.npz) with
    ``scheme``: encodings (and mixed labels) into ``out``, the key into ``key`` (apart from ``out``). ``seed`` makes
    a reproducible experiment; without it the key comes from the OS CSPRNG. Returns a summary."""
    from masquerade.data import load_images
    from masquerade.fileio import save_npy, save_npz
    from masquerade.keys import save_key
    from masquerade.registry import create_scheme
    from masquerade.rng import as_generator
    from masquerade.runs import start_run

    out, keyfile = Path(out), Path(key)
    _check_key_apart(keyfile, out)
    if keyfile.exists() and not force:
        raise InputError(f"{keyfile}: exists; refusing to overwrite a key (use --force)")
    sch = create_scheme(scheme, **(settings or {}))
    gen = as_generator(seed)
    if sch.data_kind == "features":
        feats, others = load_features(data)
        with start_run("protect", out=run_out) as run:
            k = sch.keygen(len(feats), rng=gen, shape=feats.shape[1:])
            z = sch.encode(feats, k)
            save_npy(out / "features.npy", z)  # float32 bit patterns, written as they are
            if others:
                save_npz(out / "extra.npz", **others)
            save_key(keyfile, k)
            run.write_config({"scheme": scheme, "settings": str(sch.settings), "input": str(data), "out": str(out)},
                             seed=seed, keys={"protect": k})
            run.add_metrics(vectors=len(feats), features_shape=list(feats.shape))
        return {"kind": "features", "count": len(feats), "out": out / "features.npy", "key": keyfile,
                "fingerprint": k.fingerprint, "run": run.path}
    images = load_images(data)
    h, w, c = images.image_shape
    pool = public_pool_for(sch, len(images), images.image_shape, public, patches=public_patches, seed=seed)
    with start_run("protect", out=run_out) as run:
        k = sch.keygen(len(images), rng=gen, shape=(c, h, w), pool_size=0 if pool is None else len(pool))
        z = sch.encode(images.to_tensor(), k, public=None if pool is None else pool.to_tensor())
        save_npy(out / "encodings.npy", np.ascontiguousarray(z.permute(0, 2, 3, 1).numpy()))
        mix_labels = getattr(sch, "mix_labels", None)
        if images.labels is not None and mix_labels is not None:
            save_npy(out / "labels.npy", mix_labels(images.labels, k, images.num_classes).numpy())
        if pool is not None:
            save_npz(keyfile.with_name(keyfile.name.replace(".safetensors", "") + ".public.npz"),
                     images=pool.images, names=np.array(pool.names))
        save_key(keyfile, k)
        run.write_config({"scheme": scheme, "settings": str(sch.settings), "input": str(data), "out": str(out)},
                         seed=seed, keys={"protect": k})
        run.add_metrics(images=len(images), encodings_shape=list(z.shape))
        run.save_grid("encodings", (z[:32].abs().clamp(0, 1)), ncol=8, scale=2, caption="|encodings| (first 32)")
    return {"kind": "images", "count": len(images), "out": out / "encodings.npy", "key": keyfile,
            "fingerprint": k.fingerprint, "run": run.path}


def reveal(data: PathLike, scheme: str, *, key: PathLike, out: PathLike, public: PathLike | None = None
           ) -> dict[str, Any]:
    """Decode what :func:`protect` wrote (``encodings.npy`` or ``features.npy``) with its key: images to an ``.npz``
    (uint8), features to an ``.npy``. Returns a summary."""
    import torch

    from masquerade.data import load_images, to_uint8
    from masquerade.fileio import save_npy, save_npz
    from masquerade.keys import load_key
    from masquerade.registry import create_scheme

    k = load_key(key, expect=scheme)
    sch = create_scheme(scheme, **dataclasses.asdict(k.settings))  # type: ignore[attr-defined]
    if not sch.invertible:
        raise NotInvertibleError(f"{scheme} cannot be decoded, even with its key")
    path, out = Path(data), Path(out)
    if sch.data_kind == "features":
        feats, _ = load_features(path)
        if out.suffix != ".npy":
            raise InputError(f"{out}: decrypted features are written as .npy")
        plain = sch.decode(feats, k)
        save_npy(out, plain)
        return {"kind": "features", "count": len(plain), "out": out, "fingerprint": k.fingerprint}
    if path.suffix != ".npy":
        raise InputError(f"{path}: reveal reads the encodings.npy that protect wrote")
    if out.suffix != ".npz":
        raise InputError(f"{out}: revealed images are written as .npz")
    try:
        enc = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a numeric .npy array ({exc})") from None
    if enc.ndim != 4 or enc.dtype != np.float32:
        raise InputError(f"{path}: expected float32 N×H×W×C encodings, got {enc.dtype} {enc.shape}")
    z = torch.from_numpy(np.ascontiguousarray(enc.transpose(0, 3, 1, 2)))
    pub = None
    if getattr(k, "pool_size", 0):
        pub_path = Path(public) if public else Path(key).with_name(
            Path(key).name.replace(".safetensors", "") + ".public.npz")
        pub = load_images(pub_path).to_tensor()
    x = sch.decode(z, k, public=pub)
    images = to_uint8(x).permute(0, 2, 3, 1).numpy()
    save_npz(out, images=images)
    return {"kind": "images", "count": len(images), "out": out, "fingerprint": k.fingerprint}
