"""What one cell computes: the data split every cell shares, the protected release, what each threat level gives
an attack, the scores (best-match SSIM, PSNR, success), and a setting's utility. Each cell is a pure function of the
plan and the seed, on the plan's thread count, so it gives the same bits in any process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from masquerade.contracts import label_mixer
from masquerade.errors import InputError
from masquerade.workflows.evaluate.plan import (
    PLAIN,
    Cell,
    EvaluateSettings,
    K,
    SchemeSetting,
    _make_scheme,
    is_plain,
)

__all__ = ["run_cell", "data_for", "unfit", "ENCODED_INFERENCE"]

# fresh encodings of each test image whose softmax is averaged, for a one-time-key scheme's second utility figure
ENCODED_INFERENCE = 8

# -- data: one split for every cell, the same in every process ----------------------------------------------------


@dataclass
class _Data:
    train: Any  # ImageSet (uint8 NHWC, RGB, square)
    test: Any
    aux: Any
    public: Any  # ImageSet of public patches, or None when no setting mixes them in
    stats: tuple[tuple[float, ...], tuple[float, ...]]


@lru_cache(maxsize=2)
def _data(
    data: str,
    size: int | None,
    seed: int,
    n_train: int,
    n_test: int,
    n_aux: int,
    n_public: int,
    photos: str = "bundled:photos",
) -> _Data:
    from masquerade.data import load_images, public_pool

    ds = load_images(data, size=size)
    if ds.labels is None:
        raise InputError(f"{data}: evaluate needs labelled images (class sub-folders, or labels in the .npz)")
    ds = ds.to_rgb() if ds.image_shape[2] == 1 else ds
    need = n_train + n_test + n_aux
    if len(ds) < need:
        raise InputError(
            f"{data}: {len(ds)} images; this evaluation needs {need} ({n_train} training, {n_test} "
            f"test, {n_aux} auxiliary): lower --train/--test/--auxiliary"
        )
    order = np.random.default_rng([seed, 0xDA7A]).permutation(len(ds))
    test, aux, train = (
        ds.select(order[:n_test]),
        ds.select(order[n_test : n_test + n_aux]),
        ds.select(order[n_test + n_aux : need]),
    )
    x = train.images.astype(np.float64) / 255
    stats = (tuple(float(v) for v in x.mean((0, 1, 2))), tuple(float(max(v, 1e-3)) for v in x.std((0, 1, 2))))
    h, w = ds.image_shape[:2]
    if h != w:
        raise InputError(
            f"{data}: images are {h}×{w}; the public patches and attacks need square images (--size N resizes them)"
        )
    pub = public_pool(photos, n_public, size=h, rng=seed) if n_public else None
    return _Data(train, test, aux, pub, stats)


def data_for(s: EvaluateSettings) -> _Data:
    """The plan's split (cached per process); public patches are cut only when a chosen setting mixes them in."""
    public = s.public if any(st.public for st in s.chosen()) else 0
    return _data(s.data, s.size, s.seed, s.train, s.test, s.auxiliary, public, s.public_photos)


def unfit(s: EvaluateSettings, d: _Data) -> dict[str, str]:
    """The chosen settings these images do not fit (a block size that does not divide them, a private set smaller
    than what a mix needs, ...), with the scheme's own reason: each is tried on the private set before any cell
    runs, as its release will be."""
    out = {}
    x = d.train.select(np.arange(s.targets + s.pairs)).to_tensor()
    from masquerade.models.resnet import check_input

    for st in s.chosen():
        if st.shares == "features":  # feature vectors fit every setting (ShuffleBits takes any float32)
            continue
        if st.shares == "gradients":  # the server's federated model must take the client's images
            try:
                check_input(s.inversion_model, tuple(x.shape[1:]), what="--inversion-model")
            except InputError as exc:
                out[st.label] = str(exc)
                continue
        scheme = _make_scheme(st, d.stats)
        pub = d.public.to_tensor() if st.public else None
        try:
            key = scheme.keygen(len(x), rng=0, shape=tuple(x.shape[1:]), pool_size=0 if pub is None else len(pub))
            scheme.encode(x, key, public=pub, rng=0)
        except InputError as exc:
            out[st.label] = str(exc)
    return out


def _fingerprint(d: _Data) -> str:
    """SHA-256 of the split's pixels and labels: a resumed evaluation must see the data it started with."""
    h = hashlib.sha256()
    for part in (d.train, d.test, d.aux, d.public):
        if part is None:
            continue
        h.update(np.ascontiguousarray(part.images).tobytes())
        if part.labels is not None:
            h.update(np.ascontiguousarray(part.labels).tobytes())
    return h.hexdigest()


