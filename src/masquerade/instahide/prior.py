"""A learned image prior for the InstaHide Challenge attack: a small denoiser trained on challenges the attacker
simulates from its own labelled images.

The attack's reconstruction is a per-pixel estimate with a smoothness prior; with few encodings per image the
public patches' noise dominates it (at T = 10 and 20, even with the true pairing, few images pass SSIM 0.8). A
network that has seen many (reconstruction, original) pairs knows what natural 32×32 images look like and what the
reconstruction's errors look like (blur, residual public texture, colour shifts, ghosts of wrongly paired images).

``prepare_prior`` makes the training pairs the way the attack meets them: challenges by the official recipe
(k = 6, upper 0.65, dom 0.3) from auxiliary images -- never the private ones -- at several T, reconstructed
with their true pairing partly corrupted (a random share of the slots moved to another image of the class, as
the attack's grouping errs), then trains :class:`~masquerade.models.denoiser.ReconstructionDenoiser` with
1 - SSIM (the challenge's metric, 7×7 window) plus L1. Every simulation is written to a work folder as it is
made and training checkpoints every few hundred steps, so a killed preparation resumes. The result is one
``.safetensors`` file whose metadata holds the settings, the training record and the data's provenance.

The package ships weights prepared with ``make weights`` (CIFAR-10 training images, ImageNet-sample patches);
:func:`default_prior` loads them after checking their SHA-256 against the record beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from masquerade.devices import model_device, resolve_device
from masquerade.errors import InputError
from masquerade.fileio import parse_json, read_json
from masquerade.metrics.ssim import ssim_loss
from masquerade.models.denoiser import ReconstructionDenoiser

__all__ = [
    "PriorSettings",
    "ChallengePrior",
    "prepare_prior",
    "load_prior",
    "default_prior",
    "resolve_prior",
    "evidence",
    "SHIPPED_PRIOR",
]

PRIOR_KIND = "instahide-challenge-prior"
SHIPPED_PRIOR = Path(__file__).resolve().parents[1] / "weights" / "instahide_challenge_prior.safetensors"


@dataclass(frozen=True)
class PriorSettings:
    passes: tuple[int, ...] = (10, 20, 50)  # T of the simulated challenges
    challenges: int = 20  # simulated challenges per T
    images: int = 100  # private images per simulated challenge (balanced over classes)
    corrupt: tuple[float, float] = (0.2, 0.4)  # most of the larger / smaller slots moved to a wrong image
    steps: int = 8000  # training steps (Adam, cosine learning-rate decay)
    batch: int = 32
    lr: float = 1e-3
    l1: float = 0.5  # weight of L1 beside 1 - SSIM
    width: int = 48
    public_patches: int = 2000
    k: int = 6
    upper: float = 0.65
    dom: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.passes or min(self.passes) < 1 or self.challenges < 1 or self.images < 4:
            raise InputError("challenge prior: passes >= 1, challenges >= 1 and images >= 4")
        if not all(0 <= v < 1 for v in self.corrupt) or len(self.corrupt) != 2:
            raise InputError("challenge prior: corrupt holds two shares in [0, 1)")
        if self.steps < 1 or self.batch < 1 or self.lr <= 0 or self.l1 < 0 or self.width < 4:
            raise InputError("challenge prior: steps >= 1, batch >= 1, lr > 0, l1 >= 0, width >= 4")


def evidence(pairs: np.ndarray, lam: np.ndarray, weights: np.ndarray | None, n_images: int) -> torch.Tensor:
    """Per image, log of the sum of its squared coefficients over the (weighted) encodings that hold it."""
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, np.float64)
    lam = np.asarray(lam, np.float64)
    tot = np.zeros(n_images)
    np.add.at(tot, pairs[:, 0], w * lam[:, 0] ** 2)
    second = pairs[:, 1] != pairs[:, 0]
    np.add.at(tot, pairs[second, 1], w[second] * lam[second, 1] ** 2)
    return torch.from_numpy(np.log(np.maximum(tot, 1e-6))).float()


class ChallengePrior:
    """A loaded prior: ``prior(x, pairs, lam, weights, shape)`` maps reconstructions (n×H·W·C on [-1, 1]) to
    cleaner ones."""

    def __init__(self, model: ReconstructionDenoiser, meta: dict[str, Any], source: str) -> None:
        self.model = model.eval()
        self.meta = meta
        self.source = source
        self.fingerprint = meta.get("sha256", "")[:16]

    def __call__(
        self,
        x: torch.Tensor,
        pairs: np.ndarray,
        lam: np.ndarray,
        weights: np.ndarray | None,
        shape: tuple[int, int, int] = (32, 32, 3),
    ) -> torch.Tensor:
        n = len(x)
        dev = model_device(self.model)  # the images go where the denoiser is, and come back
        img = x.float().reshape(n, *shape).permute(0, 3, 1, 2)
        info = evidence(pairs, lam, weights, n)
        out = []
        with torch.no_grad():
            for lo in range(0, n, 256):
                out.append(self.model(img[lo : lo + 256].to(dev), info[lo : lo + 256].to(dev)).cpu())
        return torch.cat(out).permute(0, 2, 3, 1).reshape(n, -1)

    def to(self, device: Any) -> "ChallengePrior":
        """The prior with its denoiser moved (in place) to ``device`` (a ``torch.device``)."""
        self.model = self.model.to(device)
        return self

    def fits(self, shape: tuple[int, int, int]) -> bool:
        return shape[2] == 3 and shape[0] % 4 == 0 and shape[1] % 4 == 0

    def __repr__(self) -> str:
        return f"ChallengePrior(source={self.source!r}, sha256={self.fingerprint!r})"


def load_prior(path: str | os.PathLike[str], *, sha256: str | None = None) -> ChallengePrior:
    """Load a prior written by :func:`prepare_prior`; with ``sha256``, refuse a file whose digest differs."""
    from masquerade.models.io import read_safetensors

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such prior file")
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise InputError(
            f"{p}: SHA-256 {digest[:16]}… differs from the recorded {sha256[:16]}… (damaged or "
            f"replaced; run `make weights` or `masquerade challenge prepare` again)"
        )
    meta, state = read_safetensors(p, "challenge prior file")
    if meta.get("kind") != PRIOR_KIND:
        raise InputError(f"{p}: not a challenge prior file (kind {meta.get('kind')!r})")
    doc = parse_json(meta.get("settings", "null"), where=f"{p}: prior metadata 'settings'")
    width = doc.get("width") if isinstance(doc, dict) else None
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 1024:
        raise InputError(f"{p}: the prior's metadata names no network width from 1 to 1024")
    try:
        model = ReconstructionDenoiser(width)
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"{p}: the prior's weights do not fit its network ({str(exc).splitlines()[0]})") from None
    if any(not torch.isfinite(v).all() for v in state.values()):
        raise InputError(f"{p}: the prior's weights hold NaN or infinity")
    return ChallengePrior(model, {**meta, "sha256": digest}, str(p))


def default_prior() -> ChallengePrior | None:
    """The weights shipped inside the package (checked against their recorded SHA-256), or None if absent."""
    record = SHIPPED_PRIOR.with_suffix(".json")
    if not SHIPPED_PRIOR.is_file() or not record.is_file():
        return None
    try:
        digest = read_json(record, expect=dict).get("sha256")
    except InputError as exc:
        raise InputError(f"not a readable prior record: {exc}; run `make weights` again") from None
    if not isinstance(digest, str):
        raise InputError(f"{record}: not a readable prior record (no sha256); run `make weights` again")
    return load_prior(SHIPPED_PRIOR, sha256=digest)


# ------------------------------------------------------------------------------------------------ preparation ---


def _simulate(
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    mean: torch.Tensor,
    var: torch.Tensor,
    t: int,
    index: int,
    s: PriorSettings,
) -> dict[str, np.ndarray]:
    from masquerade.instahide.recipe import _public_energy, parse_slots, simulate_challenge
    from masquerade.instahide.reconstruct import reconstruct_private

    gen = np.random.default_rng([s.seed, t, index])
    classes = np.unique(labels)
    per = max(1, s.images // len(classes))
    pick = np.concatenate(
        [gen.choice(np.flatnonzero(labels == c), min(per, int((labels == c).sum())), replace=False) for c in classes]
    )
    n = len(pick)
    pub = pool[gen.choice(len(pool), min(len(pool), n * (s.k - 2)), replace=False)]
    sim = simulate_challenge(
        images[pick],
        labels[pick],
        pub,
        per_image=t,
        k=s.k,
        upper=s.upper,
        dom=s.dom,
        num_classes=int(labels.max()) + 1,
        rng=gen,
    )
    lam = sim["lam"][:, :2]
    order = lam[:, 1] > lam[:, 0]
    pairs = np.where(order[:, None], sim["pairs"][:, ::-1], sim["pairs"]).copy()
    lam = np.where(order[:, None], lam[:, ::-1], lam).astype(np.float32)
    # the attack's grouping errs: move a random share of each slot to another image of its class (images of a
    # class are contiguous in ``pick``; an image is never paired with itself)
    cls = labels[pick]
    start = np.searchsorted(cls, cls, side="left")
    size = np.searchsorted(cls, cls, side="right") - start
    for slot, most in enumerate(s.corrupt):
        img, other = pairs[:, slot], pairs[:, 1 - slot]
        moved = (gen.random(len(pairs)) < gen.uniform(0, most)) & (size[img] > 1)
        offset = gen.integers(1, np.maximum(size[img], 2))
        new = start[img] + (img - start[img] + offset) % size[img]
        new = np.where(new == other, start[img] + (new - start[img] + 1) % size[img], new)
        ok = moved & (new != other) & (new != img)
        pairs[ok, slot] = new[ok]
    sl = parse_slots(sim["label"], len(pairs), k=s.k, upper=s.upper, dom=s.dom)
    energy = _public_energy(1 - sl.lam.sum(1), s.k, s.upper, s.dom)
    x, _ = reconstruct_private(sim["encryption"], pairs, lam, n, mean, var, energy, shape=images.shape[1:])
    return {
        "x": x.numpy().astype(np.float16),
        "y": images[pick],
        "info": evidence(pairs, lam, None, n).numpy(),
        "t": np.full(n, t, np.int64),
    }


def prepare_prior(
    aux: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    public: str | os.PathLike[str] | None = None,
    settings: PriorSettings | None = None,
    work: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    device: Any = None,
) -> dict[str, Any]:
    """Simulate challenges from the labelled images ``aux``, train the denoiser, write ``out`` (.safetensors).
    The simulations run on the CPU; the denoiser trains on ``device`` (``auto``, ``cpu``, ``cuda[:N]``, ``mps``).

    ``public``: photos to cut the public patches from (default ``bundled:photos``). ``work`` (default
    ``out`` + ``.work``) keeps the simulations and a training checkpoint, so a second call resumes; it is removed
    when the file is written. Returns the training record."""
    from masquerade.data import load_images, public_pool
    from masquerade.instahide.recipe import public_statistics

    s = settings or PriorSettings()
    dev = resolve_device(device)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the prior is written as .safetensors")
    work_dir = Path(work) if work is not None else out.with_name(out.name + ".work")
    work_dir.mkdir(parents=True, exist_ok=True)
    imgs = load_images(aux).to_rgb()
    if imgs.labels is None:
        raise InputError(f"{aux}: the auxiliary images need labels (a challenge's labels mix them)")
    shape = imgs.image_shape
    if shape[0] % 4 or shape[1] % 4:
        raise InputError(f"{aux}: images are {shape[0]}×{shape[1]}; the prior needs sides divisible by 4")
    src = public if public is not None else "bundled:photos"
    pool = public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
    t0 = time.perf_counter()
    parts = _simulations(imgs.images, imgs.labels.astype(np.int64), pool, public_statistics(pool), s, work_dir)
    sim_seconds = time.perf_counter() - t0
    x, y, info = _training_set(parts, shape)
    log(f"challenge prior: {len(x)} training pairs from {len(parts)} simulated challenges in {sim_seconds:.0f}s")
    t1 = time.perf_counter()
    model, step, losses = _train_denoiser(x.to(dev), y.to(dev), info.to(dev), s, work_dir / "train.pt")
    record = {
        "pairs": int(len(x)),
        "simulated_challenges": len(parts),
        "simulation_seconds": round(sim_seconds, 1),
        "training_seconds": round(time.perf_counter() - t1, 1),
        "final_loss": losses[-1] if losses else None,
        "loss_every_250_steps": [round(v, 4) for v in losses],
        "aux": str(aux),
        "public": str(src),
        "aux_images": int(len(imgs)),
        "shape": list(shape),
        "torch": torch.__version__,
        "device": str(dev),
    }
    digest = _write_prior(
        out, model, {"kind": PRIOR_KIND, "settings": json.dumps(_settings_doc(s)), "training": json.dumps(record)}
    )
    shutil.rmtree(work_dir, ignore_errors=True)
    log(f"challenge prior: wrote {out} (sha256 {digest[:16]}…) after {step} steps, final loss {record['final_loss']}")
    return {**record, "sha256": digest, "settings": _settings_doc(s)}


def _simulations(
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    stats: tuple[torch.Tensor, torch.Tensor],
    s: PriorSettings,
    work_dir: Path,
) -> list[dict[str, np.ndarray]]:
    """Every simulated challenge's training pairs (``s.challenges`` per T of ``s.passes``), each kept in
    ``work_dir`` as it is made, so an interrupted preparation simulates only what is missing (a damaged file
    again)."""
    from masquerade.fileio import save_npz
    from masquerade.progress import bar

    mean, var = stats
    parts = []
    jobs = [(t, i) for t in s.passes for i in range(s.challenges)]
    with bar(total=len(jobs), desc="simulated challenges", unit="challenge") as pb:
        for t, i in jobs:
            path = work_dir / f"sim-T{t}-{i:04d}.npz"
            part = None
            if path.is_file():
                try:
                    with np.load(path) as z:
                        part = {k: z[k] for k in z.files}
                except Exception:  # damaged: simulate again
                    part = None
            if part is None:
                part = _simulate(images, labels, pool, mean, var, t, i, s)
                save_npz(path, **part)
            parts.append(part)
            pb.update(1)
    return parts


def _training_set(
    parts: list[dict[str, np.ndarray]], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstructions N×C×H×W, the true images N×C×H×W on [-1, 1], the evidence behind each) from the
    simulations."""
    x = torch.from_numpy(np.concatenate([p["x"] for p in parts]).astype(np.float32)).reshape(-1, *shape)
    y = torch.from_numpy(np.concatenate([p["y"] for p in parts]).astype(np.float32) / 127.5 - 1)
    info = torch.from_numpy(np.concatenate([p["info"] for p in parts])).float()
    return x.permute(0, 3, 1, 2).contiguous(), y.permute(0, 3, 1, 2).contiguous(), info


