"""``masquerade evaluate``: privacy, utility and cost of every scheme, side by side, across threat levels.

The comparison the DisguisedNets-vs-InstaHide study makes, on the user's data. The data are split once (from the
seed) into a clean test set, auxiliary images from the same distribution, and training images; the first training
images are the *private* set an owner protects and an adversary attacks. Threat levels (what the adversary holds):

- level 1: the protected data as released: encodings, their (mixed) labels, and the public data a scheme names as
  public (InstaHide's public dataset);
- level 2: also the data distribution: auxiliary clean images, disjoint from the private set;
- level 3: also known pairs: some private images with their encodings (the "pair" images, which are then not scored).

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
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from masquerade.contracts import Knowledge
from masquerade.errors import InputError
from masquerade.fileio import save_npz, write_json

__all__ = ["EvaluateSettings", "SchemeSetting", "Cell", "plan_cells", "run_cell", "evaluate", "default_settings",
           "comparable", "best_match", "LEVELS", "SUCCESS_SSIM", "TIMING_FIELDS"]

SUCCESS_SSIM = 0.8
K = Knowledge
LEVELS: dict[int, frozenset[Knowledge]] = {
    1: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL}),
    2: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL, K.AUXILIARY}),
    3: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL, K.AUXILIARY, K.KNOWN_PAIRS}),
}
LEVEL_NAMES = {1: "protected data only", 2: "+ the data distribution", 3: "+ known pairs"}
# fields that measure time on the machine that ran the cell: the only ones that differ between two runs of a plan
TIMING_FIELDS = ("cost_s", "train_s", "train_vs_plain", "encode_images_per_s")


@dataclass(frozen=True)
class SchemeSetting:
    """One scheme with one set of settings, as a row group of the scorecard.

    ``params`` may hold ``"data"`` for InstaHide's ``mean``/``std``: the training images' own statistics.
    ``per_image``: encodings released per private image (InstaHide draws a fresh one-time key per pass)."""

    scheme: str
    label: str
    params: tuple[tuple[str, Any], ...] = ()
    per_image: int = 1
    public: bool = False          # mixes in a public pool (InstaHide across datasets)
    note: str = ""                # what a reader should know to read the row (shown in the report)

    @property
    def slug(self) -> str:
        return _slug(f"{self.scheme}-{self.label}")


def default_settings(quick: bool) -> list[SchemeSetting]:
    """The settings compared: the papers' defaults, and in a full run the neighbours that show the trade-off."""
    ih_passes = 20 if quick else 50
    out = [
        SchemeSetting("identity", "no protection"),
        SchemeSetting("instahide", "inside k=4", (("k", 4), ("mode", "inside"), ("pixel_scale", "normalize"),
                                                  ("mean", "data"), ("std", "data")), per_image=ih_passes,
                      note="Pixels standardised with the training images' own mean and deviation before mixing, as "
                           "the InstaHide training code does."),
        SchemeSetting("instahide", "cross k=6 (challenge)", (("k", 6), ("mode", "cross"), ("private_per_mix", 2)),
                      per_image=ih_passes, public=True,
                      note="The InstaHide Challenge's recipe: two private images and four public patches per "
                           "encoding, pixels in [-1, 1] as the challenge released them. On near-binary images "
                           "(digits) strokes and background both have magnitude 1 on that scale, so the sign mask "
                           "leaves a model little to learn from; the inside setting standardises first."),
        SchemeSetting("disguise", "RMT b=4", (("transform", "rmt"), ("block", 4))),
        SchemeSetting("disguise", "AES-ECB b=4", (("transform", "aes"), ("block", 4), ("aes_mode", "ecb"))),
    ]
    if not quick:
        out[2:2] = [SchemeSetting("instahide", "inside k=2", (("k", 2), ("mode", "inside"),
                                                              ("pixel_scale", "normalize"), ("mean", "data"),
                                                              ("std", "data")), per_image=ih_passes)]
        out += [SchemeSetting("disguise", "permutation b=4", (("transform", "none"), ("block", 4))),
                SchemeSetting("disguise", "RMT b=8", (("transform", "rmt"), ("block", 8))),
                SchemeSetting("disguise", "AES-ECB b=8", (("transform", "aes"), ("block", 8), ("aes_mode", "ecb"))),
                SchemeSetting("disguise", "AES-CTR b=4", (("transform", "aes"), ("block", 4), ("aes_mode", "ctr")))]
    return out


