"""``ats-adaptive``: gradient inversion that knows the clients' ATS policy (Kerckhoffs: the policies are published).

A policy-blind inversion recovers the image the gradient was computed on, the *transformed* one; scored against the
private image it looks like a defence. An adversary who knows the policy does better, in three stages:

1. **Blind inversion.** Inverting Gradients (the same settings) recovers the transformed image ``x_T``.
2. **Candidates.** What the adversary does not know is each image's draw of the policy's discrete random choices:
   which list of a hybrid, the sign of every signed operation and, where the probabilities are honoured, whether
   each sub-policy fires (:func:`candidates` enumerates them all). For every candidate ``c`` the recovered image is
   pulled back through the policy (:func:`invert`): translations and rotations exactly, pixel for pixel, through the
   sampling map the operation itself uses (the pixels it pushed out of the image are *unknown*); shears through the
   opposite shear; brightness, colour, contrast and sharpness through the inverse blend; ``invert`` is its own
   inverse; the rest (posterize, solarize, autocontrast, equalize) is taken as is. Unknown pixels start at the mean
   of the known ones. Each candidate is scored by how well the gradient of its image sent forward through the
   candidate's transformation (:func:`soft_transform`, a differentiable copy of the policy's operations) matches the
   shared gradient; the best ``keep`` candidates go on. With ``screen_iterations`` (successive halving) every
   candidate is first refined that long (stage 3) and the best ``keep`` by that match go on; off by default: on
   an untrained ConvNet it cost 1.6-1.9x the time and did not choose better on average (the gradient match barely
   tells a contrast sign, nor a 3-pixel translation's, even after full refinement).
3. **Refinement through the policy.** For each kept candidate, Inverting Gradients' signed Adam optimises the
   *private* image ``x`` so that the gradient at ``T_c(x)`` matches, starting from the pulled-back image, with the
   total-variation prior on ``x``. Pixels the transformation destroys do not reach the gradient, so only the prior
   moves them: they are inpainted smoothly from what is kept, nothing more. The candidate with the best final
   gradient match wins.

Threat model: the model, the client's gradient and (optionally) the label, as the blind inversion; the policy is a
setting (public). One image per client update (batch 1): every image draws its own choices.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from masquerade.ats.policies import _SIGNED, MAGNITUDES, SUB_POLICIES, apply_operation, format_policy, parse_policy
from masquerade.attacks.gradient_inversion import (
    GradientInversion,
    InversionResult,
    InversionSettings,
    InvertingGradients,
    evaluation_view,
    gradient_cost,
    gradient_norm,
    problem_gradients,
    total_variation,
)
from masquerade.devices import model_device, require_float64
from masquerade.errors import InputError
from masquerade.progress import bar
from masquerade.rng import RngLike, as_generator

__all__ = [
    "AdaptiveSettings",
    "ATSAdaptive",
    "AdaptiveResult",
    "candidates",
    "describe_candidate",
    "invert",
    "soft_transform",
    "source_index",
]

_GEOMETRIC = {"translateX", "translateY", "shearX", "shearY", "rotate"}
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AdaptiveSettings(InversionSettings):
    """Inverting Gradients' settings (for the blind stage and the refinement), plus what the adversary knows and
    how much it searches. ``policy``: the clients' policy (None: the caller passes it, as
    :func:`masquerade.ats.privacy.attack_model` and the scorecard do)."""

    iterations: int = 300
    policy: str | None = None
    always: bool = False  # the clients apply every sub-policy (the published code)
    keep: int = 2  # candidates refined through the policy
    refine_iterations: int = 0  # 0: as many as ``iterations``
    refine_lr: float = 0.03  # signed Adam's step in the refinement (it starts close)
    screen_iterations: int = 0  # successive halving: every candidate refined this long, then the best
    # ``keep`` to the end (0: ``keep`` chosen by the pull-back's match alone)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy is not None:
            if not isinstance(self.policy, str):
                raise InputError(f"ats-adaptive: policy must be a string such as '3-1-7', got {self.policy!r}")
            object.__setattr__(self, "policy", format_policy(parse_policy(self.policy)))
        if not isinstance(self.always, (bool, np.bool_)):
            raise InputError(f"ats-adaptive: always must be true or false, got {self.always!r}")
        if self.keep < 1 or self.refine_iterations < 0 or self.screen_iterations < 0:
            raise InputError("ats-adaptive: keep must be >= 1, refine_iterations and screen_iterations >= 0")
        if not self.refine_lr > 0:
            raise InputError("ats-adaptive: refine_lr must be > 0")


@dataclass
class AdaptiveResult(InversionResult):
    candidate: str = ""  # the chosen draw, e.g. "3:translateX-,1:contrast+,7:translateY+"
    transformed: torch.Tensor | None = None  # the blind stage's estimate of the transformed image
    known: torch.Tensor | None = None  # 1×1×H×W: pixels the chosen draw keeps (1) or destroys (0)


# -- the discrete choices --------------------------------------------------------------------------------------


def candidates(policy: str, *, always: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every draw of the policy's discrete choices that gives a different transformation: ``steps`` (C×L, -1 for a
    sub-policy that does not fire) and ``sign`` (C×L, ±1), in the layout of :class:`ATSKey`."""
    lists = parse_policy(policy)
    length = max((len(lst) for lst in lists), default=0)
    seen: dict[tuple[tuple[int, int], ...], None] = {}
    for lst in lists or ((),):
        options = []
        for sp in lst:
            prob, op, _ = SUB_POLICIES[sp]
            fire = [True] if always or prob >= 1 else ([False] if prob <= 0 else [True, False])
            signs = (1, -1) if op in _SIGNED else (1,)
            options.append([(sp, s) if f else (-1, 1) for f in fire for s in (signs if f else (1,))])
        for combo in itertools.product(*options):
            row = tuple(combo) + ((-1, 1),) * (length - len(combo))
            seen.setdefault(row, None)
    rows = list(seen) or [()]
    steps = np.array([[sp for sp, _ in r] for r in rows], dtype=np.int64).reshape(len(rows), length)
    sign = np.array([[s for _, s in r] for r in rows], dtype=np.int64).reshape(len(rows), length)
    return steps, sign