def _train_denoiser(
    x: torch.Tensor, y: torch.Tensor, info: torch.Tensor, s: PriorSettings, ckpt: Path
) -> tuple[ReconstructionDenoiser, int, list[float]]:
    """Train the denoiser on ``x``'s device (1 - SSIM plus ``s.l1`` times L1, random mirror images), from the
    checkpoint ``ckpt`` where one is readable; the checkpoint is rewritten atomically every 250 steps. Returns the
    model (in eval mode), the steps run and the mean loss of every 250 steps."""
    from masquerade.fileio import atomic_path
    from masquerade.progress import bar

    dev = x.device

    def fresh() -> tuple[ReconstructionDenoiser, Any, Any, torch.Generator]:
        model = _seeded_model(s).to(dev)
        opt = torch.optim.Adam(model.parameters(), s.lr)
        return (
            model,
            opt,
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps),
            torch.Generator().manual_seed(s.seed),
        )

    model, opt, sched, gen = fresh()
    step, losses = 0, []
    if ckpt.is_file():
        try:
            st = torch.load(ckpt, weights_only=True, map_location="cpu")
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            gen.set_state(st["gen"])
            step, losses = int(st["step"]), [float(v) for v in st["losses"]]
        except Exception:  # a damaged checkpoint: train from the start
            (model, opt, sched, gen), step, losses = fresh(), 0, []
    model.train()
    running = 0.0
    with bar(total=s.steps, desc="training the prior", unit="step") as pb:
        pb.update(step)
        while step < s.steps:
            idx = torch.randint(0, len(x), (s.batch,), generator=gen).to(dev)
            xb, yb = x[idx], y[idx]
            if bool(torch.rand(1, generator=gen) < 0.5):
                xb, yb = xb.flip(3), yb.flip(3)
            pred = model(xb, info[idx])
            loss = ssim_loss(pred, yb, data_range=2.0) + s.l1 * (pred - yb).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
            pb.update(1)
            if step % 250 == 0 or step == s.steps:
                losses.append(running / (250 if step % 250 == 0 else step % 250))
                running = 0.0
                with atomic_path(ckpt) as tmp:
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "opt": opt.state_dict(),
                            "sched": sched.state_dict(),
                            "gen": gen.get_state(),
                            "step": step,
                            "losses": losses,
                        },
                        tmp,
                    )
    return model.eval(), step, losses


