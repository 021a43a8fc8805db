"""Privacy of collaborative learning against gradient inversion, scored: attack a model at a training stage with or
without a transformation policy, and measure PSNR, SSIM and model-based recognition (MR) of the reconstructions;
export them as a human-in-the-loop (HitL) rating set.

The client side is simulated faithfully: each private image is transformed by the policy (a fresh draw), the client
computes its gradient on the transformed image, and the attacker sees only that gradient (and the label, by
default). Reconstructions are compared with the *original* private image -- what the defence protects -- and, for
reference, with the transformed one the gradient came from (the ATS code reports the latter).

Rating sets (``export_rating_set``) are written in :mod:`masquerade.hitl.ratingset`'s format by its writer; a
``ratings.csv`` of ``rater,id,choice`` rows beside them (``masquerade hitl results --csv`` writes one) is scored by
``score_ratings``.
"""

from __future__ import annotations

import copy
import csv
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from masquerade.ats.adaptive import AdaptiveResult, ATSAdaptive
from masquerade.ats.policies import _OP_OF, ATSKey, ATSPolicy, transform
from masquerade.attacks.gradient_inversion import GradientInversion, per_sample_gradients
from masquerade.devices import DeviceLike, model_device, resolve_device, same_device
from masquerade.errors import InputError
from masquerade.metrics import psnr, recognition_accuracy, ssim
from masquerade.metrics.ssim import ssim_map
from masquerade.registry import ATTACKS
from masquerade.rng import RngLike, as_generator

__all__ = ["attack_model", "summary", "export_rating_set", "score_ratings", "kept_pixels", "kept_scores"]

# operations that move pixels (and may push some out of the image)
_MOVES = ("translateX", "translateY", "shearX", "shearY", "rotate", "zoom", "warp")


