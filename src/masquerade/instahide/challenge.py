"""The InstaHide Challenge: make one, score recoveries against it.

``make_challenge`` follows the official recipe: choose ``n_private`` images balanced over classes, then ``per_image``
passes; in each pass every private image is slot 0 once, slot 1 comes from a fresh permutation of the private set
and slots 2..k-1 from fresh permutations of the public pool (SIFT-filtered patches), coefficients with upper 0.65
and dom 0.3, pixels in [-1, 1], a one-time sign mask. The encodings are shuffled (so their order leaks nothing) and
written as ``encryption.npy`` (float32 E×H×W×C, signs kept) with ``label.npy`` (the coefficient-weighted one-hots of
the two private labels, as the challenge released). Everything else goes to the separate truth folder.

``score_challenge`` computes the challenge's metric: for encoding i with private images a and b,
Max_SSIM = max(SSIM(r_i, a), SSIM(r_i, b)) on uint8 images (``channel_axis=-1, data_range=255``), success when it
exceeds 0.8; RMSE on the [0, 1] scale likewise; and per private image the best SSIM over its encodings' recoveries.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masquerade.data import ImageSet
from masquerade.data.patches import public_pool  # its home is data/; the old import keeps working a release
from masquerade.errors import InputError
from masquerade.fileio import save_npy, save_npz, write_json
from masquerade.instahide.scheme import InstaHide
from masquerade.metrics import rmse, ssim
from masquerade.metrics.privacy import SUCCESS_SSIM
from masquerade.progress import track
from masquerade.registry import create_scheme
from masquerade.rng import RngLike, as_generator

__all__ = [
    "make_challenge",
    "score_challenge",
    "load_recovered",
    "public_pool",
    "baseline_recovery",
    "ChallengeTruth",
    "read_truth",
    "SUCCESS_SSIM",
]

TRUTH_FILES = (
    "private_images.npy",
    "private_labels.npy",
    "private_pairs.npy",
    "coefficients.npy",
    "public_indices.npy",
    "manifest.json",
)


def _balanced(private: ImageSet, n: int, gen: np.random.Generator) -> np.ndarray:
    if n > len(private):
        raise InputError(f"challenge: n_private={n} but only {len(private)} private images were given")
    if private.labels is None:
        return np.sort(gen.choice(len(private), n, replace=False))
    classes = np.unique(private.labels)
    base, extra = divmod(n, len(classes))
    bonus = set(gen.choice(classes, extra, replace=False).tolist()) if extra else set()
    chosen = []
    for c in classes:
        members = np.flatnonzero(private.labels == c)
        want = base + (1 if c in bonus else 0)
        if len(members) < want:
            raise InputError(f"challenge: class {c} has {len(members)} images, {want} needed for a balanced choice")
        chosen.append(gen.choice(members, want, replace=False))
    return np.sort(np.concatenate(chosen))


def make_challenge(
    private: ImageSet,
    public: ImageSet,
    out: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    n_private: int = 100,
    per_image: int = 50,
    k: int = 6,
    upper: float = 0.65,
    dom: float = 0.3,
    rng: RngLike = None,
) -> dict[str, Any]:
    """Write a challenge to ``out`` and its ground truth to ``truth``; returns a summary (fingerprints, sizes)."""
    out, truth = Path(out), Path(truth)
    if out.resolve() == truth.resolve() or truth.resolve().is_relative_to(out.resolve()):
        raise InputError("challenge: the truth folder must be outside the challenge folder")
    for d in (out, truth):
        if d.exists() and any(d.iterdir()):
            raise InputError(f"{d}: exists and is not empty")
    if private.labels is None:
        raise InputError("challenge: the private images need labels (label.npy releases them mixed)")
    if k < 3:
        raise InputError("challenge: k must be at least 3 (2 private images and at least one public patch)")
    if n_private < 2 or per_image < 1:
        raise InputError("challenge: n_private must be >= 2 and per_image >= 1")
    gen = as_generator(rng)
    chosen = _balanced(private, n_private, gen)
    priv = private.select(chosen).to_rgb()
    pub = public.to_rgb()
    h, w, c = priv.image_shape
    if pub.image_shape != (h, w, c):
        raise InputError(f"challenge: public patches are {pub.image_shape}, private images {priv.image_shape}")
    scheme = create_scheme(
        "instahide", k=k, mode="cross", private_per_mix=2, upper=upper, dom=dom, pixel_scale="[-1,1]"
    )
    assert isinstance(scheme, InstaHide)
    x, p = priv.to_tensor(), pub.to_tensor()
    num_classes = max(private.num_classes, int(priv.labels.max()) + 1)
    encs, labels, pairs, lams, pubidx, prints = [], [], [], [], [], []
    for _ in track(range(per_image), total=per_image, desc="challenge passes", unit="pass"):
        key = scheme.keygen(n_private, rng=gen, shape=(c, h, w), pool_size=len(pub))
        encs.append(scheme.encode(x, key, public=p))
        labels.append(scheme.mix_labels(priv.labels, key, num_classes))
        pairs.append(key.partners[:, :2])
        pubidx.append(key.partners[:, 2:])
        lams.append(key.lam)
        prints.append(key.fingerprint)
    order = gen.permutation(n_private * per_image)
    enc = torch.cat(encs).permute(0, 2, 3, 1).numpy()[order]
    save_npy(out / "encryption.npy", np.ascontiguousarray(enc, dtype=np.float32))
    save_npy(out / "label.npy", torch.cat(labels).numpy()[order])
    save_npy(truth / "private_images.npy", priv.images)
    save_npy(truth / "private_labels.npy", priv.labels)
    save_npy(truth / "private_pairs.npy", np.concatenate(pairs)[order])
    save_npy(truth / "coefficients.npy", np.concatenate(lams)[order])
    save_npy(truth / "public_indices.npy", np.concatenate(pubidx)[order])
    save_npz(truth / "public_patches.npz", images=pub.images, names=np.array(pub.names))
    manifest = {
        "n_private": n_private,
        "per_image": per_image,
        "encodings": int(len(order)),
        "k": k,
        "upper": upper,
        "dom": dom,
        "pixel_scale": "[-1,1]",
        "classes": list(private.classes),
        "private_names": list(priv.names),
        "source_indices": chosen.tolist(),
        "pass_key_fingerprints": prints,
        "public_patches": len(pub),
    }
    write_json(truth / "manifest.json", manifest)
    return {
        "encodings": int(len(order)),
        "n_private": n_private,
        "per_image": per_image,
        "k": k,
        "public_patches": len(pub),
        "pass_key_fingerprints": prints,
    }


@dataclass(frozen=True)
class ChallengeTruth:
    private_images: np.ndarray  # uint8 n×H×W×C
    private_labels: np.ndarray
    pairs: np.ndarray  # int E×2
    coefficients: np.ndarray  # float E×k


def read_truth(truth: str | os.PathLike[str]) -> ChallengeTruth:
    t = Path(truth)
    missing = [f for f in TRUTH_FILES[:4] if not (t / f).is_file()]
    if missing:
        raise InputError(f"{t}: not a challenge truth folder (missing {', '.join(missing)})")
    load = lambda name: np.load(t / name, allow_pickle=False)  # noqa: E731
    return ChallengeTruth(
        load("private_images.npy"), load("private_labels.npy"), load("private_pairs.npy"), load("coefficients.npy")
    )


_RECOVER = re.compile(r"^(\d+)_recover\.(png|jpe?g)$", re.IGNORECASE)


def load_recovered(path: str | os.PathLike[str], count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Recoveries as uint8 E×H×W×C from a folder of ``i_recover.png|jpg``, an ``.npy`` (uint8, or floats in
    [0, 1]), or an attack's output folder (its ``decryption.npy``)."""
    from masquerade.data.loaders import decode_image

    p = Path(path)
    if p.is_dir() and (p / "decryption.npy").is_file() and not any(_RECOVER.match(f.name) for f in p.iterdir()):
        p = p / "decryption.npy"
    if p.is_file() and p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{p}: not a numeric .npy array ({exc})") from None
        if arr.dtype != np.uint8:
            if arr.dtype.kind != "f" or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise InputError(
                    f"{p}: recoveries must be uint8, or floats in [0, 1]; got {arr.dtype} in [{arr.min()}, {arr.max()}]"
                )
            arr = np.round(arr * 255).astype(np.uint8)
        if arr.ndim == 3 and shape[2] == 1:
            arr = arr[..., None]
        if arr.shape != (count, *shape):
            raise InputError(f"{p}: recoveries have shape {arr.shape}, expected {(count, *shape)}")
        return arr
    if not p.is_dir():
        raise InputError(f"{p}: recoveries are a folder of i_recover.png files or an .npy array")
    found: dict[int, Path] = {}
    for f in p.iterdir():
        m = _RECOVER.match(f.name)
        if m:
            found[int(m.group(1))] = f
    missing = [i for i in range(count) if i not in found]
    if missing:
        shown = ", ".join(f"{i}_recover.png" for i in missing[:10])
        raise InputError(
            f"{p}: {len(missing)} of {count} recoveries are missing ({shown}{', …' if len(missing) > 10 else ''})"
        )
    out = np.empty((count, *shape), np.uint8)
    wrong = []
    for i in range(count):
        img = decode_image(found[i], name=str(found[i]), channels=shape[2])
        if img.shape != shape:
            wrong.append(f"{found[i].name} is {img.shape[1]}×{img.shape[0]}")
            continue
        out[i] = img
    if wrong:
        raise InputError(f"{p}: {len(wrong)} recoveries are not {shape[1]}×{shape[0]}: {'; '.join(wrong[:5])}")
    return out