def _write_prior(out: Path, model: ReconstructionDenoiser, meta: dict[str, str]) -> str:
    """The weights (on the CPU) and ``meta`` as one safetensors file, written atomically; returns its SHA-256."""
    from safetensors.torch import save_file

    from masquerade.fileio import atomic_path

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _seeded_model(s: PriorSettings) -> ReconstructionDenoiser:
    """The network with its initial weights drawn under ``s.seed``, leaving the caller's global torch RNG as it was
    (the same weights ``torch.manual_seed(seed)`` then construction gives)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        return ReconstructionDenoiser(s.width)


def _settings_doc(s: PriorSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(s)))


def resolve_prior(prior: Any, shape: tuple[int, int, int], log: Callable[[str], None]) -> Any:
    """The prior an attack asked for (``"default"``: the shipped one; None or ``"none"``: none; a file or a
    :class:`ChallengePrior`), or None, said through ``log``, where there is none or it does not fit ``shape``."""
    if prior is None or (isinstance(prior, str) and prior.lower() == "none"):
        return None
    if isinstance(prior, str) and prior == "default":
        found = default_prior()
        if found is None:
            log("challenge attack: no prior shipped with this installation (run `make weights`); none used")
            return None
    elif isinstance(prior, ChallengePrior):
        found = prior
    else:
        found = load_prior(prior)
    if not found.fits(shape):
        log(f"challenge attack: the prior takes colour images with sides divisible by 4, not {shape}; none used")
        return None
    return found
