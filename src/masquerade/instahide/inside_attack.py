"""The attack on inside-dataset InstaHide (``instahide-inside``): the grouping of every mix from the encodings and
their released mixed labels, then every private image through :mod:`masquerade.instahide.inside`.

Stages:

1. **cluster**: per class, the slots whose share is at least ``dominant`` (0.3) are grouped into that class's images
   by a spectral embedding of the coefficient-weighted whitened squared encodings and a k-means whose clusters are
   held to equal sizes by prices (every image fills the same number of slots: k·T). The number of images per class
   is the class's coefficient mass over T, with T = E / n when n is told, else from the classes' eigengaps snapped
   to a divisor of E (at k = 2 also of every class's exact slot count over 2). Where the fit does not verify
   (median misfit above ``verify``), the next nearest divisors are tried, a failing guess given up after two
   rounds; copies of one image (too many guessed) are merged at the end;
2. **start**: the lifted start and alternating projections on those dominant slots alone, reweighted so that
   encodings that do not fit count less (the small slots left out are the misfit);
3. **rounds**: per encoding, the non-negative least squares for its coefficients over every image of the classes
   its label names (each class's coefficients summing to the label's share), signs from the current fit; the k
   largest kept under per-image prices (every image fills exactly k·T slots); the coefficients refitted on that
   support; the images reconstructed again with robust reweighting. Stops when fewer than ``tol`` of the
   encodings change;
4. **output**: signs synchronised, the global sign chosen by the pixel scale (the wrong one spills out of [0, 1];
   the auxiliary images' mean image decides where the scale is symmetric), pixels back to [0, 1]. With auxiliary
   images the standardisation's mean and deviation are theirs, else the settings' (the training code's).

Measured on 100 CIFAR-10 test images (10 a class), 50 passes, standardised pixels, mixed labels, n estimated, a cold
process on 2 cores (``benchmarks/reproductions/bench_inside.py``): every image found at k = 4 (mean SSIM 0.999, 198 s)
and 99 % at k = 2 (SSIM 0.996, 368 s, the first guess of T retried). Without labels every image is a candidate for
every slot: 92.5 % of 40 digits at k = 2 with n told.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.errors import InputError
from masquerade.instahide.inside import _alternate, _lifted_start, _pixels, _synchronised
from masquerade.instahide.inside_grouping import _class_mass, _cluster, _counts, _pass_counts, _spectra
from masquerade.instahide.reconstruct import _whitened
from masquerade.instahide.scheme import PIXEL_SCALES

__all__ = ["InsideAttack", "InsideAttackSettings"]


# -- the attack: the grouping from the encodings (and labels), then the reconstruction -----------------------------


@dataclass(frozen=True)
class InsideAttackSettings:
    k: int = 4  # private images per encoding (the scheme's published setting)
    n_private: int | None = None  # None: estimated (every image fills k·T slots; eigengaps give T)
    use_labels: bool = True  # False: ignore the released labels (every image is a candidate everywhere)
    pixel_scale: str = "normalize"  # the scheme's scale; "normalize" with mean/std below (the training code's)
    mean: tuple[float, ...] | None = None  # the standardisation's; None: the auxiliary images', else fitted
    std: tuple[float, ...] | None = None  # to the reconstructions' range (see _to_pixels)
    dominant: float = 0.3  # a class's coefficient from which its slot is clustered (stage 1)
    whiten_eps: float = 1e-3  # the clustering's whitening of the squared encodings
    rounds: int = 6  # refit + balanced support + reconstruction rounds (stage 3)
    tol: float = 0.002  # stop when fewer than this share of the chosen slots move
    reweight: int = 4  # robust reweighting passes per reconstruction (the residual verifies)
    verify: float = 0.1  # median misfit (share of the encodings' RMS) above which T is retried lower
    seed: int = 0  # the attacker's own randomness (k-means starts)

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise InputError(f"instahide-inside: k must be a positive integer, got {self.k!r}")
        if self.n_private is not None and (not isinstance(self.n_private, int) or self.n_private < 2):
            raise InputError(f"instahide-inside: n_private must be an integer >= 2, got {self.n_private!r}")
        if self.pixel_scale not in PIXEL_SCALES:
            raise InputError(f"instahide-inside: pixel_scale must be one of {PIXEL_SCALES}, got {self.pixel_scale!r}")
        if (self.mean is None) != (self.std is None) or (
            self.std is not None
            and self.mean is not None
            and (any(v <= 0 for v in self.std) or len(self.mean) != len(self.std))
        ):
            raise InputError("instahide-inside: mean and std go together, one value per channel, std positive")
        if not 0 < self.dominant < 1:
            raise InputError(f"instahide-inside: dominant must be in (0, 1), got {self.dominant}")
        for name in ("rounds", "reweight", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"instahide-inside: {name} must be a non-negative integer, got {v!r}")
        if not self.whiten_eps > 0 or not 0 <= self.tol < 1 or not self.verify > 0:
            raise InputError("instahide-inside: whiten_eps and verify must be positive and tol in [0, 1)")


def _merge_copies(
    design: torch.Tensor, x: torch.Tensor, img_class: np.ndarray, *, alike: float = 0.98
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images of one class reconstructed alike (correlation above ``alike``): one image whose slots were split
    between copies (more images guessed than there are). Their columns merge; returns design, x, classes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    same = (xn @ xn.T).numpy() > alike
    same &= img_class[:, None] == img_class[None, :]
    count, label = connected_components(coo_matrix(same), directed=False)
    if count == len(x):
        return design, x, img_class
    merge = torch.zeros(len(x), count, dtype=design.dtype)
    merge[torch.arange(len(x)), torch.from_numpy(label)] = 1.0
    keep = np.unique(label, return_index=True)[1]
    return design @ merge, x[torch.from_numpy(keep)], img_class[keep]


def _project_groups(v: torch.Tensor, mass: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each group's entries (E×G×m; ``valid`` where a candidate exists) projected onto the scaled simplex
    {w ≥ 0, Σ w = mass}."""
    vv = torch.where(valid, v, torch.full_like(v, -1e30))
    u, _ = torch.sort(vv, dim=-1, descending=True)
    css = u.cumsum(-1) - mass[..., None]
    ar = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype)
    rho = ((u - css / ar > 0) & (u > -1e29)).sum(-1).clamp_min(1)
    theta = css.gather(-1, (rho - 1)[..., None]) / rho[..., None]
    return torch.where(valid & (mass[..., None] > 0), (vv - theta).clamp_min(0), torch.zeros_like(v))


