"""Run any registered attack on files: what its threat model names is loaded and handed over, nothing else.

``attack(name, ...)`` is what ``masquerade attack NAME`` calls. The adversary's inputs come from files: encodings
(``encodings.npy`` from ``protect``, a challenge's ``encryption.npy``, or features), released labels, a public pool,
auxiliary images, known (plain, protected) pairs, a model file, or a feature API (a classifier whose penultimate
features the service returns). Gradient attacks (model + gradients) get the gradients the way a federated client
computes them: on ``data`` images, one client update per image, under an optional ATS policy. ``truth`` (the
originals) is read only *after* the attack, to score what it recovered. Every call writes a run folder: config,
metrics, reconstructions and a grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from masquerade.contracts import Knowledge
from masquerade.errors import InputError
from masquerade.workflows.protect import load_encodings

__all__ = ["attack", "given_inputs", "score_reconstructions", "SOURCES"]

PathLike = str | os.PathLike[str]

# What each kind of knowledge is read from (the keyword of :func:`attack`, its CLI option and what it holds).
SOURCES: dict[Knowledge, tuple[tuple[str, str, str], ...]] = {
    Knowledge.ENCODINGS: (
        (
            "encodings",
            "--encodings",
            "protected data: encodings.npy (N×H×W×C float32) from "
            "protect or a challenge's encryption.npy; features .npy/.npz for feature attacks",
        ),
    ),
    Knowledge.LABELS: (
        ("labels", "--labels", "labels released with the encodings (.npy), e.g. a challenge's label.npy"),
    ),
    Knowledge.PUBLIC_POOL: (
        ("public", "--public", "the public pool: photos (folder, bundled:photos) or a patch .npz"),
    ),
    Knowledge.AUXILIARY: (
        (
            "aux",
            "--aux",
            "auxiliary clean images of the same distribution, disjoint from the "
            "private ones (folder, .npz, CIFAR archive, bundled:NAME)",
        ),
    ),
    Knowledge.KNOWN_PAIRS: (
        ("known_plain", "--known-plain", "known plaintext images (any image source)"),
        (
            "known_cipher",
            "--known-cipher",
            "their protected versions under the victim's key (.npy N×H×W×C, as protect writes)",
        ),
    ),
    Knowledge.MODEL: (("model_file", "--model-file", "the model (.safetensors from train, search or snapshots)"),),
    Knowledge.API: (
        ("api_model", "--api-model", "the feature service: a model file whose penultimate features the API returns"),
    ),
}


def _labels(path: PathLike) -> np.ndarray:
    from masquerade.data.loaders import load_npy

    p = Path(path)
    if p.suffix != ".npy" or not p.is_file():
        raise InputError(f"{p}: expected labels as a .npy file")
    arr = load_npy(p)
    if arr.dtype.kind not in "iuf" or arr.ndim not in (1, 2):
        raise InputError(f"{p}: expected labels N or N×classes, got {getattr(arr, 'shape', '?')}")
    return arr


def given_inputs(attack_cls: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Load what the attack's threat model names from ``sources`` (keyword -> file); refuse what it does not."""
    from masquerade.data import load_images

    tm = attack_cls.threat_model
    allowed = tm.requires | tm.optional
    named = {key for know in allowed for key, _, _ in SOURCES.get(know, ())}
    extra = sorted(k for k, v in sources.items() if v is not None and k not in named)
    if extra:
        raise InputError(f"{attack_cls.name}: its threat model ({tm.describe()}) does not give it {extra}")
    given: dict[str, Any] = {}
    kind = getattr(attack_cls, "data_kind", "images")
    for know in sorted(allowed, key=lambda k: k.value):
        keys = SOURCES.get(know, ())
        values = [sources.get(key) for key, _, _ in keys]
        if all(v is None for v in values):
            if know in tm.requires:
                opts = " and ".join(opt for _, opt, _ in keys)
                raise InputError(f"{attack_cls.name}: needs {know.value} ({opts})")
            continue
        paths = [v for v in values if v is not None]  # all of them, except known pairs missing one (refused below)
        if know is Knowledge.ENCODINGS:
            if kind == "features":
                from masquerade.workflows.protect import load_features

                given["encodings"] = load_features(paths[0])[0]
            else:
                given["encodings"] = load_encodings(paths[0], "encodings")
        elif know is Knowledge.LABELS:
            given["labels"] = _labels(paths[0])
        elif know is Knowledge.PUBLIC_POOL:
            given["public_pool"] = str(paths[0])
        elif know is Knowledge.AUXILIARY:
            given["auxiliary"] = load_images(paths[0])
        elif know is Knowledge.KNOWN_PAIRS:
            if any(v is None for v in values):
                raise InputError(f"{attack_cls.name}: known pairs need both --known-plain and --known-cipher")
            plain = load_images(paths[0]).to_tensor()
            cipher = load_encodings(paths[1], "known protected images")
            if len(plain) != len(cipher):
                raise InputError(f"{attack_cls.name}: {len(plain)} known plaintexts but {len(cipher)} protected images")
            given["known_pairs"] = (plain, cipher)
        elif know is Knowledge.MODEL:
            from masquerade.models import load_model

            given["model"] = load_model(paths[0])
        elif know is Knowledge.API:
            from masquerade.attacks.feature_inversion import FeatureAPI
            from masquerade.models import load_model

            given["api"] = FeatureAPI.from_model(load_model(paths[0]))
    return given