def describe_candidate(steps: np.ndarray, sign: np.ndarray) -> str:
    parts = []
    for sp, s in zip(steps.tolist(), sign.tolist()):
        if sp < 0:
            continue
        op = SUB_POLICIES[sp][1]
        parts.append(f"{sp}:{op}{('+' if s > 0 else '-') if op in _SIGNED else ''}")
    return ",".join(parts) or "identity"


# -- the operations, differentiable and inverted ----------------------------------------------------------------


def _source(
    op: str, magnitude: float, sign: torch.Tensor, n: int, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor, str, float]:
    """Where each output pixel of a geometric operation reads its input (pixel-centre coordinates, N×H×W), the
    resampling mode and the fill, as :mod:`masquerade.ats.policies` defines them."""
    dev = sign.device
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=dev) + 0.5,
        torch.arange(w, dtype=torch.float64, device=dev) + 0.5,
        indexing="ij",
    )
    xs, ys = xs.expand(n, h, w), ys.expand(n, h, w)
    ms = (float(magnitude) * sign.to(torch.float64)).view(-1, 1, 1)
    if op == "translateX":
        return xs + ms * w, ys, "nearest", 0.0
    if op == "translateY":
        return xs, ys + ms * h, "nearest", 0.0
    if op == "shearX":
        return xs + ms * ys, ys, "bicubic", 0.0
    if op == "shearY":
        return xs, ms * xs + ys, "bicubic", 0.0
    t = math.radians(float(magnitude))  # rotate: no sign, grey fill
    dx, dy = xs - w / 2, ys - h / 2
    return (
        math.cos(t) * dx - math.sin(t) * dy + w / 2,
        math.sin(t) * dx + math.cos(t) * dy + h / 2,
        "nearest",
        128 / 255,
    )


def _resample(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    """Differentiable resampling at source coordinates; the grid is built as the policies build it (float32), so
    nearest sampling picks the very pixels the policy picks."""
    h, w = x.shape[-2:]
    grid = torch.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], dim=-1).to(x.dtype)
    if mode == "nearest":
        return F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False) + fill
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    inside = ((src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)).unsqueeze(1)
    return torch.where(inside, out, torch.full_like(out, fill))