def _cell_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


@dataclass
class _Release:
    encodings: Any  # torch float32 E×C×H×W: what the scheme releases of the private set
    labels: Any  # E×classes soft labels (InstaHide) or E hard labels
    owners: np.ndarray  # E: the private image in slot 0 of each encoding (its own image, if one-time)


def _num_classes(d: _Data) -> int:
    return max(d.train.num_classes, d.test.num_classes)


def _release(s: EvaluateSettings, setting: SchemeSetting, d: _Data) -> _Release:
    """The protected data, as their owner releases them. Under one dataset key (``per_image`` 1: the disguised
    training set a server trains on, as the utility cell does) that is the whole training set, its first images the
    targets and the known pairs: the server holds every disguised image, and statistics over all of them are part of
    what it knows. With ``per_image`` one-time keys (InstaHide) it is the private set, ``per_image`` times."""
    import torch

    scheme = _make_scheme(setting, d.stats)
    private = d.train if setting.per_image == 1 else d.train.select(np.arange(s.targets + s.pairs))
    x = private.to_tensor()
    n = len(x)
    gen = np.random.default_rng(_cell_seed(s.seed, "release", setting.slug))
    pub = d.public.to_tensor() if setting.public else None
    num_classes = _num_classes(d)
    encs, labs = [], []
    for _ in range(setting.per_image):
        key = scheme.keygen(n, rng=gen, shape=tuple(x.shape[1:]), pool_size=0 if pub is None else len(pub))
        encs.append(scheme.encode(x, key, public=pub, rng=gen))
        mix = label_mixer(scheme)
        labs.append(
            mix(private.labels, key, num_classes)
            if mix is not None
            else torch.from_numpy(private.labels.astype(np.int64))
        )
    return _Release(torch.cat(encs), torch.cat(labs), np.tile(np.arange(n), setting.per_image))


# -- scoring -----------------------------------------------------------------------------------------------------


def _to_u8(t: Any) -> np.ndarray:
    """N×C×H×W [0, 1] images as uint8 N×H×W×C, through the project's one quantiser."""
    import torch

    from masquerade.data import to_uint8

    return to_uint8(torch.as_tensor(t)).permute(0, 2, 3, 1).contiguous().numpy()


# -- cells -------------------------------------------------------------------------------------------------------


def _given(cell: Cell, s: EvaluateSettings, d: _Data, rel: _Release) -> dict[str, Any]:
    """What the cell's knowledge gives the attack, in the forms attacks take."""
    # every released encoding is given: a dataset key's cover the training set, targets first (an aligned attack is
    # scored on its first reconstructions); one-time encodings mix private images
    targets = s.targets
    given: dict[str, Any] = {}
    for u in cell.uses:
        if u == K.ENCODINGS.value:
            given[u] = rel.encodings
        elif u == K.LABELS.value:
            given[u] = rel.labels.numpy() if rel.labels.ndim == 2 else rel.labels
        elif u == K.PUBLIC_POOL.value:
            given[u] = d.public.images
        elif u == K.AUXILIARY.value:
            given[u] = d.aux
        elif u == K.KNOWN_PAIRS.value:
            if s.pairs == 0:
                raise InputError("evaluate: level 3 needs known pairs (--pairs > 0)")
            x = d.train.select(np.arange(targets, targets + s.pairs)).to_tensor()
            pair_mask = (rel.owners >= targets) & (np.arange(len(rel.owners)) < len(x) + targets)
            given[u] = (x, rel.encodings[pair_mask][: len(x)])
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
    d = data_for(s)
    if cell.kind == "utility":
        return _utility_cell(cell, s, d)
    if cell.setting.shares == "gradients":
        return _gradient_cell(cell, s, d)
    if cell.setting.shares == "features":
        return _feature_cell(cell, s, d)
    rel = _release(s, cell.setting, d)
    res, seconds = _attack(cell, s, _given(cell, s, d, rel))
    originals = d.train.images[: s.targets]
    recon = _to_u8(res.reconstructions)
    from masquerade.metrics.privacy import best_match

    best, p, idx = best_match(originals, recon, aligned=res.aligned and cell.setting.per_image == 1)
    out = _scores(best, p, seconds, _plain_metrics(res))
    show = min(8, s.targets)
    arrays = {"targets": originals[:show], "matched": recon[idx], "encodings": _to_u8(_view(rel.encodings[:show]))}
    return out, arrays


