"""Train a classifier on protected data (tested on clean data), and search ATS policies; both resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from masquerade.errors import InputError
from masquerade.fileio import parse_json, read_json, write_text

__all__ = ["train", "search", "epoch_list"]

PathLike = str | os.PathLike[str]


def epoch_list(text: str | None, epochs: int) -> tuple[int, ...]:
    """``"1,10"`` -> (1, 10), each within 1..epochs."""
    if not text:
        return ()
    try:
        out = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise InputError(f"--snapshots expects epochs such as 1,10, got {text!r}") from None
    bad = [e for e in out if not 1 <= e <= epochs]
    if bad:
        raise InputError(f"--snapshots: epochs must lie in 1..{epochs}, got {bad}")
    return out


def train(
    data: PathLike,
    test: PathLike,
    *,
    scheme: str | None = None,
    scheme_settings: dict[str, Any] | None = None,
    settings: Any = None,
    policy: str | None = None,
    always: bool = False,
    public: PathLike | None = None,
    public_patches: int = 10000,
    snapshots: tuple[int, ...] = (),
    seed: int | None = None,
    out: PathLike | None = None,
    resume: PathLike | None = None,
    config: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``settings.model`` on ``data`` protected by ``scheme`` and test it on clean ``test`` images. ``policy``
    and ``always`` are settings of a scheme that takes them (ATS); with no ``scheme`` named, that scheme, and
    without a policy, none (``identity``). Writes the run folder (model.safetensors, metrics, checkpoint) and
    returns the metrics.
    ``device``: where the model trains (``auto``, ``cpu``, ``cuda[:N]``, ``mps``; default the CPU).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process joins the process group and trains its
    share of each batch (:mod:`masquerade.distributed`); only rank 0 writes the run folder and returns its path."""
    from masquerade import distributed

    joined = distributed.init_from_env()
    try:
        result = _train(
            data,
            test,
            scheme=scheme,
            scheme_settings=scheme_settings,
            settings=settings,
            policy=policy,
            always=always,
            public=public,
            public_patches=public_patches,
            snapshots=snapshots,
            seed=seed,
            out=out,
            resume=resume,
            config=config,
            on_epoch=on_epoch,
            device=device,
        )
    except BaseException:
        if joined:
            distributed.shutdown(wait=False)
        raise
    if joined:
        distributed.shutdown()
    return result


def _with_policy(
    scheme: str | None, settings: dict[str, Any], policy: str | None, always: bool
) -> tuple[str, dict[str, Any]]:
    """The scheme and its settings once ``policy``/``always`` (shorthands for those settings) are folded in: with
    no scheme named, the built-in one that takes a policy."""
    from masquerade.registry import SCHEMES

    if policy is None:
        if always:
            raise InputError("train: --always goes with --policy")
        return scheme or "identity", settings
    if scheme is None:
        takers = SCHEMES.builtin_with_setting("policy")
        if len(takers) != 1:
            raise InputError(f"train: --policy needs --scheme (schemes that take a policy: {takers or 'none'})")
        scheme = takers[0]
    elif "policy" not in SCHEMES.setting_names(scheme):
        names = ", ".join(SCHEMES.builtin_with_setting("policy")) or "none"
        raise InputError(f"train: --policy is a setting {scheme} does not take (built-in schemes that do: {names})")
    return scheme, settings | {"policy": policy, "always": always}


def _train(
    data: PathLike,
    test: PathLike,
    *,
    scheme: str | None,
    scheme_settings: dict[str, Any] | None,
    settings: Any,
    policy: str | None,
    always: bool,
    public: PathLike | None,
    public_patches: int,
    snapshots: tuple[int, ...],
    seed: int | None,
    out: PathLike | None,
    resume: PathLike | None,
    config: dict[str, Any] | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    device: str | None,
) -> dict[str, Any]:
    from masquerade import distributed
    from masquerade.data import load_images
    from masquerade.devices import resolve_device
    from masquerade.registry import create_scheme
    from masquerade.training import TrainSettings
    from masquerade.training import train as train_model
    from masquerade.workflows.protect import public_pool_for

    settings = settings or TrainSettings()
    dev = resolve_device(device)  # before any data is read: a missing GPU is an error at once
    train_set, test_set = load_images(data), load_images(test, split="test")
    scheme, scheme_settings = _with_policy(scheme, dict(scheme_settings or {}), policy, always)
    sch = create_scheme(scheme, **scheme_settings)
    # every process of a distributed run must cut the same public patches: without a seed, from shared entropy
    pool_seed = (
        seed
        if seed is not None or distributed.world()[1] == 1
        else int(distributed.shared_secure_rng().integers(0, 2**62))
    )
    pool = public_pool_for(sch, len(train_set), train_set.image_shape, public, patches=public_patches, seed=pool_seed)
    identity = {
        "scheme": scheme,
        "scheme_settings": str(sch.settings),
        "settings": dict(settings.__dict__),
        "data_sha256": _digest(train_set),
        "test_sha256": _digest(test_set),
    }
    if distributed.world()[0] != 0:
        # another process of a distributed run: the same training, nothing written (rank 0 keeps the run)
        ckpt = Path(resume) / "checkpoint.pt" if resume else None
        result = train_model(
            train_set,
            test_set,
            scheme=sch,
            public=pool,
            settings=settings,
            seed=seed,
            checkpoint=ckpt,
            resume=bool(resume),
            progress=False,
            device=dev,
        )
        return {"test_acc": result["test_acc"], "epochs_run": len(result["history"]), "run": None}
    return _train_in_run(
        train_set, test_set, sch, scheme, pool, settings, identity, snapshots, seed, out, resume, config, on_epoch, dev
    )