def source_index(op: str, magnitude: float, sign: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """N×(H·W): the input pixel (flat index) each output pixel of a nearest-sampled geometric operation copies, or
    -1 where it takes the fill."""
    src_x, src_y, _, _ = _source(op, magnitude, sign, n, h, w)
    index = torch.arange(h * w, dtype=torch.float32, device=sign.device).view(1, 1, h, w).expand(n, 1, h, w)
    out = _resample(index, src_x, src_y, "nearest", -1.0)
    return torch.round(out).to(torch.int64).view(n, h * w)


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return sum(c * x[:, i : i + 1] for i, c in enumerate(_LUMA))  # type: ignore[return-value]


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter inside, the border unchanged (as the policies' sharpness)."""
    c = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5
    inner = F.conv2d(x, (k / 13).expand(c, 1, 3, 3), groups=c)
    return F.pad(inner - x[:, :, 1:-1, 1:-1], (1, 1, 1, 1)) + x


def _degenerate(x: torch.Tensor, op: str) -> torch.Tensor:
    """The image a blend operation mixes with (``out = d + f (x - d)``)."""
    if op == "brightness":
        return torch.zeros_like(x)
    if op == "color":
        return _luma(x).expand_as(x)
    if op == "contrast":
        return _luma(x).mean((1, 2, 3), keepdim=True).expand_as(x)
    return _smooth(x)


def _soft_op(x: torch.Tensor, op: str, magnitude: float, sign: torch.Tensor) -> torch.Tensor:
    """One operation, differentiable in ``x`` (no 8-bit rounding; operations without a useful derivative pass the
    gradient straight through)."""
    n, _, h, w = x.shape
    if op in _GEOMETRIC:
        src_x, src_y, mode, fill = _source(op, magnitude, sign, n, h, w)
        return _resample(x, src_x, src_y, mode, fill)
    if op in ("color", "contrast", "sharpness", "brightness"):
        f = (1 + float(magnitude) * sign.to(x.dtype)).view(-1, 1, 1, 1)
        d = _degenerate(x, op)
        return (d + f * (x - d)).clamp(0, 1)
    if op == "invert":
        return 1 - x
    if op in ("zoom", "warp"):  # their draws are continuous and not searched (no published sub-policy has them)
        return x
    # the policies' exact 8-bit operations run on the CPU (as the scheme does)
    exact = apply_operation(x.detach().clamp(0, 1).cpu(), op, float(magnitude), sign=sign.cpu()).to(x.device)
    return x + (exact - x.detach())


def _inverse_op(
    y: torch.Tensor, known: torch.Tensor, op: str, magnitude: float, sign: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of one operation from its output, where the operation keeps it; ``known`` (N×1×H×W) marks the
    pixels of ``y`` known so far."""
    n, c, h, w = y.shape
    if op in ("translateX", "translateY", "rotate"):
        idx = source_index(op, magnitude, sign, n, h, w)
        slot = torch.where(idx < 0, h * w, idx)  # the fill's reads go to a spare slot
        # an input pixel read by several outputs (nearest sampling may repeat one) takes their known values' mean
        kn = known.reshape(n, 1, h * w)
        x = torch.zeros(n, c, h * w + 1, dtype=y.dtype, device=y.device).scatter_add(
            2, slot[:, None].expand(n, c, h * w), y.reshape(n, c, h * w) * kn
        )
        k = torch.zeros(n, 1, h * w + 1, dtype=y.dtype, device=y.device).scatter_add(2, slot[:, None], kn)
        x = x / k.clamp_min(1)
        return x[..., :-1].reshape(n, c, h, w), (k[..., :-1] > 0).to(y.dtype).reshape(n, 1, h, w)
    if op in ("shearX", "shearY"):
        back = -sign
        return _soft_op(y, op, magnitude, back), (_soft_op(known, op, magnitude, back) > 0.999).to(y.dtype)
    if op in ("color", "contrast", "sharpness", "brightness"):
        f = (1 + float(magnitude) * sign.to(y.dtype)).view(-1, 1, 1, 1)
        d = _degenerate(y, op)  # blends keep the luma, the mean and (roughly) the smooth image
        return (d + (y - d) / f).clamp(0, 1), known
    if op == "invert":
        return 1 - y, known
    return y, known


def soft_transform(x: torch.Tensor, steps: np.ndarray, sign: np.ndarray) -> torch.Tensor:
    """Apply per-image draws (``steps``, ``sign``: N×L) differentiably; every operation once on the images that
    take it, as :func:`masquerade.ats.policies.transform` does."""
    out = x
    for step in range(steps.shape[1]):
        col = steps[:, step]
        new = out
        for sp in np.unique(col[col >= 0]).tolist():
            at = np.nonzero(col == sp)[0]
            rows = torch.from_numpy(at).to(x.device)
            _, op, level = SUB_POLICIES[sp]
            s = torch.from_numpy(sign[at, step]).to(x.device)
            new = new.index_copy(0, rows, _soft_op(out[rows], op, float(MAGNITUDES[op][level]), s))
        out = new
    return out


def invert(y: torch.Tensor, steps: np.ndarray, sign: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull transformed images back through per-image draws: the images and N×1×H×W masks of the pixels known."""
    x = y.clone()
    known = torch.ones(len(y), 1, *y.shape[2:], dtype=y.dtype, device=y.device)
    for step in reversed(range(steps.shape[1])):
        col = steps[:, step]
        for sp in np.unique(col[col >= 0]).tolist():
            at = np.nonzero(col == sp)[0]
            rows = torch.from_numpy(at).to(y.device)
            _, op, level = SUB_POLICIES[sp]
            s = torch.from_numpy(sign[at, step]).to(y.device)
            x[rows], known[rows] = _inverse_op(x[rows], known[rows], op, float(MAGNITUDES[op][level]), s)
    return x, known


def _fill_unknown(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Unknown pixels take the mean colour of the known ones (the prior's starting point, not a claim)."""
    count = known.sum((2, 3), keepdim=True).clamp_min(1)
    mean = (x * known).sum((2, 3), keepdim=True) / count
    return torch.where(known > 0.5, x, mean.expand_as(x))


# -- the attack ------------------------------------------------------------------------------------------------


class ATSAdaptive(GradientInversion):
    """Gradient inversion through the clients' (public) ATS policy: blind inversion, a search over the policy's
    discrete random choices, and refinement of the private image through the transformation."""

    name = "ats-adaptive"
    Settings = AdaptiveSettings
    settings: AdaptiveSettings

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """An ATS policy: that policy (a transformation the adversary can pull back); ``none`` has nothing to
        adapt to (the blind inversion is the attack there)."""
        if getattr(scheme, "name", None) != "ats" or scheme.settings.policy == "none":
            return None
        return {"policy": scheme.settings.policy, "always": bool(scheme.settings.always)}

    def with_policy(self, policy: str, always: bool) -> "ATSAdaptive":
        """This attack told the clients' policy (public knowledge), its other settings unchanged."""
        values = {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}
        return type(self)(**{**values, "policy": policy, "always": bool(always)})

    def _blind(self) -> InvertingGradients:
        base = {f.name: getattr(self.settings, f.name) for f in fields(InversionSettings)}
        return InvertingGradients(**base)

    def run_many(
        self,
        *,
        model: nn.Module,
        gradients: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        shape: tuple[int, ...] = (3, 32, 32),
        batch: int = 1,
        rng: RngLike = None,
        progress: bool | None = None,
    ) -> list[InversionResult]:
        s = self.settings
        if s.policy is None:
            raise InputError(
                "ats-adaptive: no policy; give the clients' policy (policy='3-1-7'), or run it through "
                "ats.privacy.attack_model, which passes it"
            )
        if batch != 1:
            raise InputError(
                f"ats-adaptive: one image per client update (batch 1), got batch {batch}: every image "
                "draws its own transformation"
            )
        if s.cost != "sim" or s.optimizer != "adam":
            raise InputError("ats-adaptive: refines with Inverting Gradients' objective (cost 'sim', optimizer 'adam')")
        require_float64(model_device(model), "ats-adaptive")  # the policy's geometry is float64
        t0 = time.perf_counter()
        gen = as_generator(rng)
        blind = self._blind().run_many(
            model=model,
            gradients=gradients,
            labels=labels,
            shape=shape,
            batch=1,
            rng=int(gen.integers(0, 2**62)),
            progress=progress,
        )
        return self._search(model=model, gradients=gradients, blind=blind, t0=t0, progress=progress)

    def _search(
        self,
        *,
        model: nn.Module,
        gradients: Sequence[torch.Tensor],
        blind: Sequence[InversionResult],
        t0: float,
        progress: bool | None,
    ) -> list[InversionResult]:
        """Stages 2 and 3 from the blind stage's results."""
        s = self.settings
        assert s.policy is not None  # run_many checked it
        dev = model_device(model)  # the blind stage returns its results on the CPU
        x_t = torch.cat([r.images for r in blind]).to(dev)  # P×C×H×W
        lab = torch.stack([r.labels for r in blind]).to(dev)  # P×1
        cand_steps, cand_sign = candidates(s.policy, always=s.always)
        p_count, c_count = len(x_t), len(cand_steps)
        # every problem × every candidate, pulled back and scored by its forward gradient match
        pi = np.repeat(np.arange(p_count), c_count)
        ci = np.tile(np.arange(c_count), p_count)
        x_c, known = invert(x_t[pi], cand_steps[ci], cand_sign[ci])
        x_c = _fill_unknown(x_c, known)
        model.eval()
        view = evaluation_view(model)
        params, grad_fn = problem_gradients(view)
        keys = list(params)
        target = torch.cat(
            [torch.as_tensor(g).detach().to(x_t.device, torch.float32).reshape(p_count, -1) for g in gradients], 1
        )
        target_norm = gradient_norm([target])

        def match(x: torch.Tensor, rows: np.ndarray, probs: np.ndarray) -> torch.Tensor:
            trial = grad_fn(params, soft_transform(x, cand_steps[rows], cand_sign[rows])[:, None], lab[probs])
            flat = torch.cat([trial[k].reshape(len(rows), -1) for k in keys], 1)
            return gradient_cost([flat], [target[probs]], "sim", target_norm=target_norm[probs])

        with torch.no_grad():
            first = torch.cat(
                [
                    match(x_c[i : i + s.chunk], ci[i : i + s.chunk], pi[i : i + s.chunk])
                    for i in range(0, len(pi), s.chunk)
                ]
            ).view(p_count, c_count)
        keep = min(s.keep, c_count)
        total = self._refine_steps()
        screen = min(s.screen_iterations, total) if keep < c_count else 0
        if screen:
            # successive halving: every candidate refined briefly, the best ``keep`` of each problem to the end
            x_s, m_s = self._refine(x_c, pi, ci, match, progress, 0, screen, total)
            score, start_all = m_s.view(p_count, c_count), x_s
        else:
            score, start_all = first, x_c
        order = torch.argsort(torch.nan_to_num(score, nan=math.inf), dim=1)[:, :keep]  # P×keep
        rp = np.repeat(np.arange(p_count), keep)
        rc = order.reshape(-1).cpu().numpy()
        start = start_all.view(p_count, c_count, *x_c.shape[1:])[rp, rc]
        refined, final = self._refine(start, rp, rc, match, progress, screen, total, total)
        kept = known.view(p_count, c_count, *known.shape[1:])
        final = final.view(p_count, keep)
        best = torch.nan_to_num(final, nan=math.inf).argmin(1)
        seconds = time.perf_counter() - t0
        out: list[InversionResult] = []
        for p in range(p_count):
            j = int(best[p])
            c = int(order[p, j])
            out.append(
                AdaptiveResult(
                    images=refined[p * keep + j][None].cpu(),
                    labels=lab[p].cpu(),
                    loss=float(final[p, j]),
                    restart_losses=[float(v) for v in final[p]],
                    iterations=s.iterations + total,
                    seconds=seconds / p_count,
                    history=blind[p].history,
                    candidate=describe_candidate(cand_steps[c], cand_sign[c]),
                    transformed=x_t[p : p + 1].cpu(),
                    known=kept[p, c][None].cpu(),
                )
            )
        return out

    def _refine_steps(self) -> int:
        return self.settings.refine_iterations or self.settings.iterations

    def _refine(
        self,
        start: torch.Tensor,
        rp: np.ndarray,
        rc: np.ndarray,
        match: Any,
        progress: bool | None,
        begin: int,
        end: int,
        steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed Adam on the private images (normalised space, boxed), the gradient matched through each
        candidate's transformation, total variation on the private image; returns the images and final matches."""
        s = self.settings
        c = start.shape[1]
        mean = torch.tensor(s.mean, device=start.device).view(1, c, 1, 1)
        std = torch.tensor(s.std, device=start.device).view(1, c, 1, 1)
        images = torch.empty_like(start)
        final = torch.empty(len(start), device=start.device)
        chunks = [np.arange(i, min(i + s.chunk, len(start))) for i in range(0, len(start), s.chunk)]

        def objective(z: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            m = match(z * std + mean, rc[rows], rp[rows])
            return m + s.tv * total_variation(z[:, None]), m

        with bar(
            total=len(chunks) * (end - begin),
            desc=self.name,
            unit="it",
            disable=None if progress is None else not progress,
        ) as pb:
            for rows in chunks:
                z = ((start[rows] - mean) / std).clone().requires_grad_(True)
                # Inverting Gradients' own signed Adam, at the refinement's step, over part of its schedule
                self._adam(z, rows, objective, mean, std, pb, [], lr=s.refine_lr, span=steps, begin=begin, end=end)
                with torch.no_grad():
                    x = (z.detach() * std + mean).clamp(0, 1)
                    final[rows] = match(x, rc[rows], rp[rows])
                images[rows] = x
        return images, final
