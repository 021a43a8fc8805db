"""Privacy of collaborative learning against gradient inversion, scored: attack a model at a training stage with or
without a transformation policy, and measure PSNR, SSIM and model-based recognition (MR) of the reconstructions;
export them as a human-in-the-loop (HitL) rating set.

The client side is simulated faithfully: each private image is transformed by the policy (a fresh draw), the client
computes its gradient on the transformed image, and the attacker sees only that gradient (and the label, by
default). Reconstructions are compared with the *original* private image -- what the defence protects -- and, for
reference, with the transformed one the gradient came from (the ATS code reports the latter).

Rating-set format (``export_rating_set``), version 1, a folder of:

- ``images/<id>.png``: one 8-bit RGB PNG per item, ids are opaque (``r0000``, ``r0001``, ...) and shuffled, so
  nothing in a name or the order gives the condition away;
- ``manifest.json``: what raters see: ``{"format": "masquerade-rating-set", "version": 1, "question": ...,
  "choices": [class names], "items": [{"id": ..., "image": "images/<id>.png"}, ...]}``;
- ``answers.json``: kept from raters: ``{"<id>": {"condition": ..., "label": int, "class": name, "source": int}}``
  (``condition`` names the defence and training stage; ``source`` the index of the private image);
- ``ratings.csv`` (written by whatever collects the ratings): ``rater,id,choice`` rows, ``choice`` a class name or
  ``unrecognisable``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from masquerade.ats.inversion import _GradientInversion, per_sample_gradients
from masquerade.ats.policies import ATSPolicy
from masquerade.errors import InputError
from masquerade.fileio import write_text
from masquerade.metrics import psnr, recognition_accuracy, ssim
from masquerade.registry import ATTACKS
from masquerade.rng import RngLike, as_generator

__all__ = ["attack_model", "summary", "export_rating_set", "score_ratings"]


def attack_model(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, policy: str = "none",
                 always: bool = False, attack: str | _GradientInversion = "inverting_gradients",
                 attack_settings: dict[str, Any] | None = None, known_labels: bool = True,
                 classifier: torch.nn.Module | None = None, rng: RngLike = None,
                 progress: bool | None = None) -> dict[str, Any]:
    """Each image is one client update (batch 1): transform by ``policy``, share the gradient, reconstruct.

    ``model`` takes [0, 1] images. Returns the reconstructions, the transformed images, per-image PSNR/SSIM against
    the originals (and against the transformed images) and, with ``classifier``, the MR accuracy.
    """
    if images.ndim != 4 or len(images) != len(labels):
        raise InputError("attack_model: images must be N×C×H×W with one label each")
    g = as_generator(rng)
    sch = ATSPolicy(policy=policy, always=always)
    seed = int(g.integers(0, 2**62))
    transformed = sch.encode(images, sch.keygen(len(images), rng=g, shape=tuple(images.shape[1:])))
    labels = torch.as_tensor(labels).long()
    model.eval()
    with torch.no_grad():
        grads = per_sample_gradients(model, transformed, labels)
    atk = attack if isinstance(attack, _GradientInversion) else ATTACKS.get(attack)(**(attack_settings or {}))
    if not isinstance(atk, _GradientInversion):
        raise InputError(f"attack_model: {atk.name} is not a gradient inversion attack")
    t0 = time.perf_counter()
    results = atk.run_many(model=model, gradients=grads, labels=labels[:, None] if known_labels else None,
                           shape=tuple(images.shape[1:]), batch=1, rng=seed, progress=progress)
    seconds = time.perf_counter() - t0
    rec = torch.cat([r.images for r in results])
    out: dict[str, Any] = {
        "reconstructions": rec, "transformed": transformed, "policy": sch.settings.policy, "always": always,
        "psnr": psnr(rec, images, data_range=1.0), "ssim": ssim(rec, images, data_range=1.0),
        "psnr_transformed": psnr(rec, transformed, data_range=1.0),
        "loss": [r.loss for r in results], "labels_used": torch.stack([r.labels[0] for r in results]),
        "seconds": seconds, "iterations": atk.settings.iterations, "attack": atk.name}
    if classifier is not None:
        out["mr"] = recognition_accuracy(classifier, rec, labels)
        out["mr_originals"] = recognition_accuracy(classifier, images, labels)
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Mean PSNR/SSIM (and MR) of an :func:`attack_model` result, as plain numbers."""
    s = {"psnr": float(result["psnr"].mean()), "ssim": float(result["ssim"].mean()),
         "psnr_vs_transformed": float(result["psnr_transformed"].mean())}
    if "mr" in result:
        s["mr"] = float(result["mr"])
    return s


def export_rating_set(folder: str | Path, groups: dict[str, torch.Tensor], labels: Sequence[int],
                      class_names: Sequence[str], *, rng: RngLike = None,
                      question: str = "Which class does this image show? Answer 'unrecognisable' if you "
                                      "cannot tell.") -> Path:
    """Write a rating set (format in the module docstring): ``groups`` maps a condition name (e.g.
    ``"original"``, ``"none@epoch1"``) to N×C×H×W images in [0, 1], all of the same N private images."""
    from PIL import Image

    folder = Path(folder)
    if (folder / "manifest.json").exists():
        raise InputError(f"{folder}: already holds a rating set")
    labels = [int(v) for v in labels]
    items = []
    for cond, imgs in groups.items():
        if len(imgs) != len(labels):
            raise InputError(f"rating set: condition {cond!r} has {len(imgs)} images for {len(labels)} labels")
        for i in range(len(imgs)):
            items.append((cond, i, imgs[i]))
    order = as_generator(rng).permutation(len(items))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest, answers = [], {}
    for pos, j in enumerate(order):
        cond, i, img = items[j]
        rid = f"r{pos:04d}"
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr.squeeze(-1) if arr.shape[2] == 1 else arr).save(folder / "images" / f"{rid}.png")
        manifest.append({"id": rid, "image": f"images/{rid}.png"})
        answers[rid] = {"condition": cond, "label": labels[i], "class": str(class_names[labels[i]]), "source": i}
    write_text(folder / "manifest.json", json.dumps({"format": "masquerade-rating-set", "version": 1,
                                                    "question": question, "choices": [str(c) for c in class_names],
                                                    "items": manifest}, indent=1) + "\n")
    write_text(folder / "answers.json", json.dumps(answers, indent=1) + "\n")
    return folder


def score_ratings(folder: str | Path) -> dict[str, dict[str, float]]:
    """Per condition: the share of ratings in ``ratings.csv`` that name the true class (HitL recognition); for an
    appeal set (``question_type: appeal``, see :mod:`masquerade.hitl.ratingset`), the mean 1-5 rating instead."""
    folder = Path(folder)
    answers = json.loads((folder / "answers.json").read_text())
    appeal = json.loads((folder / "manifest.json").read_text()).get("question_type") == "appeal"
    path = folder / "ratings.csv"
    if not path.is_file():
        raise InputError(f"{folder}: no ratings.csv yet (rows: rater,id,choice)")
    hits: dict[str, list[int]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            a = answers.get(row.get("id", ""))
            if a is None:
                raise InputError(f"{path}: unknown item id {row.get('id')!r}")
            choice = row.get("choice", "").strip()
            if appeal and choice not in ("1", "2", "3", "4", "5"):
                raise InputError(f"{path}: appeal rating {choice!r} is not 1 to 5")
            hits.setdefault(a["condition"], []).append(int(choice) if appeal else int(choice == a["class"]))
    key = "appeal" if appeal else "recognised"
    return {c: {key: float(np.mean(v)), "ratings": float(len(v))} for c, v in sorted(hits.items())}