def _train_in_run(
    train_set: Any,
    test_set: Any,
    sch: Any,
    scheme: str,
    pool: Any,
    settings: Any,
    identity: dict[str, Any],
    snapshots: tuple[int, ...],
    seed: int | None,
    out: PathLike | None,
    resume: PathLike | None,
    config: dict[str, Any] | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    device: Any,
) -> dict[str, Any]:
    from masquerade.models import save_model
    from masquerade.runs import Run, start_run
    from masquerade.training import train as train_model

    if resume:
        run_path = Path(resume)
        if not (run_path / "checkpoint.pt").is_file():
            raise InputError(f"{run_path}: no checkpoint.pt to resume from")
        _check_resume(run_path, identity, seed)
        run = Run(run_path, "train")
    else:
        run = start_run("train", out=out)
        run.write_config({**identity, "train": config or {}}, seed=seed)
    with run:

        def log_epoch(rec: dict[str, Any]) -> None:
            run.log(
                f"epoch {rec['epoch']}: loss {rec['train_loss']:.4f}, test accuracy {rec['test_acc']:.4f}, "
                f"{rec['seconds']:.1f}s"
            )
            if on_epoch is not None:
                on_epoch(rec)

        result = train_model(
            train_set,
            test_set,
            scheme=sch,
            public=pool,
            settings=settings,
            seed=seed,
            checkpoint=run.path / "checkpoint.pt",
            resume=bool(resume),
            on_epoch=log_epoch,
            snapshots=snapshots,
            snapshot_dir=run.path,
            device=device,
        )
        if result["classifier"] is not None:
            clf = result["classifier"]
            save_model(
                run.path / "model.safetensors",
                clf,
                arch=settings.model,
                num_classes=max(train_set.num_classes, test_set.num_classes),
                mean=clf.mean,
                std=clf.std,
                in_channels=train_set.image_shape[2],
                info={"test_acc": result["test_acc"], "scheme": str(sch.settings)},
            )
        hist = result["history"]
        metrics = {k: v for k, v in result.items() if k not in ("history", "model_state", "classifier")}
        metrics["accuracy_curve"] = {
            "x": [h["epoch"] for h in hist],
            "y": {"test accuracy": [h["test_acc"] for h in hist]},
            "xlabel": "epoch",
            "ylabel": "clean test accuracy",
        }
        run.add_metrics(**metrics)
    return {**metrics, "epochs_run": len(hist), "run": run.path}