@dataclass(frozen=True)
class EvaluateSettings:
    data: str = "bundled:mnist"
    size: int | None = None         # None: as loaded (one size for all images); else resized to size×size
    quick: bool = False
    schemes: tuple[str, ...] = ("identity", "instahide", "disguise")
    levels: tuple[int, ...] = (1, 2, 3)
    seed: int = 0
    targets: int = 40               # private images scored
    pairs: int = 20                 # private images the adversary knows with their encodings (level 3)
    auxiliary: int = 500            # clean images from the same distribution (level 2)
    test: int = 1000
    train: int = 4000               # training images for utility (the private set is their first images)
    epochs: int = 10
    model: str = "fastresnet"
    augment: bool = False           # crop and flip in training (off for digits, whose flips are other digits)
    public: int = 1000              # public patches for InstaHide across datasets
    threads: int = 1                # CPU threads of each cell: numbers depend on it, so it belongs to the plan
    settings: tuple[SchemeSetting, ...] = ()

    def __post_init__(self) -> None:
        if not self.settings:
            object.__setattr__(self, "settings", tuple(default_settings(self.quick)))
        unknown = sorted(set(self.schemes) - {s.scheme for s in default_settings(False)} - {s.scheme for s in
                                                                                            self.settings})
        if unknown:
            raise InputError(f"evaluate: unknown schemes {unknown}; choose from identity, instahide, disguise")
        if not self.levels or any(lv not in LEVELS for lv in self.levels):
            raise InputError(f"evaluate: levels are 1, 2 and 3, got {list(self.levels)}")
        if self.size is not None and self.size < 4:
            raise InputError(f"evaluate: size must be at least 4 pixels, got {self.size}")
        for name in ("targets", "test", "train", "epochs", "auxiliary", "public", "threads"):
            if getattr(self, name) < 1:
                raise InputError(f"evaluate: {name} must be positive, got {getattr(self, name)}")
        if self.pairs < 0:
            raise InputError(f"evaluate: pairs must be >= 0, got {self.pairs}")
        if self.targets + self.pairs > self.train:
            raise InputError(f"evaluate: {self.targets} targets + {self.pairs} pairs exceed the {self.train} "
                             "training images they are drawn from")
        if self.targets + self.pairs < 2:
            raise InputError("evaluate: the private set needs at least 2 images (InstaHide mixes pairs)")

    @classmethod
    def for_quick(cls, **overrides: Any) -> "EvaluateSettings":
        """``--quick``: a few minutes on 2 cores (fewer images, fewer epochs, ten InstaHide passes)."""
        base: dict[str, Any] = dict(quick=True, targets=20, pairs=20, auxiliary=300, test=500, train=1500,
                                    epochs=8, public=500)
        base.update(overrides)
        return cls(**base)

    def chosen(self) -> list[SchemeSetting]:
        keep = set(self.schemes) | {"identity"}     # plain training is every cost's reference
        return [s for s in self.settings if s.scheme in keep]

    def digest(self) -> str:
        doc = dataclasses.asdict(self)
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work: the utility of a setting, or one attack on it with a given knowledge."""

    kind: str                                   # "utility" or "attack"
    setting: SchemeSetting
    attack: str = ""
    attack_settings: tuple[tuple[str, Any], ...] = ()
    uses: tuple[str, ...] = ()                  # the knowledge the attack is given
    levels: tuple[int, ...] = ()                # the levels whose rows it fills

    @property
    def id(self) -> str:
        if self.kind == "utility":
            return f"utility/{self.setting.slug}"
        return f"attack/{self.setting.slug}/{self.attack}/{'+'.join(self.uses)}"

    @property
    def file_stem(self) -> str:
        return _slug(self.id.replace("/", "--"))


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def _make_scheme(setting: SchemeSetting, stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Any:
    from masquerade.registry import create_scheme

    params = dict(setting.params)
    if setting.scheme == "disguise" and params.get("transform") == "aes":
        # an evaluation is a reproducible experiment: its AES keys too derive from the seed, asked for by name
        params.setdefault("seeded_aes_key", True)
    for name, pos in (("mean", 0), ("std", 1)):
        if params.get(name) == "data":
            if stats is None:
                params.pop(name)
            else:
                params[name] = stats[pos]
    return create_scheme(setting.scheme, **params)


def plan_cells(s: EvaluateSettings) -> list[Cell]:
    """Every cell of the evaluation, in scorecard order."""
    from masquerade.registry import ATTACKS

    attacks: list[tuple[str, Any]] = []
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        if getattr(cls, "data_kind", None) == "images" and hasattr(cls, "settings_against"):
            attacks.append((name, cls))
    cells: list[Cell] = []
    for setting in s.chosen():
        scheme = _make_scheme(setting)
        cells.append(Cell("utility", setting))
        by_uses: dict[tuple[str, str], Cell] = {}
        for level in sorted(s.levels):
            know = LEVELS[level]
            for name, cls in attacks:
                against = cls.settings_against(scheme)
                tm = cls.threat_model
                if against is None or not tm.requires <= know:
                    continue
                uses = tuple(sorted(k.value for k in (tm.requires | (tm.optional & know))))
                if not setting.public:
                    uses = tuple(u for u in uses if u != K.PUBLIC_POOL.value)
                prev = by_uses.get((name, "+".join(uses)))
                if prev is not None:
                    by_uses[(name, "+".join(uses))] = dataclasses.replace(prev, levels=prev.levels + (level,))
                else:
                    by_uses[(name, "+".join(uses))] = Cell("attack", setting, name, tuple(sorted(against.items())),
                                                           uses, (level,))
        cells += list(by_uses.values())
    return cells


# -- data: one split for every cell, the same in every process ----------------------------------------------------

@dataclass
class _Data:
    train: Any          # ImageSet (uint8 NHWC, RGB, square)
    test: Any
    aux: Any
    public: Any         # ImageSet of public patches
    stats: tuple[tuple[float, ...], tuple[float, ...]]


@lru_cache(maxsize=2)
def _data(data: str, size: int | None, seed: int, n_train: int, n_test: int, n_aux: int, n_public: int) -> _Data:
    from masquerade.data import load_images
    from masquerade.instahide.challenge import public_pool

    ds = load_images(data, size=size)
    if ds.labels is None:
        raise InputError(f"{data}: evaluate needs labelled images (class sub-folders, or labels in the .npz)")
    ds = ds.to_rgb() if ds.image_shape[2] == 1 else ds
    need = n_train + n_test + n_aux
    if len(ds) < need:
        raise InputError(f"{data}: {len(ds)} images; this evaluation needs {need} ({n_train} training, {n_test} "
                         f"test, {n_aux} auxiliary): lower --train/--test/--auxiliary")
    order = np.random.default_rng([seed, 0xDA7A]).permutation(len(ds))
    test, aux, train = ds.select(order[:n_test]), ds.select(order[n_test:n_test + n_aux]), \
        ds.select(order[n_test + n_aux:need])
    x = train.images.astype(np.float64) / 255
    stats = (tuple(float(v) for v in x.mean((0, 1, 2))), tuple(float(max(v, 1e-3)) for v in x.std((0, 1, 2))))
    h, w = ds.image_shape[:2]
    if h != w:
        raise InputError(f"{data}: images are {h}×{w}; the public patches and attacks need square images "
                         "(--size N resizes them)")
    pub = public_pool("bundled:photos", n_public, size=h, rng=seed)
    return _Data(train, test, aux, pub, stats)


def _fingerprint(d: _Data) -> str:
    """SHA-256 of the split's pixels and labels: a resumed evaluation must see the data it started with."""
    h = hashlib.sha256()
    for part in (d.train, d.test, d.aux, d.public):
        h.update(np.ascontiguousarray(part.images).tobytes())
        if part.labels is not None:
            h.update(np.ascontiguousarray(part.labels).tobytes())
    return h.hexdigest()