def score_challenge(truth: str | os.PathLike[str], recovered: str | os.PathLike[str] | np.ndarray) -> dict[str, Any]:
    """The challenge's scores for recoveries (see module docstring); arrays per encoding and per private image."""
    t = read_truth(truth)
    e = len(t.pairs)
    shape = tuple(int(v) for v in t.private_images.shape[1:])
    if isinstance(recovered, np.ndarray):
        rec = recovered
        if rec.dtype != np.uint8 or rec.shape != (e, *shape):
            raise InputError(f"recoveries must be uint8 {(e, *shape)}, got {rec.dtype} {rec.shape}")
    else:
        rec = load_recovered(recovered, e, shape)  # type: ignore[arg-type]
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    r = to(rec)
    a = to(t.private_images[t.pairs[:, 0]])
    b = to(t.private_images[t.pairs[:, 1]])
    sa, sb = ssim(r, a, data_range=255).numpy(), ssim(r, b, data_range=255).numpy()
    ea, eb = rmse(r, a, data_range=255).numpy(), rmse(r, b, data_range=255).numpy()
    max_ssim = np.maximum(sa, sb)
    best = np.full(len(t.private_images), -1.0)
    np.maximum.at(best, t.pairs[:, 0], sa)
    np.maximum.at(best, t.pairs[:, 1], sb)
    return {
        "encodings": e,
        "private_images": len(t.private_images),
        "success_rate": float((max_ssim > SUCCESS_SSIM).mean()),
        "mean_max_ssim": float(max_ssim.mean()),
        "mean_mean_ssim": float(((sa + sb) / 2).mean()),
        "mean_min_rmse": float(np.minimum(ea, eb).mean()),
        "mean_mean_rmse": float(((ea + eb) / 2).mean()),
        "private_recovered": int((best > SUCCESS_SSIM).sum()),
        "per_encoding_max_ssim": max_ssim,
        "per_image_best_ssim": best,
    }


def baseline_recovery(encryption: np.ndarray) -> np.ndarray:
    """The trivial baseline: |encoding| (which lies in [0, 1] for [-1, 1] pixels) as uint8 images."""
    return np.clip(np.round(np.abs(encryption) * 255), 0, 255).astype(np.uint8)


def summary_json(scores: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in scores.items() if not isinstance(v, np.ndarray)}, indent=2)
