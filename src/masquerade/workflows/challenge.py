"""The InstaHide Challenge as workflows: make one, attack one (resumable), prepare the attack's prior, score."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["make", "attack", "prepare", "score"]

PathLike = str | os.PathLike[str]


def make(
    private: PathLike,
    public: PathLike,
    *,
    out: PathLike,
    truth: PathLike,
    split: str = "test",
    n_private: int = 100,
    per_image: int = 50,
    k: int = 6,
    seed: int | None = None,
    run_out: PathLike | None = None,
) -> dict[str, Any]:
    """A challenge by the official recipe: ``encryption.npy`` and ``label.npy`` in ``out``, the truth apart."""
    import numpy as np

    from masquerade.data import load_images, public_pool
    from masquerade.instahide.challenge import make_challenge
    from masquerade.runs import start_run

    images = load_images(private, split=split)
    if images.image_shape[2] != 3:
        images = images.to_rgb()
    pool = public_pool(public, n_private * (k - 2), size=images.image_shape[0], rng=seed)
    with start_run("challenge-make", out=run_out) as run:
        summary = make_challenge(images, pool, out, truth, n_private=n_private, per_image=per_image, k=k, rng=seed)
        run.write_config(
            {
                "private": str(private),
                "public": str(public),
                "n_private": n_private,
                "per_image": per_image,
                "k": k,
                "out": str(out),
                "truth": str(truth),
            },
            seed=seed,
        )
        run.add_metrics(**summary)
        enc = np.load(Path(out) / "encryption.npy")[:40]
        run.save_grid(
            "encodings",
            np.clip(np.round(np.abs(enc) * 255), 0, 255).astype(np.uint8),
            ncol=10,
            scale=2,
            caption="|encodings| (first 40)",
        )
    return {**summary, "run": run.path}


def attack(
    challenge: PathLike,
    out: PathLike,
    *,
    settings: Any = None,
    public: PathLike | None = None,
    aux: PathLike | None = None,
    prior: str | None = None,
    log: Callable[[str], None] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Recover the private images from a challenge folder; ``out`` keeps every stage, so a rerun resumes.
    ``device``: where the learned prior runs (default the CPU)."""
    from masquerade.devices import resolve_device
    from masquerade.instahide.attack import ChallengeAttackSettings, attack_challenge
    from masquerade.runs import Run, claim_output_dir

    dev = resolve_device(device)

    given_prior = prior if prior is not None and Path(prior).exists() else None  # not "default" or "none"
    out = claim_output_dir(
        out,
        "challenge-attack",
        inputs=(challenge, public, aux, given_prior),
        own=lambda p: (p / "attack.json").is_file(),
    )
    run = Run(out, "challenge-attack")
    try:
        res = attack_challenge(
            challenge,
            out,
            public=public,
            aux=aux,
            settings=settings or ChallengeAttackSettings(),
            prior=prior,
            log=log or run.log,
            device=dev,
        )
        run.save_grid(
            "private_images",
            res["private_images"],
            ncol=10,
            scale=2,
            caption=f"the {len(res['private_images'])} recovered private images",
        )
        run.add_metrics(**{k: v for k, v in res.items() if k not in ("private_images", "recoveries", "settings")})
    finally:
        run.close()
    return res


def prepare(
    aux: PathLike,
    out: PathLike,
    *,
    public: PathLike | None = None,
    settings: Any = None,
    log: Callable[[str], None] = print,
    device: str | None = None,
) -> dict[str, Any]:
    """Train the attack's learned prior on challenges simulated from ``aux`` (offline, resumable); writes the
    ``.safetensors`` and its ``.json`` record. ``device``: where the denoiser trains (default the CPU)."""
    from masquerade.devices import resolve_device
    from masquerade.fileio import write_json
    from masquerade.instahide.prior import PriorSettings, prepare_prior

    dev = resolve_device(device)
    rec = prepare_prior(aux, out, public=public, settings=settings or PriorSettings(), log=log, device=dev)
    record = Path(out).with_suffix(".json")
    write_json(record, {"file": Path(out).name, **rec})
    return {**rec, "record": record}


def score(truth: PathLike, recovered: PathLike, *, out: PathLike | None = None) -> dict[str, Any]:
    """The challenge's scores of recoveries against the truth; writes a run folder."""
    import json

    from masquerade.instahide.challenge import score_challenge, summary_json
    from masquerade.runs import start_run

    scores = score_challenge(truth, recovered)
    with start_run("challenge-score", out=out) as run:
        run.write_config({"truth": str(truth), "recovered": str(recovered)})
        summary = json.loads(summary_json(scores))
        run.add_metrics(**summary, per_image_best_ssim=[round(float(v), 4) for v in scores["per_image_best_ssim"]])
    return {**scores, "summary_json": summary_json(scores), "run": run.path}