def _cell_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


@dataclass
class _Release:
    encodings: Any                  # torch float32 E×C×H×W: what the scheme releases of the private set
    labels: Any                     # E×classes soft labels (InstaHide) or E hard labels
    owners: np.ndarray              # E: the private image in slot 0 of each encoding (its own image, if one-time)


def _num_classes(d: _Data) -> int:
    return max(d.train.num_classes, d.test.num_classes)


def _release(s: EvaluateSettings, setting: SchemeSetting, d: _Data) -> _Release:
    """The protected private set, as its owner releases it: one dataset key, or ``per_image`` one-time keys."""
    import torch

    scheme = _make_scheme(setting, d.stats)
    private = d.train.select(np.arange(s.targets + s.pairs))
    x = private.to_tensor()
    n = len(x)
    gen = np.random.default_rng(_cell_seed(s.seed, "release", setting.slug))
    pub = d.public.to_tensor() if setting.public else None
    num_classes = _num_classes(d)
    encs, labs = [], []
    for _ in range(setting.per_image):
        key = scheme.keygen(n, rng=gen, shape=tuple(x.shape[1:]), pool_size=0 if pub is None else len(pub))
        encs.append(scheme.encode(x, key, public=pub, rng=gen))
        mix = getattr(scheme, "mix_labels", None)
        labs.append(mix(private.labels, key, num_classes) if mix is not None
                    else torch.from_numpy(private.labels.astype(np.int64)))
    return _Release(torch.cat(encs), torch.cat(labs), np.tile(np.arange(n), setting.per_image))