def _digest(images: Any) -> str:
    """A digest of a data set's pixels and labels: a resumed run must train on the same data."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(np.ascontiguousarray(images.images).tobytes())
    if images.labels is not None:
        h.update(np.ascontiguousarray(images.labels).tobytes())
    return h.hexdigest()[:16]


def _scores_done(partial: Path) -> list[dict[str, Any]]:
    """The scores a killed search wrote, one JSON object a line. A line a kill cut short (or any line that is not
    one of ours) is dropped and its policy scored again; the file is rewritten with the good lines first, so that
    the next append does not land on the end of a broken one."""
    if not partial.is_file():
        return []
    lines = partial.read_bytes().split(b"\n")
    done = []
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = parse_json(line, where=str(partial), expect=dict)
        except InputError:
            continue
        if isinstance(doc.get("policy"), str) and all(
            isinstance(doc.get(k), (int, float)) and not isinstance(doc.get(k), bool) for k in ("s_pri", "s_acc")
        ):
            done.append(doc)
    if len(done) != sum(1 for line in lines if line.strip()) or (lines and lines[-1].strip()):
        write_text(partial, "".join(json.dumps(d) + "\n" for d in done))
    return done


def _check_resume(run_path: Path, identity: dict[str, Any], seed: int | None) -> None:
    """Refuse to resume a run with anything that differs from what it started with."""
    cfg_path = run_path / "config.json"
    try:
        cfg = read_json(cfg_path, expect=dict)
    except InputError as exc:
        raise InputError(f"{exc}; cannot resume") from None
    if cfg.get("seed") != seed:
        raise InputError(
            f"{run_path}: the run was started with seed {cfg.get('seed')!r}, not {seed!r}; resume it "
            f"with the same --seed"
        )
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    for k, v in identity.items():
        if k in inner and json.loads(json.dumps(inner[k], default=str)) != json.loads(json.dumps(v, default=str)):
            what = {"data_sha256": "training data", "test_sha256": "test data"}.get(k, k.replace("_", " "))
            raise InputError(
                f"{run_path}: the run was started with other {what}; resume it with the same "
                f"options (or start a new run)"
            )


def search(
    data: PathLike,
    pool: PathLike,
    *,
    settings: Any = None,
    model: str = "resnet20",
    share: float = 0.1,
    epochs: int = 10,
    policies: list[str] | None = None,
    also: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    out: PathLike | None = None,
    resume: PathLike | None = None,
    quiet: bool = False,
    config: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """ATS: briefly train ``model`` on a ``share`` of ``data``, then score candidate policies (S_pri, S_acc) on
    labelled ``pool`` images and choose the admissible ones; resumable. Returns the search result and run path.
    ``device``: where the training and the scores run (default the CPU)."""
    import torch

    from masquerade.ats.search import SearchSettings
    from masquerade.ats.search import search as run_search
    from masquerade.data import load_images
    from masquerade.devices import resolve_device
    from masquerade.models import Normalized, create_model, load_model, save_model
    from masquerade.rng import as_generator
    from masquerade.runs import Run, start_run
    from masquerade.training import TrainSettings
    from masquerade.training import train as train_model

    settings = settings or SearchSettings()
    dev = resolve_device(device)
    if not 0 < share <= 1:
        raise InputError(f"search: --share is a fraction in (0, 1], got {share}")
    images = load_images(pool, split="test")
    if images.labels is None:
        raise InputError(f"{pool}: the scoring images need labels")
    if images.image_shape[2] != 3:
        images = images.to_rgb()
    if resume:
        run = Run(Path(resume), "search")
        if not (run.path / "trained.safetensors").is_file():
            raise InputError(f"{resume}: no trained.safetensors to resume from")
    else:
        run = start_run("search", out=out)
        run.write_config({"search": config or {}, "settings": settings.__dict__}, seed=seed)
    partial = run.path / "scores.jsonl"
    with run:
        gen = as_generator(seed)
        if not (run.path / "trained.safetensors").is_file():
            train_set = load_images(data)
            part = train_set.subset(n=max(1, int(round(len(train_set) * share))), rng=gen)
            run.log(f"training {model} on {len(part)} images ({share:.0%}) for {epochs} epochs")
            r = train_model(
                part,
                images,
                settings=TrainSettings(model=model, epochs=epochs, lr=0.1, batch_size=128),
                seed=seed,
                progress=None if not quiet else False,
                device=dev,
            )
            clf = r["classifier"]
            save_model(
                run.path / "trained.safetensors",
                clf,
                arch=model,
                num_classes=images.num_classes,
                mean=clf.mean,
                std=clf.std,
                info={"test_acc": r["test_acc"], "share": share},
            )
            run.log(f"briefly trained model: test accuracy {r['test_acc']:.4f}")
        trained = load_model(run.path / "trained.safetensors")
        if not (run.path / "init.safetensors").is_file():  # kept, so that a resumed search scores the same net
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(gen.integers(0, 2**62)))
                init = Normalized(
                    create_model(model, num_classes=images.num_classes), trained.mean.flatten(), trained.std.flatten()
                ).eval()
            save_model(
                run.path / "init.safetensors",
                init,
                arch=model,
                num_classes=images.num_classes,
                mean=init.mean,
                std=init.std,
                info={"initialisation": True},
            )
        init = load_model(run.path / "init.safetensors")
        done = _scores_done(partial)

        def save(r: dict[str, Any]) -> None:
            with partial.open("a") as f:
                f.write(json.dumps(r) + "\n")

        res = run_search(
            trained=trained,
            init=init,
            images=images.to_tensor(),
            labels=torch.from_numpy(images.labels),
            settings=settings,
            candidates=policies,
            rng=seed,
            done=done,
            on_result=save,
            progress=None if not quiet else False,
            extra=list(also),
            device=dev,
        )
        run.add_metrics(
            chosen=", ".join(res["chosen"]) or "none admissible",
            acc_threshold=res["threshold"],
            candidates=len(res["table"]),
            seconds=res["seconds"],
            workers=res["workers"],
            ranked_policies=[
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in res["table"]
            ],
        )
        write_text(run.path / "search.json", json.dumps(res, indent=1) + "\n")
    return {**res, "run": run.path}
