"""Every model-running attack and training, a few steps on a device against the same steps on the CPU.

    python benchmarks/gpu_smoke.py                 # --device cuda (the default): needs a CUDA GPU
    python benchmarks/gpu_smoke.py --device mps    # Apple silicon
    python benchmarks/gpu_smoke.py --device cpu    # the script's own check: both sides on the CPU, equal bits

Each check runs a small job twice from the same seed, once on the CPU and once on ``--device``, and compares what
came out within a tolerance that float arithmetic on another device allows (GPU kernels sum in other orders and use
TF32 where allowed, so results are close, not equal). It prints one row per check (seconds on each side, the
difference, the bound) and exits 1 when any check fails. Data: the bundled digits and photos (no download), plus a
small colour set made from them for the challenge prior.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import masquerade as mq  # noqa: E402
from masquerade.devices import resolve_device  # noqa: E402
from masquerade.errors import InputError  # noqa: E402
from masquerade.registry import run_attack  # noqa: E402


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float().cpu() - b.float().cpu()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _model(arch: str, classes: int, channels: int, seed: int) -> torch.nn.Module:
    from masquerade.models import Normalized, create_model

    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's global generator untouched
        torch.manual_seed(seed)
        return Normalized(
            create_model(arch, num_classes=classes, in_channels=channels), [0.5] * channels, [0.25] * channels
        ).eval()


# -- the checks: each returns (what it compares, the difference, the bound, a pass/fail) from its two runs ------


def check_training() -> Callable[[torch.device], Any]:
    from masquerade.training import TrainSettings, train

    digits = mq.load_images("bundled:digits", size=32)
    tr, te = digits.select(np.arange(600)), digits.select(np.arange(600, 900))
    s = TrainSettings(model="convnet16", epochs=2, batch_size=64, lr=0.05, augment=True, precision="fp32")

    def run(dev: torch.device) -> Any:
        return train(tr, te, scheme=mq.create_scheme("instahide", k=2), settings=s, seed=0, progress=False, device=dev)

    return run


def compare_training(a: Any, b: Any) -> tuple[str, float, float]:
    return "epoch-1 loss, rel.", _rel(a["history"][0]["train_loss"], b["history"][0]["train_loss"]), 0.02


def _client(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x = mq.load_images("bundled:photos", size=32).to_tensor()[:2]
    y = torch.tensor([1, 4])
    return _model("convnet16", 10, 3, seed), x, y


def check_gradient(name: str, **settings: Any) -> Callable[[torch.device], Any]:
    def run(dev: torch.device) -> Any:
        from masquerade.attacks.gradient_inversion import client_gradient

        model, x, y = _client()
        grads = client_gradient(model, x[:1], y[:1])
        atk = mq.create_attack(name, **settings)
        return run_attack(atk, model=model, gradients=grads, labels=y[:1], rng=0, device=dev)

    return run


def compare_images(a: Any, b: Any) -> tuple[str, float, float]:
    return "PSNR between the two, dB (>=)", _psnr(a.reconstructions, b.reconstructions), 25.0


def check_adaptive(dev: torch.device) -> Any:
    from masquerade.ats.privacy import attack_model

    model, x, y = _client()
    return attack_model(
        model,
        x,
        y,
        policy="3-1-7",
        always=True,
        attack="ats-adaptive",
        attack_settings={"iterations": 40, "refine_iterations": 40, "keep": 2},
        rng=0,
        device=dev,
    )


def compare_adaptive(a: Any, b: Any) -> tuple[str, float, float]:
    return "mean PSNR to the originals, |dB|", abs(float(a["psnr"].mean()) - float(b["psnr"].mean())), 1.0


def _feature_inputs() -> tuple[Any, Any, Any]:
    from masquerade.attacks.feature_inversion import FeatureAPI

    digits = mq.load_images("bundled:digits", size=32)
    api = FeatureAPI.from_model(_model("convnet16", 10, 1, 0))
    aux = digits.select(np.arange(400))
    victims = api.predict(digits.select(np.arange(400, 440)).to_tensor())
    return api, aux, victims


def check_feature(name: str, **settings: Any) -> Callable[[torch.device], Any]:
    def run(dev: torch.device) -> Any:
        api, aux, victims = _feature_inputs()
        return run_attack(
            mq.create_attack(name, **settings), encodings=victims, auxiliary=aux, api=api, rng=0, device=dev
        )

    return run


def compare_attributes(a: Any, b: Any) -> tuple[str, float, float]:
    agree = float((a.recovered["attributes"] == b.recovered["attributes"]).float().mean())
    return "attributes that differ, share", 1 - agree, 0.2


def check_prior(dev: torch.device) -> Any:
    from masquerade.instahide.prior import default_prior

    prior = default_prior()
    if prior is None:
        raise InputError("no challenge prior is shipped with this installation (run `make weights`)")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 32 * 32 * 3, generator=g) * 2 - 1
    pairs = np.stack([np.arange(64) % 32, (np.arange(64) + 1) % 32], 1)
    lam = np.full((64, 2), 0.3)
    return prior.to(dev)(x, pairs, lam, None)


def compare_prior(a: Any, b: Any) -> tuple[str, float, float]:
    return "largest difference", float((a - b).abs().max()), 2e-3


def check_prepare(dev: torch.device) -> Any:
    from masquerade.fileio import save_npz
    from masquerade.instahide.prior import PriorSettings, prepare_prior

    digits = mq.load_images("bundled:digits", size=32).to_rgb()
    with tempfile.TemporaryDirectory() as tmp:
        save_npz(Path(tmp) / "aux.npz", images=digits.images[:300], labels=digits.labels[:300])
        return prepare_prior(
            Path(tmp) / "aux.npz",
            Path(tmp) / "prior.safetensors",
            log=lambda _m: None,
            settings=PriorSettings(passes=(5,), challenges=1, steps=20, seed=0),
            device=dev,
        )


def compare_prepare(a: Any, b: Any) -> tuple[str, float, float]:
    return "final loss, rel.", _rel(float(a["final_loss"]), float(b["final_loss"])), 0.05


def check_ecb(dev: torch.device) -> Any:
    digits = mq.load_images("bundled:digits", size=16).to_rgb().to_tensor()
    x, aux = digits[:60], digits[60:360]
    ecb = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True)
    z = ecb.encode(x, ecb.keygen(0, rng=0, shape=(3, 16, 16)))
    atk = mq.create_attack("aes-ecb-codebook", decoder_steps=40, decoder_width=8)
    return run_attack(atk, encodings=z[20:], known_pairs=(x[:20], z[:20]), auxiliary=aux, rng=0, device=dev)


def check_camouflage(dev: torch.device) -> Any:
    from masquerade.quality.camouflage import CamouflageSettings, camouflage
    from masquerade.quality.models import BrisqueQuality

    x = mq.load_images("bundled:photos", size=96).to_tensor()[:2]
    return camouflage(BrisqueQuality(), x, CamouflageSettings(method="pgd", steps=5), rng=0, device=dev)


def compare_camouflage(a: Any, b: Any) -> tuple[str, float, float]:
    return "PSNR between the two, dB (>=)", _psnr(a, b), 30.0


def check_search(dev: torch.device) -> Any:
    from masquerade.ats.search import SearchSettings, search

    photos = mq.load_images("bundled:digits", size=32).to_rgb()
    return search(
        trained=_model("convnet16", 10, 3, 1),
        init=_model("convnet16", 10, 3, 2),
        images=photos.to_tensor()[:200],
        labels=torch.from_numpy(photos.labels[:200]),
        settings=SearchSettings(privacy_images=8, acc_images=16, acc_runs=2, bins=4, workers=1),
        candidates=["3-1-7", "43-18-18"],
        rng=0,
        progress=False,
        device=dev,
    )


def compare_search(a: Any, b: Any) -> tuple[str, float, float]:
    pa = {r["policy"]: r["s_pri"] for r in a["table"]}
    pb = {r["policy"]: r["s_pri"] for r in b["table"]}
    return "S_pri, largest rel. difference", max(_rel(pa[k], pb[k]) for k in pa), 0.01


CHECKS: list[tuple[str, Callable[[torch.device], Any], Callable[[Any, Any], tuple[str, float, float]]]] = [
    ("train (InstaHide k=2, 2 epochs)", check_training(), compare_training),
    ("inverting_gradients (60 it.)", check_gradient("inverting_gradients", iterations=60, restarts=2), compare_images),
    ("dlg (10 it.)", check_gradient("dlg", iterations=10), compare_images),
    ("ats-adaptive (3-1-7, 40+40 it.)", check_adaptive, compare_adaptive),
    ("feature-attribute (3 epochs)", check_feature("feature-attribute", epochs=3), compare_attributes),
    ("feature-inversion, pixel (2 epochs)", check_feature("feature-inversion", epochs=2), compare_images),
    (
        "feature-inversion, feature (1+1 epochs)",
        check_feature("feature-inversion", loss="feature", epochs=1, surrogate_epochs=1),
        compare_images,
    ),
    ("instahide-challenge prior", check_prior, compare_prior),
    ("challenge prepare (20 steps)", check_prepare, compare_prepare),
    ("aes-ecb-codebook fill network (40 steps)", check_ecb, compare_images),
    ("camouflage pgd, BRISQUE (5 steps)", check_camouflage, compare_camouflage),
    ("search (2 policies)", check_search, compare_search),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="the device to check against the CPU (default cuda)")
    ap.add_argument("--only", help="run the checks whose name contains this text")
    args = ap.parse_args()
    try:
        dev = resolve_device(args.device)
    except InputError as exc:
        print(f"gpu_smoke: {exc}", file=sys.stderr)
        return 2
    from masquerade.devices import device_label

    print(f"device: {device_label(dev)}; torch {torch.__version__}")
    print(f"{'check':44s} {'cpu s':>7s} {'dev s':>7s}  {'compared':34s} {'value':>9s} {'bound':>7s}  ok")
    failed = 0
    for name, run, compare in CHECKS:
        if args.only and args.only not in name:
            continue
        try:
            t0 = time.perf_counter()
            a = run(torch.device("cpu"))
            t1 = time.perf_counter()
            b = run(dev)
            t2 = time.perf_counter()
            what, value, bound = compare(a, b)
        except Exception as exc:  # noqa: BLE001 - one row per check, whatever went wrong
            failed += 1
            print(f"{name:44s} FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
            continue
        ok = value >= bound if "(>=)" in what else value <= bound
        failed += not ok
        verdict = "yes" if ok else "NO"
        print(f"{name:44s} {t1 - t0:7.1f} {t2 - t1:7.1f}  {what:34s} {value:9.4g} {bound:7.3g}  {verdict}")
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