# -- scoring -----------------------------------------------------------------------------------------------------

def best_match(originals: np.ndarray, recon: np.ndarray, *, aligned: bool, chunk: int = 20000
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per original (uint8 N×H×W×C), the SSIM of its best-matching reconstruction (uint8 M×H×W×C), that match's
    PSNR and its index. ``aligned``: reconstruction i belongs to original i, nothing is searched."""
    import torch

    from masquerade.metrics import psnr, ssim

    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    n, m = len(originals), len(recon)
    if aligned:
        if m < n:
            raise InputError(f"an aligned attack returned {m} reconstructions for {n} targets")
        idx = np.arange(n)
        best = ssim(to(originals), to(recon[:n]), data_range=255).numpy().astype(np.float64)
    else:
        scores = np.empty((n, m))
        flat = n * m
        for lo in range(0, flat, chunk):
            ij = np.arange(lo, min(flat, lo + chunk))
            scores.reshape(-1)[ij] = ssim(to(originals[ij // m]), to(recon[ij % m]), data_range=255).numpy()
        idx = scores.argmax(1)
        best = scores[np.arange(n), idx]
    p = psnr(to(originals), to(recon[idx]), data_range=255).numpy().astype(np.float64)
    return best, np.minimum(p, 100.0), idx


def _to_u8(t: Any) -> np.ndarray:
    import torch

    x = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# -- cells -------------------------------------------------------------------------------------------------------

def _given(cell: Cell, s: EvaluateSettings, d: _Data, rel: _Release) -> dict[str, Any]:
    """What the cell's knowledge gives the attack, in the forms attacks take."""
    targets = s.targets
    one_time = cell.setting.per_image > 1
    # the attacked encodings: a dataset key's are the targets'; one-time encodings mix private images, all released
    mask = np.ones(len(rel.owners), bool) if one_time else rel.owners < targets
    given: dict[str, Any] = {}
    for u in cell.uses:
        if u == K.ENCODINGS.value:
            given[u] = rel.encodings[mask]
        elif u == K.LABELS.value:
            given[u] = rel.labels[mask].numpy() if rel.labels.ndim == 2 else rel.labels[mask]
        elif u == K.PUBLIC_POOL.value:
            given[u] = d.public.images
        elif u == K.AUXILIARY.value:
            given[u] = d.aux
        elif u == K.KNOWN_PAIRS.value:
            if s.pairs == 0:
                raise InputError("evaluate: level 3 needs known pairs (--pairs > 0)")
            x = d.train.select(np.arange(targets, targets + s.pairs)).to_tensor()
            pair_mask = (rel.owners >= targets) & (np.arange(len(rel.owners)) < len(x) + targets)
            given[u] = (x, rel.encodings[pair_mask][:len(x)])
        else:
            raise InputError(f"evaluate: no data for knowledge {u!r}")
    return given


def run_cell(cell: Cell, s: EvaluateSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one cell on ``s.threads`` CPU threads; returns (JSON-able result, arrays for the report).

    The thread count is part of the plan because it changes the numbers: training sums gradients in an order that
    depends on it. With it fixed, a cell gives the same bits in any process, serial or a Ray worker."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        return _run_cell(cell, s)
    finally:
        torch.set_num_threads(before)


def _run_cell(cell: Cell, s: EvaluateSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    d = _data(s.data, s.size, s.seed, s.train, s.test, s.auxiliary, s.public)
    if cell.kind == "utility":
        return _utility_cell(cell, s, d)
    from masquerade.registry import ATTACKS, run_attack

    rel = _release(s, cell.setting, d)
    attack = ATTACKS.create(cell.attack, **dict(cell.attack_settings))
    given = _given(cell, s, d, rel)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_cell_seed(s.seed, "torch", cell.id))
        res = run_attack(attack, rng=_cell_seed(s.seed, "attack", cell.id) % 2**31, progress=False, **given)
    seconds = time.perf_counter() - t0
    originals = d.train.images[:s.targets]
    recon = _to_u8(res.reconstructions)
    aligned = res.aligned and cell.setting.per_image == 1
    best, p, idx = best_match(originals, recon, aligned=aligned)
    metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str, bool)) and k != "history"}
    out = {"ssim": float(best.mean()), "psnr": float(p.mean()), "success": float((best > SUCCESS_SSIM).mean()),
           "per_target_ssim": [round(float(v), 4) for v in best], "cost_s": seconds, "attack_metrics": metrics}
    show = min(8, s.targets)
    arrays = {"targets": originals[:show], "matched": recon[idx], "encodings": _to_u8(_view(rel.encodings[:show]))}
    return out, arrays


