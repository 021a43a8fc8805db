"""An attack on the InstaHide Challenge that runs on a CPU: recover the private images from the encodings alone.

The attacker reads ``encryption.npy`` (E×H×W×C, signs flipped) and, unless ``use_labels=False``, ``label.npy`` (the
coefficient-weighted one-hots of each encoding's two private images). It may use public data of its own: photos to
cut public patches from (for their pixel statistics) and labelled auxiliary images disjoint from the private set (to
learn the colour correction on a challenge it simulates itself). It never reads the truth folder.

Stages (each timed, each cached in the output folder under a hash of its inputs, so an interrupted attack resumes):

1. **slots** -- every encoding holds two private images; the labels name their classes and coefficients
   (two equal classes give one entry: the sum, split later).
2. **clusters** -- the slots of each class are grouped into private images by spectral clustering of the whitened
   squared encodings weighted by the slot's coefficient (one eigendecomposition of the D×D Gram matrix for the
   whitening, one of a slots×slots similarity per class). The number of images per class comes from ``n_private``
   when given; otherwise from the recipe: every image fills exactly 2T slots, so the per-class spectral guesses
   give T, snapped to a divisor of what T must divide, and each class's slot count divided by 2T.
3. **refine** -- rounds of reconstruct (stage 4) and reassign: every encoding's candidate pairs (an image of each
   slot's class) are scored by the cosine, in a deeper whitening, between its squared encoding and what the pair
   predicts with both images at their current estimates, so the partner explains its share and a wrong pairing
   cannot explain itself; then one balanced assignment for all encodings (Lagrangian prices per image, since every
   image fills the same number of slots). A same-class encoding tries several splits of its coefficient sum.
4. **reconstruct** -- all private images at once. Per pixel, the encodings that mix images a and b measure
   ``|lam_a x_a + lam_b x_b + public|``; the squared encodings give a noisy rank-one matrix ``x x^T`` whose top
   eigenvector fixes every image's pixel up to one sign per pixel shared by all images. Those signs are chosen by
   propagating along a maximum spanning tree of neighbouring pixels (natural images are smooth), then the images are
   refined by expectation-maximisation of the folded-normal likelihood (the public part as Gaussian noise with the
   public pool's per-pixel mean and variance), with a smoothness prior solved in closed form in the eigenbases of the
   design and of the pixel-grid Laplacian; the signs are synchronised once more on the refined images and EM rerun;
   both global signs are tried and the likelier kept.
5. **prior** -- a learned image prior (:mod:`masquerade.instahide.prior`, shipped with the package): a
   small denoiser trained offline on challenges simulated from labelled images that are not the private ones,
   mapping each reconstruction (and how much evidence it rests on) to a cleaner image; the refine stage also scores
   against its outputs. Without a prior, **colour**: a per-pixel cubic map from recovered to true colours, fitted
   on a challenge the attacker simulates from its auxiliary images (with its own ground truth).
6. **output** -- one recovery per encoding (the image of its larger-coefficient slot) as ``decryption.npy``,
   the private images as ``private_images.npy`` and a grid.

Without labels (``use_labels=False``) whole encodings are clustered, an encoding's two images are its two nearest
centroids, and the refine stage is skipped (its candidates come from the classes).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.devices import resolve_device
from masquerade.errors import InputError
from masquerade.fileio import read_json, write_json
from masquerade.instahide.colour import ColourMap, learn_colour
from masquerade.instahide.grouping import SPLITS, cluster_slots, refine_pairs
from masquerade.instahide.prior import resolve_prior
from masquerade.instahide.recipe import _public_energy, parse_slots, public_statistics
from masquerade.instahide.reconstruct import reconstruct_private

__all__ = ["ChallengeAttackSettings", "ChallengeAttack", "ColourMap", "attack_challenge", "break_challenge"]


@dataclass(frozen=True)
class ChallengeAttackSettings:
    n_private: int | None = None  # None: estimate the number of private images per class (eigengap)
    use_labels: bool = True  # False: ignore label.npy (coefficients and classes unknown)
    beta: float = 0.3  # smoothness prior between neighbouring pixels (and colour channels)
    whiten_eps: float = 1e-3  # clustering's whitening of the squared encodings: s / sqrt(s^2 + eps s_0^2)
    rounds: int = 8  # reconstruct + balanced reassignment rounds after the clustering (0: none)
    score_eps: float = 1e-4  # the reassignment scores' whitening (deeper than the clustering's)
    temperature: float = 20.0  # scores (cosines) times this before prices are subtracted
    price_steps: int = 60  # Lagrangian price updates per assignment
    price_rate: float = 0.02
    splits: tuple[float, ...] = SPLITS  # tried shares of the larger image in a same-class encoding
    tol: float = 0.002  # stop refining when fewer than this share of slots move
    resync: int = 1  # sign re-synchronisations on the refined images (then EM again)
    anneal: tuple[float, ...] = (4.0, 2.0, 1.5, 1.0, 1.0)  # EM noise-variance multipliers, one per round
    em_steps: int = 8  # EM steps per round
    public_patches: int = 2000  # patches cut from the public photos for their pixel statistics
    k: int = 6  # the challenge's recipe (for the public coefficients' energy)
    upper: float = 0.65
    dom: float = 0.3
    colour: bool = True  # learn a colour correction on a simulated challenge (needs auxiliary images)
    colour_images: int = 100
    colour_per_image: int = 20
    seed: int = 0  # the attacker's own randomness (clustering, simulation)
    prior: str = "default"  # learned image prior: "default" (shipped), "none", or a prepared .safetensors

    def __post_init__(self) -> None:
        if self.n_private is not None and self.n_private < 1:
            raise InputError(f"challenge attack: n_private must be positive, got {self.n_private}")
        if self.beta < 0 or self.whiten_eps <= 0 or self.em_steps < 1 or not self.anneal:
            raise InputError("challenge attack: beta >= 0, whiten_eps > 0, em_steps >= 1 and a non-empty anneal")
        if (
            self.rounds < 0
            or self.score_eps <= 0
            or self.temperature <= 0
            or self.price_steps < 1
            or self.price_rate < 0
            or self.resync < 0
            or not 0 <= self.tol < 1
        ):
            raise InputError(
                "challenge attack: rounds >= 0, score_eps > 0, temperature > 0, price_steps >= 1, "
                "price_rate >= 0, resync >= 0 and 0 <= tol < 1"
            )
        if not self.splits or not all(0.5 <= v < 1 for v in self.splits):
            raise InputError("challenge attack: splits are shares of the larger image, in [0.5, 1)")


def _to_uint8(x: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, *shape).numpy()


def attack_challenge(
    challenge: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    public: str | os.PathLike[str] | np.ndarray | None = None,
    aux: str | os.PathLike[str] | None = None,
    settings: ChallengeAttackSettings | None = None,
    prior: Any = None,
    log: Callable[[str], None] = print,
    device: Any = None,
) -> dict[str, Any]:
    """Run the attack on ``challenge/encryption.npy`` (+ ``label.npy``); write ``decryption.npy`` (uint8 E×H×W×C,
    one recovery per encoding), ``private_images.npy``, ``attack.json`` (settings, stage times) to ``out``.

    ``public``: photos (folder, ``bundled:photos``) or a patch array/``.npz`` for the public pixel statistics;
    ``aux``: labelled images (``.npz``) disjoint from the private set, for the colour correction (used only when no
    prior is). ``prior``: a learned image prior (:mod:`masquerade.instahide.prior`): ``"default"`` for the
    weights shipped with the package, a path to a prepared ``.safetensors``, ``"none"``, or a loaded prior (default:
    ``settings.prior``); the
    refine stage scores against its outputs and the final images are its outputs. Stages already in
    ``out/stages`` are reused when they were computed from the same inputs (each stage file records a hash of the
    challenge's files, the settings and the public and auxiliary sources); a stale or damaged stage file is
    recomputed, so an interrupted attack resumes where it stopped and a reused folder never mixes challenges."""
    s = settings or ChallengeAttackSettings()
    cdir = Path(challenge)
    enc_path = cdir / "encryption.npy"
    if not enc_path.is_file():
        raise InputError(f"{cdir}: no encryption.npy (is this a challenge folder?)")
    from masquerade.data.loaders import load_npy

    enc = load_npy(enc_path)
    _check_encodings(enc, str(enc_path))  # before the labels: the encodings' errors come first
    labels = None
    if s.use_labels:
        if not (cdir / "label.npy").is_file():
            raise InputError(f"{cdir}: no label.npy; run with use_labels=False (--no-labels) to attack without")
        labels = load_npy(cdir / "label.npy")
    return break_challenge(
        enc, labels, out, public=public, aux=aux, settings=s, prior=prior, log=log, where=str(enc_path), device=device
    )


def _check_encodings(enc: np.ndarray, where: str) -> None:
    if enc.ndim != 4 or enc.dtype.kind != "f" or not np.isfinite(enc).all():
        raise InputError(f"{where}: expected finite floats E×H×W×C, got {enc.dtype} {enc.shape}")
    if enc.shape[3] != 3:
        raise InputError(f"{where}: the challenge mixes colour images (C = 3), got C = {enc.shape[3]}")


def break_challenge(
    enc: np.ndarray,
    labels: np.ndarray | None,
    out: str | os.PathLike[str],
    *,
    public: str | os.PathLike[str] | np.ndarray | None = None,
    aux: str | os.PathLike[str] | None = None,
    settings: ChallengeAttackSettings | None = None,
    prior: Any = None,
    log: Callable[[str], None] = print,
    where: str = "instahide-challenge",
    device: Any = None,
) -> dict[str, Any]:
    """The attack on arrays: ``enc`` float E×H×W×C (the challenge's layout), ``labels`` E×classes or None; stages,
    ``decryption.npy`` and ``private_images.npy`` go to ``out`` (see :func:`attack_challenge`). ``where`` names the
    encodings in error messages. ``device``: where the learned prior runs (the other stages are NumPy, on the
    CPU)."""
    from masquerade.fileio import save_npy

    s = settings or ChallengeAttackSettings()
    out = Path(out)
    _check_encodings(enc, where)
    n_enc, shape = len(enc), (int(enc.shape[1]), int(enc.shape[2]), int(enc.shape[3]))
    if not s.use_labels:
        labels = None
    slots = parse_slots(labels, n_enc, k=s.k, upper=s.upper, dom=s.dom)
    learned = resolve_prior(s.prior if prior is None else prior, shape, log)
    if learned is not None and device is not None:
        learned = learned.to(resolve_device(device))
    st = _Stages(
        out, _run_key(enc, labels, s, public, aux, learned.meta["sha256"] if learned is not None else None), log
    )
    st.state.update(
        {
            "settings": _settings_doc(s),
            "encodings": n_enc,
            "shape": list(shape),
            "prior": None if learned is None else {"source": learned.source, "sha256": learned.meta["sha256"]},
        }
    )
    enc_t = torch.from_numpy(np.ascontiguousarray(enc, dtype=np.float32)).reshape(n_enc, -1)

    mean, var = _public_stage(st, public, s, shape)
    energy = _public_energy(1 - slots.lam.sum(1), s.k, s.upper, s.dom)
    pairs, conf, n_images = _cluster_stage(st, enc_t, slots, s)
    recon: dict[str, Any] = {
        "beta": s.beta,
        "anneal": s.anneal,
        "em_steps": s.em_steps,
        "shape": shape,
        "resync": s.resync,
    }
    lam = slots.lam
    weights = (pairs[:, 0] != pairs[:, 1]).astype(np.float32)
    refined = s.rounds > 0 and slots.labelled
    if refined:
        pairs, lam, weights = _refine_stage(
            st,
            enc_t,
            slots,
            pairs,
            n_images,
            (mean, var, energy),
            recon,
            s,
            None if learned is None else (lambda xx, pp, ll, ww: learned(xx, pp, ll, ww, shape)),
        )
    got = st.load("reconstruct")
    if got is not None:
        x = torch.from_numpy(got["x"])
    else:
        t0 = time.perf_counter()
        x, nll = reconstruct_private(enc_t, pairs, lam, n_images, mean, var, energy, weights=weights, **recon)
        st.save("reconstruct", x=x.numpy())
        st.state["nll"] = nll
        st.done("reconstruct", t0)
    x_out = _final_stage(st, x, (pairs, lam, weights), learned, (mean, var), s, shape, aux, public)

    t0 = time.perf_counter()
    private = _to_uint8(x_out, shape)
    if refined:  # slot 0 holds the larger coefficient (a same-class encoding's split puts the larger share first)
        pick = pairs[:, 0]
    else:
        pick = np.where(conf[:, 0] >= conf[:, 1], pairs[:, 0], pairs[:, 1])
    save_npy(out / "decryption.npy", private[pick])
    save_npy(out / "private_images.npy", private)
    st.done("output", t0)
    st.state["seconds_total"] = round(sum(st.times.values()), 2)
    write_json(st.state_path, st.state)
    return {
        **st.state,
        "decryption": str(out / "decryption.npy"),
        "private_images": private,
        "recoveries": private[pick],
    }


class _Stages:
    """The attack folder's stage files (``out/stages/NAME.npz``, each holding the run key it was computed under) and
    its ``attack.json`` (settings, per-stage seconds): what a resumed attack reuses. A stage file of another run
    key, or a damaged one, is computed again."""

    def __init__(self, out: Path, run_key: str, log: Callable[[str], None]) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = run_key
        self.log = log
        self.state_path = out / "attack.json"
        state: dict[str, Any] = {}
        if self.state_path.is_file():
            try:
                state = read_json(self.state_path, expect=dict)
            except InputError:  # damaged: the stages' own keys decide what is reused
                state = {}
            if state.get("key") != run_key or not isinstance(state.get("seconds", {}), dict):
                state = {}  # another challenge, other settings or other sources: start afresh
        state["key"] = run_key
        self.state = state
        self.times: dict[str, float] = state.setdefault("seconds", {})

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.dir / f"{name}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        except Exception:  # a damaged stage file (a kill mid-write on another system, a truncated copy)
            return None
        if str(got.pop("key", "")) != self.key:
            return None
        return got

    def save(self, name: str, **arrays: Any) -> None:
        from masquerade.fileio import save_npz

        save_npz(self.dir / f"{name}.npz", key=np.array(self.key), **arrays)

    def add_time(self, name: str, t0: float) -> None:
        self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t0, 2)
        write_json(self.state_path, self.state)

    def done(self, name: str, t0: float) -> None:
        self.add_time(name, t0)
        self.log(f"challenge attack: {name} done in {self.times[name]:.1f}s")


def _public_stage(
    st: _Stages, public: Any, s: ChallengeAttackSettings, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The public pool's per-pixel mean and variance (patches given, or cut from photos)."""
    from masquerade.data import public_pool

    got = st.load("public")
    if got is not None:
        return torch.from_numpy(got["mean"]), torch.from_numpy(got["var"])
    t0 = time.perf_counter()
    if isinstance(public, np.ndarray):
        patches = public
    else:
        src = public if public is not None else "bundled:photos"
        patches = public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
    mean, var = public_statistics(patches)
    st.save("public", mean=mean.numpy(), var=var.numpy())
    st.done("public", t0)
    return mean, var


def _cluster_stage(
    st: _Stages, enc_t: torch.Tensor, slots: Any, s: ChallengeAttackSettings
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each encoding's two private images (pairs E×2), the clustering's confidence in them, and how many private
    images there are."""
    got = st.load("clusters")
    if got is not None:
        return got["pairs"], got["confidence"], int(got["n_images"])
    t0 = time.perf_counter()
    cl = cluster_slots(enc_t, slots, n_private=s.n_private, eps=s.whiten_eps, seed=s.seed)
    st.save("clusters", pairs=cl["pairs"], confidence=cl["confidence"], n_images=cl["n_images"])
    st.state["images_found"] = cl["n_images"]
    st.state["images_per_class"] = {str(k): v for k, v in cl["per_class"].items()}
    st.state["n_private_given"] = s.n_private is not None
    st.done("clusters", t0)
    return cl["pairs"], cl["confidence"], cl["n_images"]


def _refine_stage(
    st: _Stages,
    enc_t: torch.Tensor,
    slots: Any,
    pairs: np.ndarray,
    n_images: int,
    public: tuple[torch.Tensor, torch.Tensor, Any],
    recon: dict[str, Any],
    s: ChallengeAttackSettings,
    prior: Callable[..., torch.Tensor] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds of reconstruct-and-reassign (:func:`refine_pairs`), checkpointed after every round; returns the
    pairs, coefficients and weights it settles on."""
    got = st.load("refine")
    if got is not None and int(got["round"]) >= 0 and bool(got["finished"]):
        return got["pairs"], got["lam"], got["weights"]
    mean, var, energy = public
    t_mark = [time.perf_counter()]

    def checkpoint(rnd: int, state: dict[str, np.ndarray]) -> None:
        st.save("refine", finished=np.bool_(False), **state)
        st.add_time("refine", t_mark[0])
        t_mark[0] = time.perf_counter()

    res = refine_pairs(
        enc_t,
        slots,
        pairs,
        n_images,
        mean,
        var,
        energy,
        rounds=s.rounds,
        eps=s.score_eps,
        splits=s.splits,
        temperature=s.temperature,
        steps=s.price_steps,
        rate=s.price_rate,
        tol=s.tol,
        recon=recon,
        start=got,
        checkpoint=checkpoint,
        log=st.log,
        prior=prior,
    )
    st.save(
        "refine",
        finished=np.bool_(True),
        round=np.int64(s.rounds),
        pairs=res["pairs"],
        lam=res["lam"],
        weights=res["weights"],
    )
    st.done("refine", t_mark[0])
    return res["pairs"], res["lam"], res["weights"]


def _final_stage(
    st: _Stages,
    x: torch.Tensor,
    grouping: tuple[np.ndarray, np.ndarray, np.ndarray],
    learned: Any,
    public: tuple[torch.Tensor, torch.Tensor],
    s: ChallengeAttackSettings,
    shape: tuple[int, int, int],
    aux: Any,
    patches_src: Any,
) -> torch.Tensor:
    """The reconstructions through the learned prior, or else through a colour map learned on a challenge simulated
    from ``aux``, or as they are."""
    pairs, lam, weights = grouping
    if learned is not None:
        got = st.load("prior")
        if got is not None:
            return torch.from_numpy(got["x"])
        t0 = time.perf_counter()
        x_out = learned(x, pairs, lam, weights, shape)
        st.save("prior", x=x_out.numpy())
        st.done("prior", t0)
        return x_out
    if s.colour and aux is not None:
        got = st.load("colour")
        if got is not None:
            cmap = ColourMap(got["coef"])
        else:
            t0 = time.perf_counter()
            cmap = learn_colour(aux, public[0], public[1], s, shape, patches_src=patches_src)
            st.save("colour", coef=cmap.coef)
            st.done("colour", t0)
        return cmap(x.reshape(-1, *shape)).reshape(len(x), -1)
    if s.colour:
        st.log("challenge attack: no auxiliary images (--aux); colour correction skipped")
    return x


def _run_key(
    enc: np.ndarray,
    labels: np.ndarray | None,
    s: ChallengeAttackSettings,
    public: Any,
    aux: Any,
    prior: str | None = None,
) -> str:
    """A hash of everything the stages depend on: the challenge's arrays, the settings, the sources named."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"prior={prior}".encode())
    for arr in (enc, labels):
        if arr is not None:
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(_settings_doc(s), sort_keys=True).encode())
    if isinstance(public, np.ndarray):
        h.update(b"public-array")
        h.update(np.ascontiguousarray(public).tobytes())
    else:
        h.update(f"public={public!s}".encode())
    h.update(f"aux={aux!s}".encode())
    return h.hexdigest()[:32]


def _settings_doc(s: ChallengeAttackSettings) -> dict[str, Any]:
    doc = json.loads(json.dumps(asdict(s)))
    doc.pop("prior")  # the stages are keyed by the prior's digest, not by where it was read from
    return doc


class ChallengeAttack(Configurable):
    """The challenge attack as a registered plugin: ``run(encodings=..., labels=...)`` on arrays.

    ``encodings``: a float32 N×C×H×W tensor (or a numpy array in the challenge's E×H×W×C layout) in [-1, 1] with
    signs flipped; ``labels``: the released mixed labels (optional: without them the attack runs unlabelled);
    ``public_pool``: public patches (uint8 P×H×W×C array) or photos to cut them from (default bundled photos);
    ``auxiliary``: labelled images (a path) for the colour correction when no prior is used. Stages run in a
    temporary folder; ``attack_challenge`` (``masquerade challenge attack``) keeps them to resume."""

    name = "instahide-challenge"
    data_kind = "images"
    Settings = ChallengeAttackSettings
    threat_model = ThreatModel(
        requires=frozenset({Knowledge.ENCODINGS}),
        optional=frozenset({Knowledge.LABELS, Knowledge.PUBLIC_POOL, Knowledge.AUXILIARY}),
    )
    uses_device = True  # the learned prior runs on the device

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """InstaHide across datasets with two private images per encoding, signs flipped, pixels in [-1, 1]: the
        challenge's recipe, with the scheme's k, upper and dom (and without labels where they are renormalised)."""
        s = getattr(scheme, "settings", None)
        if getattr(scheme, "name", None) != "instahide" or s is None:
            return None
        if s.mode != "cross" or s.p != 2 or not s.sign_flip or s.pixel_scale != "[-1,1]" or s.k < 3:
            return None
        # renormalised labels no longer hold the coefficients (parse_slots refuses them): attack without labels
        return {"k": s.k, "upper": s.upper, "dom": s.dom, **({"use_labels": False} if s.renormalize_labels else {})}

    def run(
        self,
        *,
        encodings: Any,
        labels: Any = None,
        public_pool: Any = None,
        auxiliary: Any = None,
        rng: Any = None,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
        device: Any = None,
    ) -> AttackResult:
        """``rng`` (an int) replaces the settings' seed, the attacker's own randomness."""
        import tempfile

        t = time.perf_counter()
        if isinstance(encodings, torch.Tensor):
            if encodings.ndim != 4:
                raise InputError("instahide-challenge: encodings are N×C×H×W")
            enc = encodings.detach().cpu().permute(0, 2, 3, 1).numpy()
        else:
            enc = np.asarray(encodings)
        lab = None if labels is None else np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
        s = self.settings if lab is not None else replace(self.settings, use_labels=False)
        if rng is not None:
            if not isinstance(rng, (int, np.integer)):
                raise InputError("instahide-challenge: rng is an int seed (the attacker's own randomness)")
            s = replace(s, seed=int(rng))
        with tempfile.TemporaryDirectory(prefix="masquerade-challenge-") as tmp:
            res = break_challenge(
                np.ascontiguousarray(enc, dtype=np.float32),
                lab,
                tmp,
                public=public_pool,
                aux=auxiliary,
                settings=s,
                log=log or (lambda _msg: None),
                device=device,
            )
        private = torch.from_numpy(res["private_images"]).permute(0, 3, 1, 2).float() / 255
        metrics: dict[str, Any] = {k: res[k] for k in ("images_found", "n_private_given", "seconds_total") if k in res}
        metrics["stage_seconds"] = res.get("seconds", {})
        return AttackResult(
            self.name,
            private,
            recovered={"recoveries": res["recoveries"]},
            metrics=metrics,
            seconds=time.perf_counter() - t,
            aligned=False,
        )