def kept_pixels(key: ATSKey) -> torch.Tensor:
    """N×1×H×W: 1 where a private image's pixel survives its transformation (some output pixel is read from it),
    0 where the draws destroyed it (pushed out of the image by a translation, rotation, shear, zoom or warp).
    Found by sending images that encode each pixel's coordinates through the draws' geometric steps."""
    key.validate()
    n, (_, h, w) = key.n, key.shape
    steps = np.where(np.isin(_OP_OF[key.steps], _MOVES), key.steps, -1)
    kept = torch.zeros(n, h * w)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 250  # coordinates as base-250 digits, one 8-bit level apart at most 250 of them
    hi_r, lo_r, hi_c, lo_c = rows // base, rows % base, cols // base, cols % base
    digits = [(lo_r, lo_c)] if max(h, w) <= base else [(lo_r, lo_c), (hi_r, hi_c)]
    found = []
    for r, c in digits:
        step = max(1, 254 // (int(max(r.max(), c.max())) + 1))
        code = torch.stack([(c + 1) * step, (r + 1) * step, torch.full_like(r, 255)]).float() / 255
        out = transform(code[None].expand(n, 3, h, w).contiguous(), steps, key.sign, key.extra, key.seeds)
        inside = out[:, 2] == 1  # the fills are black, grey or noise < 255
        dec_c = torch.round(out[:, 0] * 255 / step).long() - 1
        dec_r = torch.round(out[:, 1] * 255 / step).long() - 1
        found.append((inside, dec_r, dec_c))
    inside = found[0][0]
    r_all, c_all = found[0][1], found[0][2]
    if len(found) > 1:
        r_all, c_all = r_all + base * found[1][1], c_all + base * found[1][2]
    ok = inside & (r_all >= 0) & (r_all < h) & (c_all >= 0) & (c_all < w)
    flat = torch.where(ok, r_all * w + c_all, torch.zeros_like(r_all)).view(n, -1)
    kept.scatter_reduce_(1, flat, ok.view(n, -1).float(), reduce="amax")  # a miss never hides a hit
    return kept.view(n, 1, h, w)


def kept_scores(
    reconstructions: torch.Tensor,
    images: torch.Tensor,
    kept: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR and SSIM of each reconstruction on the pixels ``kept`` (N×1×H×W, from :func:`kept_pixels`): PSNR of
    the kept pixels; SSIM averaged over the windows (``win_size``², uniform, as :func:`masquerade.metrics.ssim`)
    that lie wholly on kept pixels (NaN where no window does). With every pixel kept they are PSNR and SSIM."""
    if reconstructions.shape != images.shape or kept.shape != (images.shape[0], 1, *images.shape[2:]):
        raise InputError(
            f"kept_scores: reconstructions {tuple(reconstructions.shape)}, images "
            f"{tuple(images.shape)} and kept {tuple(kept.shape)} do not fit"
        )
    x, y = reconstructions.to(torch.float64), images.to(torch.float64)
    m = (kept > 0.5).to(torch.float64)
    count = m.sum((1, 2, 3)) * x.shape[1]
    err = ((x - y).pow(2) * m).sum((1, 2, 3)) / count.clamp_min(1)
    p = torch.where(
        count > 0, 10 * torch.log10(data_range**2 / err.clamp_min(1e-30)), torch.full_like(err, float("nan"))
    )
    smap = ssim_map(x, y, data_range=data_range, win_size=win_size)
    whole = (F.avg_pool2d(m, win_size, stride=1) > 1 - 1e-9).to(torch.float64)  # windows wholly on kept pixels
    windows = whole.sum((1, 2, 3))
    s = (smap * whole).sum((1, 2, 3)) / (windows * x.shape[1]).clamp_min(1)
    return p, torch.where(windows > 0, s, torch.full_like(s, float("nan")))


def attack_model(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    policy: str = "none",
    always: bool = False,
    attack: str | GradientInversion = "inverting_gradients",
    attack_settings: dict[str, Any] | None = None,
    known_labels: bool = True,
    classifier: torch.nn.Module | None = None,
    rng: RngLike = None,
    progress: bool | None = None,
    device: DeviceLike = None,
) -> dict[str, Any]:
    """Each image is one client update (batch 1): transform by ``policy``, share the gradient, reconstruct.

    ``model`` takes [0, 1] images. Returns the reconstructions, the transformed images, per-image PSNR/SSIM against
    the originals (and against the transformed images), PSNR/SSIM on the pixels the transformation keeps
    (``kept``: N×1×H×W, :func:`kept_scores`) and, with ``classifier``, the MR accuracy.

    An attack that adapts to the policy (``ats-adaptive``) is told the clients' ``policy`` and ``always`` (public
    knowledge), unless its settings already name a policy (an adversary's own assumption, kept as given).

    ``device``: where the clients' gradients and the inversion run (default: where ``model`` is; otherwise a copy of
    it goes there; the policy transforms images on the CPU); everything returned is on the CPU, so ``classifier``
    (MR) takes CPU images.
    """
    if images.ndim != 4 or len(images) != len(labels):
        raise InputError("attack_model: images must be N×C×H×W with one label each")
    g = as_generator(rng)
    sch = ATSPolicy(policy=policy, always=always)
    seed = int(g.integers(0, 2**62))
    key = sch.keygen(len(images), rng=g, shape=tuple(images.shape[1:]))
    transformed = sch.encode(images, key)
    labels = torch.as_tensor(labels).long()
    dev = model_device(model) if device is None else resolve_device(device)
    if not same_device(model_device(model), dev):
        model = copy.deepcopy(model).to(dev)
    model.eval()
    with torch.no_grad():
        grads = per_sample_gradients(model, transformed.to(dev), labels.to(dev))
    atk = attack if isinstance(attack, GradientInversion) else ATTACKS.get(attack)(**(attack_settings or {}))
    if not isinstance(atk, GradientInversion):
        raise InputError(f"attack_model: {atk.name} is not a gradient inversion attack")
    if isinstance(atk, ATSAdaptive) and atk.settings.policy is None:
        atk = atk.with_policy(sch.settings.policy, bool(always))  # Kerckhoffs: the policy is public
    t0 = time.perf_counter()
    results = atk.run_many(
        model=model,
        gradients=grads,
        labels=labels[:, None] if known_labels else None,
        shape=tuple(images.shape[1:]),
        batch=1,
        rng=seed,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    rec = torch.cat([r.images for r in results])
    kept = kept_pixels(key)
    p_kept, s_kept = kept_scores(rec, images, kept)
    out: dict[str, Any] = {
        "reconstructions": rec,
        "transformed": transformed,
        "policy": sch.settings.policy,
        "always": always,
        "psnr": psnr(rec, images, data_range=1.0),
        "ssim": ssim(rec, images, data_range=1.0),
        "psnr_transformed": psnr(rec, transformed, data_range=1.0),
        "kept": kept,
        "psnr_kept": p_kept,
        "ssim_kept": s_kept,
        "candidates": [r.candidate if isinstance(r, AdaptiveResult) else "" for r in results],
        "loss": [r.loss for r in results],
        "labels_used": torch.stack([r.labels[0] for r in results]),
        "seconds": seconds,
        "iterations": atk.settings.iterations,
        "attack": atk.name,
    }
    if classifier is not None:
        out["mr"] = recognition_accuracy(classifier, rec, labels)
        out["mr_originals"] = recognition_accuracy(classifier, images, labels)
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Mean PSNR/SSIM (and MR) of an :func:`attack_model` result, as plain numbers."""
    s = {
        "psnr": float(result["psnr"].mean()),
        "ssim": float(result["ssim"].mean()),
        "psnr_vs_transformed": float(result["psnr_transformed"].mean()),
    }
    if "psnr_kept" in result:
        s["psnr_kept"] = float(np.nanmean(result["psnr_kept"].numpy()))
        s["ssim_kept"] = float(np.nanmean(result["ssim_kept"].numpy()))
        s["kept"] = float(result["kept"].mean())
    if "mr" in result:
        s["mr"] = float(result["mr"])
    return s


def export_rating_set(
    folder: str | Path,
    groups: dict[str, torch.Tensor],
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    rng: RngLike = None,
    question: str = "Which class does this image show? Answer 'unrecognisable' if you cannot tell.",
) -> Path:
    """Write a rating set (:mod:`masquerade.hitl.ratingset`'s format, by its one writer): ``groups`` maps a
    condition name (e.g. ``"original"``, ``"none@epoch1"``) to N×C×H×W images in [0, 1], all of the same N private
    images; each item's answer keeps its ``label``, ``class`` and ``source`` (the private image's index)."""
    from masquerade.hitl.ratingset import write_rating_set

    labels = [int(v) for v in labels]
    items = []
    for cond, imgs in groups.items():
        if len(imgs) != len(labels):
            raise InputError(f"rating set: condition {cond!r} has {len(imgs)} images for {len(labels)} labels")
        arrays = (imgs.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        items += [
            (cond, arrays[i], {"label": labels[i], "class": str(class_names[labels[i]]), "source": i})
            for i in range(len(imgs))
        ]
    return write_rating_set(
        folder,
        items,
        question_type="choice",
        question=question,
        choices=[str(c) for c in class_names],
        rng=as_generator(rng),
    )


def score_ratings(folder: str | Path) -> dict[str, dict[str, float]]:
    """Per condition: the share of ratings in ``ratings.csv`` that name the true class (HitL recognition); for an
    appeal set (``question_type: appeal``, see :mod:`masquerade.hitl.ratingset`), the mean 1-5 rating instead."""
    from masquerade.hitl.ratingset import load_rating_set, read_answers

    rs = load_rating_set(folder)
    answers = read_answers(rs)  # every item's condition (and true class), checked
    appeal = rs.question_type == "appeal"
    folder = rs.folder
    path = folder / "ratings.csv"
    if not path.is_file():
        raise InputError(f"{folder}: no ratings.csv yet (rows: rater,id,choice)")
    hits: dict[str, list[int]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            a = answers.get(row.get("id", "")) if row.get("id", "") in rs.items else None
            if a is None:
                raise InputError(f"{path}: unknown item id {row.get('id')!r}")
            choice = row.get("choice", "").strip()
            if appeal and choice not in ("1", "2", "3", "4", "5"):
                raise InputError(f"{path}: appeal rating {choice!r} is not 1 to 5")
            hits.setdefault(a["condition"], []).append(int(choice) if appeal else int(choice == a["class"]))
    key = "appeal" if appeal else "recognised"
    return {c: {key: float(np.mean(v)), "ratings": float(len(v))} for c, v in sorted(hits.items())}
