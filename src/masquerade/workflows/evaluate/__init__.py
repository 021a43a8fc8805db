"""``masquerade evaluate``: privacy, utility and cost of every scheme, side by side, across threat levels.

The comparison the DisguisedNets-vs-InstaHide study makes, on the user's data. The data are split once (from the
seed) into a clean test set, auxiliary images from the same distribution, and training images; the first training
images are the *private* set an owner protects and an adversary attacks. Threat levels (what the adversary holds):

- level 1: the protected data as released: encodings, their (mixed) labels, and the public data a scheme names as
  public (InstaHide's public dataset). Under one dataset key (DisguisedNets, identity) the release is the whole
  protected training set, as the server that trains on it holds it (the targets are its first images), so
  attacks that read the statistics of the release have all of it; with one-time keys (InstaHide) it is the private
  set, ``per_image`` encodings of each image;
- level 2: also the data distribution: auxiliary clean images, disjoint from the private set;
- level 3: also known pairs: some private images with their encodings (the "pair" images, which are then not scored).

Two kinds of setting release something else (``SchemeSetting.shares``): ATS settings share *gradients* (at every
level the adversary is the federated server, holding the model and each client's gradient and label, and gradient
inversion is scored on the first ``inversion_images`` targets), and feature settings release the clean-trained
model's penultimate *features* of the private images (ShuffleBits, and the features in the clear as its baseline;
from level 2 the adversary also queries that model as a black box).

For each scheme setting, every registered attack that declares the scheme as its target (``settings_against``) and
whose threat model the level covers runs with everything the level gives that it can use; an attack that uses no
more at level 3 than at level 2 is the same computation and is run once. Each attack is scored on the *target*
images (the private set less the pair images): the mean best-match SSIM of its reconstructions, PSNR of that match,
and the share of targets found with SSIM > 0.8 (the InstaHide Challenge's success). Utility is the clean test
accuracy of a model trained on the protected training images (DisguisedNets: on disguised test images, as the paper
deploys it); cost is the encode throughput and the training time relative to plain training.

Every (scheme setting, attack, knowledge) and every (scheme setting, utility) is a *cell*, a pure function of the
plan and the seed. An evaluation is a reproducible experiment: every key in it, AES keys included, derives from the
seed (keys for real use come from ``masquerade protect``), and each cell runs on a fixed number of CPU threads
(``threads``, default 1), since training's sums depend on it. Cells run one after another, or side by side as Ray
tasks (``workers``, ``ray_address``) with the same bits; each finished cell is written to ``RUN/cells/`` at once
(atomically), so an interrupted evaluate resumes where it stopped, and the scorecard is assembled from the cells in
plan order, whatever order they finished in.
MR (model-based recognition) is the share of targets whose best match the identity setting's clean-trained model
classifies as the target's class; like SSIM it scores the best match, so it is an upper bound on what the
adversary could tell without the originals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from masquerade.errors import InputError
from masquerade.fileio import LockedError, exclusive_lock, read_json, save_npz, sha256_file, write_json
from masquerade.workflows.evaluate.cells import (
    ENCODED_INFERENCE,
    _fingerprint,
    _num_classes,
    data_for,
    run_cell,
    unfit,
)
from masquerade.workflows.evaluate.plan import (
    LEVEL_NAMES,
    LEVELS,
    TIMING_FIELDS,
    Cell,
    EvaluateSettings,
    SchemeSetting,
    default_settings,
    is_plain,
    plan_cells,
)

__all__ = [
    "EvaluateSettings",
    "SchemeSetting",
    "Cell",
    "plan_cells",
    "run_cell",
    "evaluate",
    "default_settings",
    "comparable",
    "best_match",
    "findings",
    "LEVELS",
    "SUCCESS_SSIM",
    "TIMING_FIELDS",
]


def __getattr__(name: str) -> Any:
    """``SUCCESS_SSIM`` and ``best_match`` live in :mod:`masquerade.metrics.privacy` (which loads torch); they are
    still importable from here, loaded on first use so that ``evaluate --help`` stays light."""
    if name in ("SUCCESS_SSIM", "best_match"):
        from masquerade.metrics import privacy

        return getattr(privacy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the run folder: cells streamed in, the scorecard assembled ----------------------------------------------------


def _cell_doc(cell: Cell) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cell), default=str))


class _Store:
    """``RUN/cells/``: one JSON per finished cell (its arrays in an .npz written first), bound to the plan."""

    def __init__(self, out: Path, s: EvaluateSettings) -> None:
        self.dir = out / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.plan = s.digest()

    def load(self, cell: Cell) -> dict[str, Any] | None:
        p = self.dir / f"{cell.file_stem}.json"
        if not p.is_file():
            return None
        try:
            doc = read_json(p, expect=dict)
        except InputError:
            return None  # unreadable, too deep, not ours: run the cell again
        if not isinstance(doc, dict) or doc.get("plan") != self.plan or doc.get("cell") != _cell_doc(cell):
            return None
        result = doc.get("result")
        if not isinstance(result, dict):
            return None
        # the cell's arrays are bound to its record by their digest: another plan's arrays, a truncated or
        # replaced file make the cell run again rather than be read or break the resume
        npz = self.dir / f"{cell.file_stem}.npz"
        digest = doc.get("arrays_sha256")
        if digest is not None and (not npz.is_file() or sha256_file(npz) != digest):
            return None
        if digest is None and npz.exists():
            return None  # arrays the record does not name (an older version's, or foreign)
        return result

    def save(self, cell: Cell, result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        npz = self.dir / f"{cell.file_stem}.npz"
        digest = None
        if arrays:
            save_npz(npz, **arrays)
            digest = sha256_file(npz)
        elif npz.exists():
            npz.unlink()
        write_json(
            self.dir / f"{cell.file_stem}.json",
            {"plan": self.plan, "cell": _cell_doc(cell), "result": result, "arrays_sha256": digest},
        )

    def arrays(self, cell: Cell) -> dict[str, np.ndarray]:
        """The arrays of a cell that :meth:`load` accepted (so their digest matched its record)."""
        p = self.dir / f"{cell.file_stem}.npz"
        if not p.is_file():
            return {}
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - changed since load() checked it: name the file
            raise InputError(f"{p}: unreadable cell arrays ({type(exc).__name__}); rerun to recompute") from None


def _execute(
    cells: list[Cell],
    s: EvaluateSettings,
    store: _Store,
    *,
    workers: int,
    ray_address: str | None,
    say: Callable[[str], None],
) -> None:
    todo = [c for c in cells if store.load(c) is None]
    done = len(cells) - len(todo)
    if done:
        say(f"resuming: {done} of {len(cells)} cells already done")
    total = len(cells)

    def report(cell: Cell, result: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        what = (
            f"utility {result['utility']:.3f}"
            if cell.kind == "utility"
            else f"SSIM {result['ssim']:.3f}, success {result['success']:.2f}"
        )
        where = "utility" if cell.kind == "utility" else f"L{','.join(map(str, cell.levels))} {cell.attack}"
        seconds = result.get("train_s", result.get("cost_s", 0.0))
        say(f"[{done}/{total}] {cell.setting.scheme} {cell.setting.label} · {where}: {what} ({seconds:.1f} s)")

    if not todo:
        return
    if workers <= 1 and ray_address is None:
        for cell in todo:
            result, arrays = run_cell(cell, s)
            store.save(cell, result, arrays)
            report(cell, result)
        return
    try:
        import ray
    except ImportError:
        raise InputError("evaluate: --workers/--ray need Ray: pip install 'masquerade[distributed]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        if ray_address is None:
            ray.init(
                num_cpus=workers * s.threads,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=env,
                configure_logging=False,
            )
        else:
            ray.init(address=ray_address, log_to_driver=False, runtime_env=env, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=s.threads)(run_cell)
        plan_ref = ray.put(s)
        pending = {remote.remote(c, plan_ref): c for c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    result, arrays = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # a cell's own error (bad data, an attack's refusal) reads as it would in a serial run
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                store.save(cell, result, arrays)
                report(cell, result)
    finally:
        if started_here:
            ray.shutdown()


def _recognition(cells: list[Cell], s: EvaluateSettings, store: _Store) -> dict[str, float]:
    """Model-based recognition per attack cell: the share of targets whose best-matching reconstruction the
    clean-trained model (the identity setting's) classifies as the target's true class."""
    import tempfile

    import torch

    from masquerade.metrics import recognition_accuracy
    from masquerade.models import load_model

    plain = next((c for c in cells if c.kind == "utility" and is_plain(c.setting)), None)
    blob = store.arrays(plain).get("recogniser") if plain is not None else None
    if blob is None:
        return {}
    d = data_for(s)
    labels = torch.from_numpy(d.train.labels[: s.targets].astype(np.int64))
    with tempfile.TemporaryDirectory(prefix="masquerade-mr-") as tmp:
        f = Path(tmp) / "recogniser.safetensors"
        f.write_bytes(blob.tobytes())
        model = load_model(f)
    out = {}
    for c in cells:
        matched = store.arrays(c).get("matched") if c.kind == "attack" else None
        # a best match per target; gradient inversion scores the first targets only
        if matched is not None and 0 < len(matched) <= len(labels):
            x = torch.from_numpy(matched).permute(0, 3, 1, 2).float() / 255
            out[c.id] = recognition_accuracy(model, x, labels[: len(matched)])
    return out


def _rows(cells: list[Cell], s: EvaluateSettings, store: _Store) -> list[dict[str, Any]]:
    mr = _recognition(cells, s, store)
    utility = {c.setting.slug: store.load(c) for c in cells if c.kind == "utility"}
    plain = next(
        (u for c, u in ((c, utility[c.setting.slug]) for c in cells if c.kind == "utility") if is_plain(c.setting)),
        None,
    )
    rows = []
    for c in cells:
        if c.kind != "attack":
            continue
        r = store.load(c)
        u = utility.get(c.setting.slug)
        if r is None or u is None:
            raise InputError(f"evaluate: cell {c.id} has no result")  # _execute ran every cell
        for level in c.levels:
            rows.append(
                {
                    "scheme": c.setting.scheme,
                    "setting": c.setting.label,
                    "level": level,
                    "attack": c.attack,
                    "cell": c.file_stem,
                    "uses": list(c.uses),
                    "ssim": round(r["ssim"], 4),
                    "psnr": round(r["psnr"], 2),
                    "success": round(r["success"], 4),
                    "mr": round(mr[c.id], 4) if c.id in mr else None,
                    "utility": round(u["utility"], 4),
                    "utility_encoded": round(u["utility_encoded"], 4) if "utility_encoded" in u else None,
                    "tested_on": u["tested_on"],
                    "cost_s": round(r["cost_s"], 3),
                    "train_s": round(u["train_s"], 2),
                    "train_vs_plain": round(u["train_s"] / plain["train_s"], 3) if plain else None,
                    "encode_images_per_s": None
                    if u["encode_images_per_s"] is None
                    else round(u["encode_images_per_s"], 1),
                    "seed": s.seed,
                    "attack_metrics": r.get("attack_metrics", {}),
                }
            )
    order = {st.label: i for i, st in enumerate(s.chosen())}  # a stable sort: plan order within each level
    rows.sort(key=lambda row: (order[row["setting"]], row["level"]))
    return rows


def findings(rows: list[dict[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """What a reader must have explained before trusting a row: a utility at or below chance (a model that learned
    nothing that carries over to what it is tested on), and an attack that scores below its setting and level's floor,
    an attack that declares itself ``baseline`` (``as-is``: looking at the released data as they are does better, so
    the attack failed there and its row is no evidence of safety)."""
    out: list[dict[str, Any]] = []
    chance = 1.0 / max(num_classes, 1)
    seen: set[str] = set()
    for r in rows:
        if r["setting"] in seen or not isinstance(r.get("utility"), (int, float)):
            continue
        seen.add(r["setting"])
        if r["utility"] <= chance:
            text = (
                f"utility {r['utility']:.3f} is at or below chance ({chance:.2f} for {num_classes} classes): "
                f"the model trained on this setting's data learned nothing that carries over to "
                f"{r.get('tested_on', 'its test images')}"
            )
            enc = r.get("utility_encoded")
            if isinstance(enc, (int, float)):
                text += (
                    f"; tested the other way the paper allows, on fresh encodings of each test image (softmax "
                    f"averaged over {ENCODED_INFERENCE}), the same model reaches {enc:.3f}"
                    + (
                        ": it learned the encodings, and clean images are not what it saw"
                        if enc > chance + 0.05
                        else ", no better"
                    )
                )
            else:
                text += "; its privacy rows describe a protection that leaves nothing to learn from"
            out.append(
                {"kind": "utility at or below chance", "scheme": r["scheme"], "setting": r["setting"], "text": text}
            )
    bases = _baselines({r["attack"] for r in rows})
    floor: dict[tuple[str, int], tuple[str, float]] = {}
    for r in rows:  # the best of the floors, where several attacks declare one
        key = (r["setting"], r["level"])
        if r["attack"] in bases and (key not in floor or r["ssim"] > floor[key][1]):
            floor[key] = (r["attack"], r["ssim"])
    for r in rows:
        base = floor.get((r["setting"], r["level"]))
        if r["attack"] not in bases and base is not None and r["ssim"] < base[1] - 0.01:
            name, ssim = base
            out.append(
                {
                    "kind": f"attack below the {name} floor",
                    "scheme": r["scheme"],
                    "setting": r["setting"],
                    "level": r["level"],
                    "attack": r["attack"],
                    "text": f"{r['attack']} (SSIM {r['ssim']:.3f}) scores below {name} (SSIM {ssim:.3f}), which "
                    f"uses only what every attack at level {r['level']} holds: it failed on this setting, and the "
                    "row is no evidence that the setting is safe",
                }
            )
    return out


def _baselines(names: set[str]) -> set[str]:
    """The attacks among ``names`` that declare themselves their level's floor (an attack that no longer imports is
    not one: its rows stay, unjudged)."""
    from masquerade.contracts import is_baseline
    from masquerade.registry import ATTACKS

    out = set()
    for name in names:
        try:
            if is_baseline(ATTACKS.get(name)):
                out.add(name)
        except InputError:
            continue
    return out


def evaluate(
    s: EvaluateSettings,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    ray_address: str | None = None,
    verbose: bool = True,
) -> Path:
    """Run (or resume) the evaluation into ``out``; returns the path of ``scorecard.json``."""
    say = print if verbose else (lambda *_a, **_k: None)
    if s.device != "cpu":  # "auto" becomes the device it picks: the plan records where it ran
        from masquerade.devices import resolve_device

        s = dataclasses.replace(s, device=str(resolve_device(s.device)))
        if s.device != "cpu" and (workers > 1 or ray_address is not None):
            # Ray hides GPUs from tasks that ask for none, and numbers the ones it gives anew
            raise InputError(
                f"evaluate: --device {s.device} runs the cells one after another in this process; "
                "it does not combine with --workers or --ray (use --device cpu there)"
            )
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    try:
        with exclusive_lock(root):  # two evaluations into one folder: the second stops at once
            return _evaluate(s, root, workers=workers, ray_address=ray_address, say=say)
    except LockedError as exc:
        raise InputError(str(exc)) from None


def _evaluate(
    s: EvaluateSettings, root: Path, *, workers: int, ray_address: str | None, say: Callable[..., Any]
) -> Path:
    config = root / "config.json"
    old: dict[str, Any] | None = None
    if config.is_file():
        try:
            old = read_json(config, expect=dict)
        except InputError:
            old = None
        if not isinstance(old, dict) or old.get("plan") != s.digest():
            raise InputError(f"{root}: holds an evaluation with other settings; choose another --out")
    elif root.is_dir() and any(root.iterdir()):
        raise InputError(f"{root}: the folder exists and is not an evaluation; choose another --out")
    d = data_for(s)
    if any(st.shares != "features" for st in s.chosen()):  # every image setting trains this model
        from masquerade.models.resnet import check_input

        h, w, c = d.train.image_shape
        check_input(s.model, (c, h, w), what="--model")
    doc = {
        "evaluate": json.loads(json.dumps(dataclasses.asdict(s), default=str)),
        "plan": s.digest(),
        "data_sha256": _fingerprint(d),
    }
    if old is not None and old.get("data_sha256") != doc["data_sha256"]:
        raise InputError(f"{root}: the data changed since this evaluation started; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    write_json(config, doc)
    skipped = unfit(s, d)
    for label, why in skipped.items():
        say(f"evaluate: skipping {label}: {why}")
    cells = plan_cells(s, set(skipped))
    store = _Store(root, s)
    say(
        f"evaluate: {len(s.chosen()) - len(skipped)} scheme settings, levels {','.join(map(str, s.levels))}, "
        f"{len(cells)} cells"
        + (f" on {workers} Ray workers" if workers > 1 and ray_address is None else "")
        + (f" on the Ray cluster at {ray_address}" if ray_address else "")
    )
    t0 = time.perf_counter()
    _execute(cells, s, store, workers=workers, ray_address=ray_address, say=say)
    rows = _rows(cells, s, store)
    described = {
        st.label: {
            "scheme": st.scheme,
            "settings": dict(st.params),
            "encodings_per_image": st.per_image,
            "note": st.note,
            **({"skipped": skipped[st.label]} if st.label in skipped else {}),
        }
        for st in s.chosen()
    }
    classes = _num_classes(d)
    found = findings(rows, classes)
    for f in found:
        say(f"evaluate: finding: {f['setting']}: {f['text']}")
    path = write_json(
        root / "scorecard.json",
        {
            "rows": rows,
            "seed": s.seed,
            "plan": s.digest(),
            "settings": described,
            "classes": classes,
            "findings": found,
            "levels": {str(k): LEVEL_NAMES[k] for k in s.levels},
            "timing_fields": list(TIMING_FIELDS),
        },
    )
    from masquerade.report.scorecard import build_scorecard_report

    report = build_scorecard_report(root)
    say(f"evaluate: {len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {path}; report {report}")
    return path


def comparable(scorecard: dict[str, Any]) -> list[dict[str, Any]]:
    """The scorecard's rows without the timing fields: what two runs of one plan must agree on."""
    return [
        {k: v for k, v in row.items() if k not in TIMING_FIELDS and k != "attack_metrics"} for row in scorecard["rows"]
    ]