def _refit(
    x: torch.Tensor,
    b: torch.Tensor,
    cand: torch.Tensor,
    mass: torch.Tensor,
    valid: torch.Tensor,
    w: torch.Tensor,
    *,
    outer: int = 4,
    inner: int = 150,
    budget: int = 1 << 23,
) -> torch.Tensor:
    """Every encoding's coefficients over its candidates (E×G×m) given the image estimates ``x`` (n×P): signs from
    the current fit, then the non-negative least squares with each class's coefficients summing to its released
    mass (accelerated projected gradient), ``outer`` times. With exact images the true coefficients fit exactly."""
    e, g, m = cand.shape
    ci = cand.clamp_min(0).reshape(e, -1)
    gram = x @ x.T
    out = torch.empty_like(w)
    step = max(1, budget // (g * m) ** 2)
    for lo in range(0, e, step):  # chunks of encodings: the candidates' Gram matrices take ``budget`` numbers
        sl = slice(lo, min(e, lo + step))
        c_, ms, ok, wc = ci[sl], mass[sl], valid[sl], w[sl].reshape(-1, g * m)
        gj = gram[c_[:, :, None], c_[:, None, :]]
        lip = torch.linalg.eigvalsh(gj)[:, -1].clamp_min(1e-12)[:, None]
        for _ in range(outer):
            design = torch.zeros(len(c_), len(x), dtype=x.dtype).scatter_add_(1, c_, wc)
            sign = torch.sign(design @ x)
            sign[sign == 0] = 1
            h = ((sign * b[sl]) @ x.T).gather(1, c_)
            z, y, tk = wc, wc, 1.0
            for _ in range(inner):
                grad = torch.einsum("eab,eb->ea", gj, y) - h
                znew = _project_groups((y - grad / lip).reshape(-1, g, m), ms, ok).reshape(-1, g * m)
                tn = (1 + (1 + 4 * tk * tk) ** 0.5) / 2
                y = znew + (tk - 1) / tn * (znew - z)
                z, tk = znew, tn
            wc = z
        out[sl] = wc.reshape(-1, g, m)
    return out


def _support(
    w: torch.Tensor,
    mass: torch.Tensor,
    valid: torch.Tensor,
    cand: torch.Tensor,
    k: int,
    n: int,
    target: float,
    *,
    steps: int = 50,
    rate: float = 0.05,
) -> torch.Tensor:
    """Which k candidates each encoding keeps (at least one per class present): the largest shares of their class's
    mass, less a price per image raised while the image fills more than ``target`` slots and lowered while it
    fills fewer (every image fills exactly k·T). Returns the kept mask (E×G×m) of the most balanced step."""
    e, g, m = w.shape
    gain = torch.where(valid, w / mass.clamp_min(1e-12)[..., None], torch.full_like(w, -1e9)).reshape(e, -1)
    ci = cand.clamp_min(0).reshape(e, -1)
    price = torch.zeros(n, dtype=w.dtype)
    present = mass > 0
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(steps):
        score = gain - price[ci]
        keep = torch.zeros_like(score, dtype=torch.bool)
        top = torch.arange(g)[None] * m + score.reshape(e, g, m).argmax(-1)
        keep.scatter_(1, top, present)
        rest = score.masked_fill(keep | ~valid.reshape(e, -1), -1e18).argsort(1, descending=True)
        need = k - keep.sum(1)
        for r in range(min(k, rest.shape[1])):
            more = need > r
            keep[more, rest[more, r]] = True
        keep &= valid.reshape(e, -1)
        count = torch.zeros(n, dtype=w.dtype).index_add_(0, ci[keep], torch.ones(int(keep.sum()), dtype=w.dtype))
        dev = float((count - target).abs().sum())
        if best is None or dev < best[0]:
            best = (dev, keep)
        price += rate * (count - target) / target
    assert best is not None
    return best[1].reshape(e, g, m)


def _candidates(mass: np.ndarray, img_class: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per encoding and class present, the images of that class (E×G×m ids, -1 padding) and the class's mass."""
    members = [np.flatnonzero(img_class == c) for c in range(mass.shape[1])]
    m = max(len(v) for v in members)
    present = mass > 0
    g = int(present.sum(1).max())
    table = -np.ones((mass.shape[1], m), np.int64)
    for c, v in enumerate(members):
        table[c, : len(v)] = v
    order = np.argsort(~present, axis=1, kind="stable")[:, :g]  # the classes present, first
    have = np.take_along_axis(present, order, 1)
    cand = np.where(have[..., None], table[order], -1)
    return torch.from_numpy(cand), torch.from_numpy(np.where(have, np.take_along_axis(mass, order, 1), 0.0))


def _reweighted(
    design: torch.Tensor, b: torch.Tensor, x: torch.Tensor, passes: int, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternating projections, then ``passes`` robust reweightings: an encoding whose fit is far worse than the
    median (a wrong slot) counts less, so the images rest on the encodings that verify."""
    x, res, _ = _alternate(design, b, x, iterations=iterations, tol=1e-7)
    for _ in range(passes):
        med = float(res.median().clamp_min(1e-12))
        x, res, _ = _alternate(
            design, b, x, weights=1 / (1 + (res / (0.5 * med)) ** 2) + 1e-2, iterations=iterations, tol=1e-7
        )
    return x, res


def _to_pixels(
    x: torch.Tensor,
    s: InsideAttackSettings,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    aux: torch.Tensor | None,
) -> torch.Tensor:
    """Reconstructions on the encodings' scale (n×C×H×W, up to one global sign) as [0, 1] images. The encodings
    say nothing about that sign (negating every image negates every mix, and the masks are random); the scale
    does: the right sign maps into [0, 1], the wrong one spills out wherever a pixel is further from the channel
    mean on one side than the other allows. Where the two spill alike (a scale symmetric about
    the mean), the auxiliary images' mean image decides, else the darker reading (photos and digits average below
    mid-grey). A standardisation whose mean and deviation are unknown (``mean``/``std`` None, no auxiliary images)
    is fitted to the reconstructions' range (its 1 % and 99 % points): a set of images reaches 0 and 1 in every
    channel."""
    c = x.shape[1]
    if s.pixel_scale == "normalize" and (mean is None or std is None):
        # robust ends (a few pixels a wrong slot left wild would stretch a plain min/max)
        per = x.transpose(0, 1).reshape(c, -1).double().numpy()
        lo = torch.from_numpy(np.quantile(per, 0.01, axis=1)).float()[None, :, None, None]
        hi = torch.from_numpy(np.quantile(per, 0.99, axis=1)).float()[None, :, None, None]
        span = (hi - lo).clamp_min(1e-12)
        options = [(x - lo) / span, (hi - x) / span]
        pick = 0 if float(options[0].mean()) <= float(options[1].mean()) else 1
        return options[pick].clamp(0, 1)
    if s.pixel_scale == "normalize":
        assert mean is not None and std is not None
        if len(mean) != c:
            raise InputError(f"instahide-inside: mean/std have {len(mean)} values for {c}-channel encodings")
        scale = torch.tensor(std)[None, :, None, None]
        shift = torch.tensor(mean)[None, :, None, None]
    elif s.pixel_scale == "[-1,1]":
        scale, shift = torch.tensor(0.5), torch.tensor(0.5)
    else:
        scale, shift = torch.tensor(1.0), torch.tensor(0.0)
    options = [(sign * x) * scale + shift for sign in (1, -1)]
    spill = [float((y - 1).clamp_min(0).sum() + (-y).clamp_min(0).sum()) for y in options]
    pick = 0 if spill[0] <= spill[1] else 1
    if min(spill) > 0.8 * max(spill):
        if aux is not None:
            ref = (aux.mean(0) - shift[0]).flatten()
            pick = 0 if float(((options[0].mean(0) - shift[0]).flatten() * ref).sum()) >= 0 else 1
        else:
            pick = 0 if float(options[0].mean()) <= float(options[1].mean()) else 1
    return options[pick].clamp(0, 1)


class InsideAttack(Configurable):
    """Inside-dataset InstaHide: every private image from the encodings alone (their released mixed labels and
    auxiliary images optional). See the module docstring for the stages."""

    name = "instahide-inside"
    data_kind = "images"
    Settings = InsideAttackSettings
    threat_model = ThreatModel(
        requires=frozenset({Knowledge.ENCODINGS}), optional=frozenset({Knowledge.LABELS, Knowledge.AUXILIARY})
    )

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """InstaHide inside a dataset (k private images per encoding, nothing public): its k and pixel scale. The
        standardisation's mean and deviation are the owner's data's, not a published setting: the attack takes them
        from the auxiliary images where it has them and fits them otherwise."""
        st = getattr(scheme, "settings", None)
        if getattr(scheme, "name", None) != "instahide" or st is None or st.mode != "inside":
            return None
        return {"k": st.k, "pixel_scale": st.pixel_scale}

    def run(
        self,
        *,
        encodings: Any,
        labels: Any = None,
        auxiliary: Any = None,
        rng: Any = None,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> AttackResult:
        """``encodings``: float32 E×C×H×W (or E×H×W×C as a numpy array, the released layout); ``labels``: E×classes
        mixed labels; ``auxiliary``: clean images of the distribution (an ImageSet, tensor or path) for the pixel
        scale and the global sign; ``rng``: an int seed for the attacker's own randomness."""
        from masquerade.progress import bar

        t0 = time.perf_counter()
        s = self.settings
        if rng is not None:
            if not isinstance(rng, (int, np.integer)):
                raise InputError("instahide-inside: rng is an int seed (the attacker's own randomness)")
            s = replace(s, seed=int(rng))
        z = _encodings(encodings)
        e, c, h, w = z.shape
        use = labels is not None and s.use_labels
        mass = _class_mass(labels, e) if use else np.ones((e, 1))
        aux = _auxiliary(auxiliary, (c, h, w))
        mean, std = s.mean, s.std
        if aux is not None and s.pixel_scale == "normalize":  # the distribution's own statistics
            mean = tuple(float(v) for v in aux.mean((0, 2, 3)))
            std = tuple(float(v) for v in aux.std((0, 2, 3)).clamp_min(1e-6))
        say = log or (lambda _m: None)
        t = time.perf_counter()
        b = _pixels(z)
        scale = float(b.pow(2).mean().sqrt().clamp_min(1e-12))
        spectra = _spectra(_whitened(z.reshape(e, -1).float(), s.whiten_eps), mass, s.dominant)
        tries = _pass_counts(mass, spectra, s.n_private, s.k)
        clustered = time.perf_counter() - t
        best: dict[str, Any] | None = None
        quiet = None if progress is None else not progress
        tried: list[int] = []
        with bar(total=len(tries) * (s.rounds + 1), desc=self.name, unit="step", disable=quiet) as pb:
            for passes in tries:
                tried.append(passes)
                got = _attempt(
                    b,
                    mass,
                    spectra,
                    passes,
                    s,
                    pb,
                    say,
                    give_up=3 * s.verify * scale if len(tried) < len(tries) else None,
                )
                got["misfit"] = float(got["residual"].median()) / scale
                if best is None or got["misfit"] < best["misfit"]:
                    best = got
                if got["misfit"] <= s.verify:
                    break
                say(
                    f"instahide-inside: T = {passes} leaves a median misfit of {got['misfit']:.2f}; the next guess "
                    "of T follows"
                )
        assert best is not None
        design, x, img_class = _merge_copies(best["design"], best["x"], best["classes"])
        if len(x) < len(best["x"]):
            say(f"instahide-inside: {len(best['x']) - len(x)} copies merged")
            x, best["residual"] = _reweighted(design, b, x, s.reweight, 200)
        res = best["residual"]
        images = _to_pixels(_synchronised(x, (c, h, w)), s, mean, std, aux)
        metrics = {
            "n_images": len(x),
            "passes": e // len(x),
            "passes_tried": tried,
            "rounds": best["rounds"],
            "classes": int(mass.shape[1]),
            "labels_used": bool(use),
            "median_misfit": float(res.median()) / scale,
            "verified": float((res < 1e-3 * scale).double().mean()),
            "stage_seconds": {"cluster": round(clustered, 2), **best["seconds"]},
        }
        return AttackResult(
            self.name,
            images,
            recovered={"grouping": design.numpy().astype(np.float32)},
            metrics=metrics,
            seconds=time.perf_counter() - t0,
            aligned=False,
        )


def _attempt(
    b: torch.Tensor,
    mass: np.ndarray,
    spectra: dict[int, Any],
    passes: int,
    s: InsideAttackSettings,
    pb: Any,
    say: Callable[[str], None],
    give_up: float | None = None,
) -> dict[str, Any]:
    """Stages 1 to 3 for one guess of T: clusters, start, rounds. Returns the design, images (n×P on the
    encodings' scale), residuals, classes, rounds run and stage seconds. ``give_up``: a median misfit that, still
    exceeded after two rounds, ends the attempt (a wrong guess of T; another is tried)."""
    e = len(b)
    t = time.perf_counter()
    count = _counts(mass, passes)
    start, img_class = _cluster(spectra, mass, count, s.seed)
    n = len(img_class)
    say(f"instahide-inside: {n} images, {passes} encodings each, {mass.shape[1]} classes")
    design = torch.from_numpy(start)
    x = _lifted_start(design, b)
    x, res = _reweighted(design, b, x, s.reweight, 30)
    pb.update(1)
    seconds = {"start": time.perf_counter() - t}
    t = time.perf_counter()
    cand, cmass = _candidates(mass, img_class)
    valid = cand >= 0
    ci = cand.clamp_min(0).reshape(e, -1)
    kept = torch.zeros_like(valid)
    rounds = 0
    for rounds in range(1, s.rounds + 1):
        w0 = torch.where(valid, design.gather(1, ci).reshape(valid.shape) + 1e-3, torch.zeros(()))
        wt = _refit(x, b, cand, cmass, valid, w0)
        keep = _support(wt, cmass, valid, cand, s.k, n, s.k * passes)
        wt = _refit(x, b, cand, cmass, valid & keep, torch.where(keep, wt + 1e-3, torch.zeros(())), outer=3)
        moved = float((keep != kept).any(-1).any(-1).double().mean()) if rounds > 1 else 1.0
        kept = keep
        design = torch.zeros(e, n, dtype=torch.float64).scatter_add_(1, ci, wt.reshape(e, -1))
        x, res = _reweighted(design, b, x, s.reweight, 30)
        pb.update(1)
        say(
            f"instahide-inside: round {rounds}: {moved:.1%} of encodings changed, median misfit "
            f"{float(res.median()):.2e}"
        )
        if moved < s.tol or (give_up is not None and rounds >= 2 and float(res.median()) > give_up):
            break
    if give_up is not None and float(res.median()) > give_up:
        return {
            "design": design,
            "x": x,
            "residual": res,
            "classes": img_class,
            "rounds": rounds,
            "seconds": {"start": round(seconds["start"], 2), "refine": round(time.perf_counter() - t, 2)},
        }
    x, res = _reweighted(design, b, x, s.reweight, 200)
    # the rounds fix the grouping, but alternating projections keep the sign basins of the first start: a fresh
    # lifted start on the final grouping escapes them where it fits better
    fresh, fres = _reweighted(design, b, _lifted_start(design, b), s.reweight, 200)
    if float(fres.median()) < float(res.median()):
        x, res = fresh, fres
    seconds["refine"] = time.perf_counter() - t
    return {
        "design": design,
        "x": x,
        "residual": res,
        "classes": img_class,
        "rounds": rounds,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _encodings(encodings: Any) -> torch.Tensor:
    if isinstance(encodings, torch.Tensor):
        z = encodings.detach().cpu()
    else:
        arr = np.asarray(encodings)
        if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)  # the released E×H×W×C layout
        z = torch.from_numpy(np.ascontiguousarray(arr))
    if z.ndim != 4 or len(z) < 2 or not z.dtype.is_floating_point:
        raise InputError(f"instahide-inside: encodings are float E×C×H×W (E ≥ 2), got {tuple(z.shape)} {z.dtype}")
    if not torch.isfinite(z).all():
        raise InputError("instahide-inside: the encodings hold NaN or infinite values")
    return z.float()


def _auxiliary(aux: Any, shape: tuple[int, int, int]) -> torch.Tensor | None:
    if aux is None:
        return None
    from masquerade.data import ImageSet, load_images

    if isinstance(aux, torch.Tensor):
        x = aux.detach().cpu().float()
    else:
        imgs = aux if isinstance(aux, ImageSet) else load_images(aux)
        x = imgs.to_tensor()
    if x.ndim != 4 or len(x) < 2:
        raise InputError("instahide-inside: the auxiliary images must be at least two N×C×H×W images")
    if tuple(x.shape[1:]) != shape:
        raise InputError(f"instahide-inside: auxiliary images are {tuple(x.shape[1:])}, the encodings {shape}")
    return x