def _attack(cell: Cell, s: EvaluateSettings, given: dict[str, Any]) -> tuple[Any, float]:
    """Run the cell's attack on what it is given, seeded from the plan; returns the result and its seconds."""
    import torch

    from masquerade.registry import ATTACKS, run_attack

    attack = ATTACKS.create(cell.attack, **dict(cell.attack_settings))
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_cell_seed(s.seed, "torch", cell.id))
        res = run_attack(
            attack, rng=_cell_seed(s.seed, "attack", cell.id) % 2**31, progress=False, device=s.device, **given
        )
    return res, time.perf_counter() - t0


def _plain_metrics(res: Any) -> dict[str, Any]:
    """An attack's metrics that are single JSON values (its loss history left out)."""
    return {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str, bool)) and k != "history"}


def _scores(best: np.ndarray, p: np.ndarray, seconds: float, metrics: dict[str, Any]) -> dict[str, Any]:
    """A cell's result from each target's best-match SSIM and PSNR."""
    from masquerade.metrics.privacy import SUCCESS_SSIM

    return {
        "ssim": float(best.mean()),
        "psnr": float(p.mean()),
        "success": float((best > SUCCESS_SSIM).mean()),
        "per_target_ssim": [round(float(v), 4) for v in best],
        "cost_s": seconds,
        "attack_metrics": metrics,
    }