def score_reconstructions(rec: Any, truth: Any, *, aligned: bool = True) -> dict[str, Any]:
    """Privacy scores of reconstructions against the originals (:func:`masquerade.metrics.privacy.privacy_scores`):
    paired when they align one to one, else each original's best match (Max_SSIM, as the InstaHide Challenge
    scores). ``success``: the share found (SSIM > ``SUCCESS_SSIM``)."""
    from masquerade.metrics.privacy import privacy_scores

    if tuple(rec.shape[1:]) != tuple(truth.shape[1:]):
        raise InputError(
            f"--truth: the originals are {tuple(truth.shape[1:])}, the reconstructions {tuple(rec.shape[1:])}"
        )
    got = privacy_scores(rec, truth, aligned=aligned)
    return {
        "ssim": round(got["ssim"], 4),
        "psnr": round(got["psnr"], 3),
        "success": round(got["success"], 4),
        "scored": len(truth),
        "matching": got["matching"],
    }


def attack(
    name: str,
    *,
    settings: dict[str, Any] | None = None,
    sources: dict[str, Any] | None = None,
    truth: PathLike | None = None,
    seed: int | None = None,
    out: PathLike | None = None,
    quiet: bool = False,
    clients: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run attack ``name`` with ``settings`` on the knowledge in ``sources`` (see :data:`SOURCES`); gradient attacks
    take ``clients`` instead (:func:`gradient_clients`). Returns the metrics and the run folder. ``device``: where
    an attack that runs models runs them (default the CPU; :func:`masquerade.contracts.uses_device`)."""
    from masquerade.devices import resolve_device
    from masquerade.registry import ATTACKS

    cls = ATTACKS.get(name)
    atk = cls(**(settings or {}))
    dev = resolve_device(device)
    tm = atk.threat_model
    if Knowledge.GRADIENTS in tm.requires:
        return _gradient_attack(atk, seed=seed, out=out, quiet=quiet, device=dev, **(clients or {}))
    return _data_attack(atk, sources or {}, truth=truth, seed=seed, out=out, quiet=quiet, device=dev)


def _save_recovered(run: Any, recovered: dict[str, Any]) -> list[str]:
    import torch

    from masquerade.fileio import save_npz

    arrays = {}
    for k, v in recovered.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            arrays[k] = v
    if arrays:
        save_npz(run.path / "recovered.npz", **arrays)
    return sorted(arrays)


def _data_attack(
    atk: Any,
    sources: dict[str, Any],
    *,
    truth: PathLike | None,
    seed: int | None,
    out: PathLike | None,
    quiet: bool,
    device: Any = None,
) -> dict[str, Any]:
    import torch

    from masquerade.data import load_images, to_uint8
    from masquerade.fileio import save_npy, save_npz
    from masquerade.registry import run_attack
    from masquerade.runs import start_run

    given = given_inputs(type(atk), sources)
    kind = getattr(atk, "data_kind", "images")
    with start_run(f"attack-{atk.name}", out=out) as run:
        run.write_config(
            {
                "attack": atk.name,
                "settings": str(atk.settings),
                "threat_model": atk.threat_model.describe(),
                "given": {k: str(v) for k, v in sources.items() if v is not None},
                "truth": None if truth is None else str(truth),
                "device": str(device),
            },
            seed=seed,
        )
        res = run_attack(atk, rng=seed, progress=False if quiet else None, device=device, **given)
        metrics: dict[str, Any] = {"attack": atk.name, "seconds": round(res.seconds, 3)}
        metrics.update({k: v for k, v in res.metrics.items() if not isinstance(v, (torch.Tensor, np.ndarray))})
        rec = res.reconstructions
        if isinstance(rec, torch.Tensor) and rec.ndim == 4:
            save_npz(run.path / "reconstructions.npz", images=to_uint8(rec.clamp(0, 1)).permute(0, 2, 3, 1).numpy())
            rows = [rec[:16].clamp(0, 1)]
            if truth is not None:
                t = load_images(truth).to_tensor()
                metrics.update(score_reconstructions(rec, t, aligned=res.aligned))
                if res.aligned and len(t) == len(rec):
                    rows.insert(0, t[:16])
            run.save_grid(
                "reconstructions",
                torch.cat(rows),
                ncol=min(16, len(rows[-1])),
                scale=2,
                caption=("rows: originals, reconstructions" if len(rows) == 2 else "reconstructions"),
            )
        elif rec is not None:  # features
            arr = rec.numpy() if isinstance(rec, torch.Tensor) else np.asarray(rec)
            save_npy(run.path / "reconstructions.npy", arr)
            if truth is not None:
                from masquerade.workflows.protect import load_features

                feats = load_features(truth)[0]
                if feats.shape != arr.shape:
                    raise InputError(f"--truth: {feats.shape} features, the attack recovered {arr.shape}")
                metrics["bit_exact_share"] = round(float((feats.view(np.uint32) == arr.view(np.uint32)).mean()), 6)
                a64 = np.nan_to_num(arr.reshape(len(arr), -1).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
                t64 = feats.reshape(len(feats), -1).astype(np.float64)
                cos = (a64 * t64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(t64, axis=1), 1e-30)
                metrics["cosine"] = round(float(cos.mean()), 6)
        attrs = res.recovered.get("attributes")
        if attrs is not None and truth is not None and kind == "features":
            labels = _labels(truth) if str(truth).endswith(".npy") else None
            if labels is not None and len(labels) == len(attrs):
                metrics["attribute_accuracy"] = round(float((np.asarray(attrs) == labels).mean()), 4)
        metrics["recovered"] = _save_recovered(run, res.recovered)
        run.add_metrics(**metrics)
    return {**metrics, "run": run.path}


def _gradient_attack(
    atk: Any,
    *,
    model_file: PathLike,
    data: PathLike,
    images: int = 8,
    policy: str | None = None,
    always: bool = False,
    known_labels: bool = True,
    classifier: PathLike | None = None,
    rating_set: bool = False,
    seed: int | None = None,
    out: PathLike | None = None,
    quiet: bool = False,
    device: Any = None,
) -> dict[str, Any]:
    """Gradient inversion the way ATS evaluates it: every one of ``images`` private images (drawn from ``data``)
    is one client update of ``model_file`` (batch 1), transformed by the client's ATS ``policy``."""
    import torch

    from masquerade.ats.privacy import attack_model, export_rating_set, summary
    from masquerade.data import load_images
    from masquerade.models import load_model
    from masquerade.runs import start_run

    model = load_model(model_file)
    pool = load_images(data, split="test")
    if pool.labels is None:
        raise InputError(f"{data}: the attacked images need labels (the client's labels)")
    if pool.image_shape[2] != 3 and len(model.mean.flatten()) == 3:
        pool = pool.to_rgb()
    sub = pool.subset(n=images, rng=seed)
    x, y = sub.to_tensor(), torch.from_numpy(sub.labels).long()
    model.check_takes(x.shape[1:], what=str(model_file))
    clf = load_model(classifier) if classifier else None
    if clf is not None:
        clf.check_takes(x.shape[1:], what=str(classifier))
    with start_run(f"attack-{atk.name}", out=out) as run:
        run.write_config(
            {
                "attack": atk.name,
                "settings": str(atk.settings),
                "model_file": str(model_file),
                "data": str(data),
                "images": images,
                "policy": policy,
                "always": always,
                "known_labels": known_labels,
                "classifier": classifier,
                "device": str(device),
            },
            seed=seed,
        )
        res = attack_model(
            model,
            x,
            y,
            policy=policy or "none",
            always=always,
            attack=atk,
            known_labels=known_labels,
            classifier=clf,
            rng=seed,
            progress=None if not quiet else False,
            device=device,
        )
        sm = summary(res)
        from masquerade.metrics.privacy import SUCCESS_SSIM

        success = float((res["ssim"] > SUCCESS_SSIM).float().mean())
        run.add_metrics(
            **sm,
            success=success,
            attack=res["attack"],
            iterations=res["iterations"],
            seconds=res["seconds"],
            policy=res["policy"],
            images=len(x),
            per_image=[
                {"psnr": round(float(p), 3), "ssim": round(float(q), 4), "label": int(t), "label_used": int(u)}
                for p, q, t, u in zip(res["psnr"], res["ssim"], y, res["labels_used"])
            ],
        )
        run.save_grid(
            "reconstructions",
            torch.cat([x, res["transformed"], res["reconstructions"]]),
            ncol=len(x),
            scale=2,
            caption="rows: original, what the client's gradient was computed on, reconstruction",
        )
        if rating_set:
            export_rating_set(
                run.path / "rating",
                {"original": x, f"{res['policy']}": res["reconstructions"]},
                y.tolist(),
                pool.classes or [str(i) for i in range(pool.num_classes)],
                rng=seed,
            )
    return {
        **sm,
        "success": success,
        "attack": atk.name,
        "policy": res["policy"],
        "images": len(x),
        "seconds": res["seconds"],
        "run": run.path,
    }