def _view(z: Any) -> Any:
    """Encodings on the [0, 1] scale for a grid (magnitudes, scaled per image, where they leave it)."""
    from masquerade.attacks.asis import AsIs

    return AsIs().run(encodings=z.contiguous()).reconstructions


def _utility_cell(cell: Cell, s: EvaluateSettings, d: _Data) -> tuple[dict[str, Any], dict[str, Any]]:
    from masquerade.training import TrainSettings, train

    scheme = _make_scheme(cell.setting, d.stats)
    x = d.train.to_tensor()
    pub = d.public if cell.setting.public else None
    gen = np.random.default_rng(_cell_seed(s.seed, "encode-cost", cell.setting.slug))
    pool = 0 if pub is None else len(pub)
    t0 = time.perf_counter()
    key = scheme.keygen(len(x), rng=gen, shape=tuple(x.shape[1:]), pool_size=pool)
    scheme.encode(x, key, public=None if pub is None else pub.to_tensor(), rng=gen)
    encode_s = time.perf_counter() - t0
    ts = TrainSettings(model=s.model, epochs=s.epochs, batch_size=128, lr=0.1, augment=s.augment,
                       precision="fp32")
    r = train(d.train, d.test, scheme=scheme, public=pub, settings=ts, seed=_cell_seed(s.seed, "train",
                                                                                       cell.setting.slug) % 2**31,
              progress=False)
    result = {"utility": float(r["test_acc"]), "tested_on": r["tested_on"], "train_s": float(r["seconds"]),
              "encode_images_per_s": len(x) / max(encode_s, 1e-9), "curve": [round(h["test_acc"], 4)
                                                                             for h in r["history"]]}
    arrays: dict[str, Any] = {}
    if cell.setting.scheme == "identity":
        # the model trained on clean images is the recogniser of model-based recognition (MR): a model file's
        # bytes travel with the cell's arrays, so a cell run on another machine brings it back
        import tempfile

        from masquerade.models import save_model

        with tempfile.TemporaryDirectory(prefix="masquerade-mr-") as tmp:
            f = save_model(Path(tmp) / "recogniser.safetensors", r["model_state"], arch=s.model,
                           num_classes=_num_classes(d), mean=r["classifier"].mean, std=r["classifier"].std,
                           in_channels=x.shape[1])
            arrays["recogniser"] = np.frombuffer(f.read_bytes(), np.uint8).copy()
    return result, arrays


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
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            return None                       # unreadable: run the cell again
        if not isinstance(doc, dict) or doc.get("plan") != self.plan or doc.get("cell") != _cell_doc(cell):
            return None
        result = doc.get("result")
        return result if isinstance(result, dict) else None

    def save(self, cell: Cell, result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            save_npz(self.dir / f"{cell.file_stem}.npz", **arrays)
        write_json(self.dir / f"{cell.file_stem}.json", {"plan": self.plan, "cell": _cell_doc(cell),
                                                         "result": result})

    def arrays(self, cell: Cell) -> dict[str, np.ndarray]:
        p = self.dir / f"{cell.file_stem}.npz"
        if not p.is_file():
            return {}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def _run_remote(cell: Cell, s: EvaluateSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    return run_cell(cell, s)


def _execute(cells: list[Cell], s: EvaluateSettings, store: _Store, *, workers: int, ray_address: str | None,
             say: Callable[[str], None]) -> None:
    todo = [c for c in cells if store.load(c) is None]
    done = len(cells) - len(todo)
    if done:
        say(f"resuming: {done} of {len(cells)} cells already done")
    total = len(cells)

    def report(cell: Cell, result: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        what = f"utility {result['utility']:.3f}" if cell.kind == "utility" else \
            f"SSIM {result['ssim']:.3f}, success {result['success']:.2f}"
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
            ray.init(num_cpus=workers * s.threads, include_dashboard=False, log_to_driver=False,
                     runtime_env=env, configure_logging=False)
        else:
            ray.init(address=ray_address, log_to_driver=False, runtime_env=env, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=s.threads)(_run_remote)
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

    plain = next((c for c in cells if c.kind == "utility" and c.setting.scheme == "identity"), None)
    blob = store.arrays(plain).get("recogniser") if plain is not None else None
    if blob is None:
        return {}
    d = _data(s.data, s.size, s.seed, s.train, s.test, s.auxiliary, s.public)
    labels = torch.from_numpy(d.train.labels[:s.targets].astype(np.int64))
    with tempfile.TemporaryDirectory(prefix="masquerade-mr-") as tmp:
        f = Path(tmp) / "recogniser.safetensors"
        f.write_bytes(blob.tobytes())
        model = load_model(f)
    out = {}
    for c in cells:
        matched = store.arrays(c).get("matched") if c.kind == "attack" else None
        if matched is not None and len(matched) == len(labels):
            x = torch.from_numpy(matched).permute(0, 3, 1, 2).float() / 255
            out[c.id] = recognition_accuracy(model, x, labels)
    return out


def _rows(cells: list[Cell], s: EvaluateSettings, store: _Store) -> list[dict[str, Any]]:
    mr = _recognition(cells, s, store)
    utility = {c.setting.slug: store.load(c) for c in cells if c.kind == "utility"}
    plain = next((u for c, u in ((c, utility[c.setting.slug]) for c in cells if c.kind == "utility")
                  if c.setting.scheme == "identity"), None)
    rows = []
    for c in cells:
        if c.kind != "attack":
            continue
        r = store.load(c)
        u = utility.get(c.setting.slug)
        if r is None or u is None:
            raise InputError(f"evaluate: cell {c.id} has no result")   # _execute ran every cell
        for level in c.levels:
            rows.append({
                "scheme": c.setting.scheme, "setting": c.setting.label, "level": level, "attack": c.attack,
                "cell": c.file_stem,
                "uses": list(c.uses), "ssim": round(r["ssim"], 4), "psnr": round(r["psnr"], 2),
                "success": round(r["success"], 4),
                "mr": round(mr[c.id], 4) if c.id in mr else None, "utility": round(u["utility"], 4),
                "tested_on": u["tested_on"], "cost_s": round(r["cost_s"], 3), "train_s": round(u["train_s"], 2),
                "train_vs_plain": round(u["train_s"] / plain["train_s"], 3) if plain else None,
                "encode_images_per_s": round(u["encode_images_per_s"], 1), "seed": s.seed,
                "attack_metrics": r.get("attack_metrics", {}),
            })
    order = {st.label: i for i, st in enumerate(s.chosen())}   # a stable sort: plan order within each level
    rows.sort(key=lambda row: (order[row["setting"]], row["level"]))
    return rows


def evaluate(s: EvaluateSettings, out: str | os.PathLike[str], *, workers: int = 1, ray_address: str | None = None,
             verbose: bool = True) -> Path:
    """Run (or resume) the evaluation into ``out``; returns the path of ``scorecard.json``."""
    say = print if verbose else (lambda *_a, **_k: None)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    config = root / "config.json"
    old: dict[str, Any] | None = None
    if config.is_file():
        try:
            old = json.loads(config.read_text())
        except ValueError:
            old = None
        if not isinstance(old, dict) or old.get("plan") != s.digest():
            raise InputError(f"{root}: holds an evaluation with other settings; choose another --out")
    elif root.is_dir() and any(root.iterdir()):
        raise InputError(f"{root}: the folder exists and is not an evaluation; choose another --out")
    d = _data(s.data, s.size, s.seed, s.train, s.test, s.auxiliary, s.public)
    doc = {"evaluate": json.loads(json.dumps(dataclasses.asdict(s), default=str)), "plan": s.digest(),
           "data_sha256": _fingerprint(d)}
    if old is not None and old.get("data_sha256") != doc["data_sha256"]:
        raise InputError(f"{root}: the data changed since this evaluation started; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    write_json(config, doc)
    cells = plan_cells(s)
    store = _Store(root, s)
    say(f"evaluate: {len(s.chosen())} scheme settings, levels {','.join(map(str, s.levels))}, {len(cells)} cells"
        + (f" on {workers} Ray workers" if workers > 1 and ray_address is None else "")
        + (f" on the Ray cluster at {ray_address}" if ray_address else ""))
    t0 = time.perf_counter()
    _execute(cells, s, store, workers=workers, ray_address=ray_address, say=say)
    rows = _rows(cells, s, store)
    described = {st.label: {"scheme": st.scheme, "settings": dict(st.params), "encodings_per_image": st.per_image,
                            "note": st.note} for st in s.chosen()}
    path = write_json(root / "scorecard.json", {"rows": rows, "seed": s.seed, "plan": s.digest(),
                                                "settings": described,
                                                "levels": {str(k): LEVEL_NAMES[k] for k in s.levels},
                                                "timing_fields": list(TIMING_FIELDS)})
    from masquerade.report.scorecard import build_scorecard_report

    report = build_scorecard_report(root)
    say(f"evaluate: {len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {path}; report {report}")
    return path


def comparable(scorecard: dict[str, Any]) -> list[dict[str, Any]]:
    """The scorecard's rows without the timing fields: what two runs of one plan must agree on."""
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS and k != "attack_metrics"}
            for row in scorecard["rows"]]