def _gradient_cell(cell: Cell, s: EvaluateSettings, d: _Data) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gradient inversion as ATS measures it: each of the first ``inversion_images`` targets is one client update
    (batch 1) of the federated model at initialisation, computed on the image the client's policy transformed; the
    reconstruction is scored against the untransformed image, which is what the policy protects."""
    import torch

    from masquerade.ats.privacy import attack_model
    from masquerade.attacks.gradient_inversion import GradientInversion
    from masquerade.models import Normalized, create_model
    from masquerade.registry import ATTACKS

    n = min(s.targets, s.inversion_images)
    x = d.train.select(np.arange(n)).to_tensor()
    y = torch.from_numpy(d.train.labels[:n].astype(np.int64))
    mean, std = d.stats
    with torch.random.fork_rng(devices=[]):
        # one model for every policy (seeded without the setting): the policies are compared on the same server
        torch.manual_seed(_cell_seed(s.seed, "federated-model"))
        model = Normalized(
            create_model(s.inversion_model, num_classes=_num_classes(d), in_channels=x.shape[1]), mean, std
        ).eval()
    atk = ATTACKS.create(cell.attack, **dict(cell.attack_settings), mean=mean, std=std, image_shape=tuple(x.shape[1:]))
    if not isinstance(atk, GradientInversion):
        raise InputError(f"evaluate: {cell.attack} is not a gradient inversion attack")
    params = dict(cell.setting.params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_cell_seed(s.seed, "torch", cell.id))
        res = attack_model(
            model,
            x,
            y,
            policy=params.get("policy", "none"),
            always=bool(params.get("always")),
            attack=atk,
            known_labels=K.LABELS.value in cell.uses,
            # seeded per setting, not per attack: every attack on a row faces the same client
            # updates (the same policy draws), so blind and adaptive inversions compare directly
            rng=_cell_seed(s.seed, "attack", cell.setting.slug) % 2**31,
            progress=False,
            device=s.device,
        )
    originals = d.train.images[:n]
    recon = _to_u8(res["reconstructions"])
    from masquerade.metrics.privacy import best_match

    best, p, _ = best_match(originals, recon, aligned=True)
    # what the policy destroyed (pixels a translation pushed out) apart from what it hides: scores on kept pixels
    kept = {
        k: round(float(np.nanmean(v)), 4) if np.isfinite(v).any() else None  # None: nothing kept
        for k, v in ((k, res[k].numpy()) for k in ("psnr_kept", "ssim_kept"))
    }
    out = _scores(
        best,
        p,
        float(res["seconds"]),
        {
            "targets": n,
            "iterations": int(res["iterations"]),
            "model": s.inversion_model,
            "psnr_vs_transformed": float(res["psnr_transformed"].mean()),
            **kept,
            "kept": round(float(res["kept"].mean()), 4),
        },
    )
    show = min(8, n)
    return out, {"targets": originals[:show], "matched": recon, "encodings": _to_u8(res["transformed"][:show])}


# -- deep features (ShuffleBits) --------------------------------------------------------------------------------


def _train_settings(s: EvaluateSettings) -> Any:
    from masquerade.training import TrainSettings

    return TrainSettings(model=s.model, epochs=s.epochs, batch_size=128, lr=0.1, augment=s.augment, precision="fp32")


@lru_cache(maxsize=1)
def _plain_training(s: EvaluateSettings) -> dict[str, Any]:
    """The model trained on the clean training images (the identity setting's utility cell, the same bits): the
    service whose penultimate features a feature setting releases. Trained once per process."""
    from masquerade.registry import create_scheme
    from masquerade.training import train

    d = data_for(s)
    return train(
        d.train,
        d.test,
        scheme=create_scheme("identity"),
        settings=_train_settings(s),
        seed=_cell_seed(s.seed, "train", PLAIN.slug) % 2**31,
        progress=False,
        device=s.device,
    )


def _feature_api(s: EvaluateSettings) -> Any:
    from masquerade.attacks.feature_inversion import FeatureAPI

    return FeatureAPI.from_model(_plain_training(s)["classifier"])


def _feature_release(setting: SchemeSetting, s: EvaluateSettings, x: Any, label: str) -> tuple[Any, Any, Any, float]:
    """(features, their release, the key, encode seconds) of images ``x`` under ``setting``."""
    features = _feature_api(s).predict(x)
    scheme = _make_scheme(setting)
    if scheme.data_kind != "features":  # a scheme of images leaves features in the clear (the baseline)
        return features, features.clone(), None, 0.0
    gen = np.random.default_rng(_cell_seed(s.seed, label, setting.slug))
    t0 = time.perf_counter()
    key = scheme.keygen(len(features), rng=gen, shape=tuple(features.shape[1:]))
    z = scheme.encode(features, key)
    return features, z, key, time.perf_counter() - t0


def _feature_cell(cell: Cell, s: EvaluateSettings, d: _Data) -> tuple[dict[str, Any], dict[str, Any]]:
    """An attack on released features: the targets' features, protected, with what the level gives."""
    import torch

    x = d.train.select(np.arange(s.targets)).to_tensor()
    features, z, key, _ = _feature_release(cell.setting, s, x, "release")
    given: dict[str, Any] = {}
    for u in cell.uses:
        if u == K.ENCODINGS.value:
            given[u] = z
        elif u == K.AUXILIARY.value:
            given[u] = d.aux
        elif u == K.API.value:
            given[u] = _feature_api(s)
        elif u == K.LABELS.value:
            given[u] = torch.from_numpy(d.train.labels[: s.targets].astype(np.int64))
        else:
            raise InputError(f"evaluate: no data for knowledge {u!r} against features")
    res, seconds = _attack(cell, s, given)
    originals = d.train.images[: s.targets]
    recon = _to_u8(res.reconstructions)
    from masquerade.metrics.privacy import best_match

    best, p, idx = best_match(originals, recon, aligned=res.aligned)
    metrics = _plain_metrics(res)
    if "perm" in res.recovered:
        # how close the recovered bit order decrypts the features (low mantissa bits cannot be ordered from
        # ciphertexts, and barely matter): the mean cosine similarity of decrypted and true feature vectors
        from masquerade.shufflebits.attacks import as_words
        from masquerade.shufflebits.scheme import shuffle_words

        plain = shuffle_words(as_words(z, "evaluate"), np.asarray(res.recovered["perm"]), "fixed", inverse=True)
        with np.errstate(invalid="ignore"):  # signalling NaN patterns warn when widened
            dec = torch.from_numpy(plain.view(np.float32).astype(np.float64)).nan_to_num(0.0, 0.0, 0.0)
        cos = torch.nn.functional.cosine_similarity(dec, features.reshape(len(z), -1).double(), dim=1)
        metrics["decrypted_cosine"] = float(cos.mean())
    show = min(8, s.targets)
    return _scores(best, p, seconds, metrics), {
        "targets": originals[:show],
        "matched": recon[idx],
        "encodings": _feature_strip(z[:show]),
    }


def _feature_strip(z: Any) -> np.ndarray:
    """Released feature vectors as a grid row: each vector's 32-bit words as a square of grey levels (the high
    byte of every word), so a reader sees bit patterns, not images."""
    from masquerade.shufflebits.attacks import as_words

    words = as_words(z, "evaluate")
    side = int(np.ceil(np.sqrt(words.shape[1])))
    grey = np.zeros((len(z), side * side), np.uint8)
    grey[:, : words.shape[1]] = (words >> 24).astype(np.uint8)
    return np.repeat(grey.reshape(len(z), side, side, 1), 3, axis=3)


def _feature_utility(cell: Cell, s: EvaluateSettings, d: _Data) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the key holder does with released features: decrypt them and classify with the service's last layer.
    ShuffleBits is lossless, so this checks the round trip bit for bit on the test images and measures the cost."""
    import torch

    r = _plain_training(s)
    clf = r["classifier"]
    x = d.test.to_tensor()
    features, z, key, encode_s = _feature_release(cell.setting, s, x, "utility")
    back = z if key is None else _make_scheme(cell.setting).decode(z, key)
    if not torch.equal(back.view(torch.int32), features.view(torch.int32)):
        raise InputError(f"evaluate: {cell.setting.label} did not decrypt the test features bit for bit")
    last = [m for m in clf.modules() if isinstance(m, torch.nn.Linear)][-1]
    # the model's own forward pass with the decrypted features in place of the computed ones at its last layer
    handle = last.register_forward_pre_hook(lambda _m, _inp: (back,))
    try:
        with torch.no_grad():
            pred = clf(x).argmax(1).numpy()
    finally:
        handle.remove()
    acc = float((pred == d.test.labels).mean())
    return {
        "utility": acc,
        "tested_on": "clean (decrypted features, the clean-trained model)",
        "train_s": float(r["seconds"]),
        "encode_images_per_s": len(x) / encode_s if encode_s else None,
        "curve": [],
    }, {}


def _view(z: Any) -> Any:
    """Encodings on the [0, 1] scale for a grid (magnitudes, scaled per image, where they leave it)."""
    from masquerade.attacks.asis import AsIs

    return AsIs().run(encodings=z.contiguous()).reconstructions


def _utility_cell(cell: Cell, s: EvaluateSettings, d: _Data) -> tuple[dict[str, Any], dict[str, Any]]:
    from masquerade.training import train

    if cell.setting.shares == "features":
        return _feature_utility(cell, s, d)
    scheme = _make_scheme(cell.setting, d.stats)
    x = d.train.to_tensor()
    pub = d.public if cell.setting.public else None
    gen = np.random.default_rng(_cell_seed(s.seed, "encode-cost", cell.setting.slug))
    pool = 0 if pub is None else len(pub)
    t0 = time.perf_counter()
    key = scheme.keygen(len(x), rng=gen, shape=tuple(x.shape[1:]), pool_size=pool)
    scheme.encode(x, key, public=None if pub is None else pub.to_tensor(), rng=gen)
    encode_s = time.perf_counter() - t0
    if cell.setting == PLAIN:
        r = _plain_training(s)  # shared with the feature settings, which release its features
    else:
        ts = _train_settings(s)
        if cell.setting.per_image > 1:
            # one-time keys (InstaHide): also test the paper's other way, on fresh encodings of each test image
            ts = dataclasses.replace(ts, infer_encodings=ENCODED_INFERENCE)
        r = train(
            d.train,
            d.test,
            scheme=scheme,
            public=pub,
            settings=ts,
            seed=_cell_seed(s.seed, "train", cell.setting.slug) % 2**31,
            progress=False,
            device=s.device,
        )
    result = {
        "utility": float(r["test_acc"]),
        "tested_on": r["tested_on"],
        "train_s": float(r["seconds"]),
        "encode_images_per_s": len(x) / max(encode_s, 1e-9),
        "curve": [round(h["test_acc"], 4) for h in r["history"]],
    }
    if "test_acc_encoded" in r:
        result["utility_encoded"] = float(r["test_acc_encoded"])
    arrays: dict[str, Any] = {}
    if is_plain(cell.setting):
        # the model trained on clean images is the recogniser of model-based recognition (MR): a model file's
        # bytes travel with the cell's arrays, so a cell run on another machine brings it back
        import tempfile

        from masquerade.models import save_model

        with tempfile.TemporaryDirectory(prefix="masquerade-mr-") as tmp:
            f = save_model(
                Path(tmp) / "recogniser.safetensors",
                r["model_state"],
                arch=s.model,
                num_classes=_num_classes(d),
                mean=r["classifier"].mean,
                std=r["classifier"].std,
                in_channels=x.shape[1],
            )
            arrays["recogniser"] = np.frombuffer(f.read_bytes(), np.uint8).copy()
    return result, arrays
