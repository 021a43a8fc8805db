"""Gradient inversion: recover a client's images from the gradient it shares in collaborative learning.

Threat model (honest-but-curious server): the attacker sees one client's gradient for a batch (one image by
default), knows the model's architecture and weights, and by default the labels (without them, a batch of one
image's label is read off the last layer's gradient, as iDLG does).

- ``inverting_gradients`` (Geiping et al., NeurIPS 2020, with the ATS configuration): minimise one minus the cosine
  similarity between the trial gradient and the shared one (all layers together) plus a total-variation prior
  (weight 1e-4), with *signed* Adam (lr 0.1, divided by 10 at 3/8, 5/8 and 7/8 of the iterations), the trial image
  boxed to the valid pixel range after every step, from a random normal start in normalised space; the restart with
  the lowest loss wins.
- ``dlg`` (Zhu et al., NeurIPS 2019): the squared L2 distance between gradients, minimised with L-BFGS (lr 1, 300
  steps of up to 20 evaluations each, as the DLG code).

Both optimise in the data-normalised space ``z = (x - mean) / std`` (CIFAR-10's mean and std by default), as the
reference code does, and return images in [0, 1]. The model handed to the attack takes [0, 1] images (wrap a model
that expects standardised inputs in :class:`masquerade.models.Normalized`).

**Vectorised.** Independent problems -- several images attacked at once, and restarts -- run as one batch: the trial
gradients of all problems come from ``torch.func.vmap`` over ``torch.func.grad`` (per-problem gradients with the
model's weights shared), and the double backpropagation goes through that in one pass (a single problem takes plain
double backpropagation: vmap costs more than it saves there). Signed Adam is elementwise, so the problems stay
exactly independent. L-BFGS is not, so ``dlg`` solves problems one after another.

The attack differentiates an *evaluation view* of the model (:func:`evaluation_view`): the same parameters, with
every batch normalisation in evaluation mode written as the per-channel affine map it is then. Its second derivative
is a few elementwise products, where torch's generic batch-norm double backward costs about a tenth of each step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from masquerade.contracts import AttackResult, Knowledge, ThreatModel, build_settings
from masquerade.devices import DeviceLike, model_device, resolve_device, same_device
from masquerade.errors import InputError
from masquerade.progress import bar
from masquerade.rng import RngLike, as_generator

__all__ = [
    "GradientInversion",
    "InversionSettings",
    "DLGSettings",
    "InvertingGradients",
    "DLG",
    "InversionResult",
    "client_gradient",
    "infer_labels",
    "per_sample_gradients",
    "problem_gradients",
    "evaluation_view",
    "total_variation",
    "gradient_cost",
    "gradient_norm",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

CIFAR10_MEAN = (0.4914672374725342, 0.4822617471218109, 0.4467701315879822)
CIFAR10_STD = (0.24703224003314972, 0.24348513782024384, 0.26158785820007324)


@dataclass(frozen=True)
class InversionSettings:
    iterations: int = 4800  # ATS's configuration (Geiping et al. use 24,000 for trained ResNets)
    lr: float = 0.1
    tv: float = 1e-4  # total-variation weight
    restarts: int = 1
    cost: str = "sim"  # "sim": 1 - cosine similarity of all gradients; "l2": squared distance
    optimizer: str = "adam"  # "adam" or "lbfgs"
    signed: bool = True  # signed gradients (sign of the image gradient before the Adam step)
    boxed: bool = True  # clamp the trial image to the valid pixel range after every step
    lr_decay: bool = True  # lr / 10 at 3/8, 5/8, 7/8 of the iterations
    init: str = "randn"  # "randn", "rand" or "zeros", in normalised space
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    chunk: int = 16  # problems optimised together (memory/speed trade-off)
    image_shape: tuple[int, ...] = (3, 32, 32)  # C, H, W of the client's images (the model's input)
    batch: int = 0  # images behind one update (0: as many as the labels, else 1)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1 or self.chunk < 1:
            raise InputError("gradient inversion: iterations, restarts and chunk must be positive")
        if not self.lr > 0 or self.tv < 0:
            raise InputError("gradient inversion: lr must be > 0 and tv >= 0")
        if self.cost not in ("sim", "l2"):
            raise InputError(f"gradient inversion: cost must be 'sim' or 'l2', got {self.cost!r}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise InputError(f"gradient inversion: optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.init not in ("randn", "rand", "zeros"):
            raise InputError(f"gradient inversion: init must be randn, rand or zeros, got {self.init!r}")
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        if len(self.image_shape) != 3 or min(self.image_shape) < 1 or self.batch < 0:
            raise InputError("gradient inversion: image_shape is (C, H, W) and batch >= 0")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise InputError("gradient inversion: mean and std need one value per channel, std > 0")


@dataclass
class InversionResult:
    images: torch.Tensor  # B×C×H×W in [0, 1], the best restart
    labels: torch.Tensor  # the labels used (given or inferred)
    loss: float  # the best restart's final gradient-matching loss
    restart_losses: list[float]
    iterations: int
    seconds: float
    history: list[float] = field(default_factory=list)


def client_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """The gradient a client shares: mean cross-entropy of ``model`` (in eval mode) on its batch."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(images), labels)
    return [g.detach() for g in torch.autograd.grad(loss, params)]


class _EvalBatchNorm(nn.Module):
    """A batch normalisation in evaluation mode as the affine map it computes there, with the original's parameters
    and buffers (the same tensors, under the same names)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.eps = bn.eps

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        view = (-1,) + (1,) * (x.ndim - 2)
        return x * scale.view(view) + shift.view(view)


def evaluation_view(model: nn.Module) -> nn.Module:
    """``model`` in evaluation mode with every batch normalisation that uses running statistics replaced by the affine
    map it computes (:class:`_EvalBatchNorm`). Parameters and buffers are the original tensors under the original
    names, in the original order; the original model is not changed. Outputs and all derivatives equal the model's
    (to float rounding)."""
    if (
        isinstance(model, nn.modules.batchnorm._BatchNorm)
        and not model.training
        and model.running_mean is not None
        and model.running_var is not None
    ):
        return _EvalBatchNorm(model)
    view = copy.copy(model)
    view._parameters = dict(model._parameters)
    view._buffers = dict(model._buffers)
    view._modules = {k: None if v is None else evaluation_view(v) for k, v in model._modules.items()}
    return view


def problem_gradients(model: nn.Module) -> tuple[dict[str, torch.Tensor], Any]:
    """The model's trainable parameters and ``fn(params, x, y)``: the cross-entropy gradient of every problem in a
    P×B×C×H×W batch (labels P×B) at once, via ``torch.func.vmap`` over ``torch.func.grad``; differentiable in x."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    bufs = dict(model.named_buffers())

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, bufs), (xb,)), yb)

    return params, vmap(grad(loss_one), in_dims=(None, 0, 0))


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Each image's own cross-entropy gradient (model in eval mode): one N×(parameter shape) tensor per parameter."""
    params, fn = problem_gradients(model)
    g = fn(params, x[:, None], torch.as_tensor(y)[:, None])
    return [g[k] for k in params]


def infer_labels(model: nn.Module, gradients: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """Labels from the last linear layer's weight gradient (iDLG): with non-negative features, the rows of the
    batch's classes sum to negative values; the ``n`` most negative rows are taken."""
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(gradients):
        raise InputError(f"infer_labels: {len(gradients)} gradients for a model with {len(params)} parameters")
    last_weight = None
    for p, g in zip(params, gradients):
        if p.ndim == 2:
            last_weight = g
    if last_weight is None:
        raise InputError("infer_labels: the model has no linear layer to read the labels from")
    return torch.argsort(last_weight.sum(dim=1))[:n]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal plus vertical neighbours, per problem (over the last 4 dims)."""
    dx = (x[..., :, :-1] - x[..., :, 1:]).abs().flatten(-4).mean(-1)
    dy = (x[..., :-1, :] - x[..., 1:, :]).abs().flatten(-4).mean(-1)
    return dx + dy


def gradient_norm(target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-problem L2 norm of a gradient (all layers together); tensors carry a leading problem dimension."""
    return sum(b.pow(2).flatten(1).sum(1) for b in target).sqrt()  # type: ignore[union-attr]


def gradient_cost(
    trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor], cost: str, *, target_norm: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-problem gradient distance; tensors carry a leading problem dimension. ``target_norm`` (from
    :func:`gradient_norm`) saves recomputing the fixed target's norm at every iteration."""
    if cost == "l2":
        return sum((a - b).pow(2).flatten(1).sum(1) for a, b in zip(trial, target))  # type: ignore[return-value]
    dot = sum((a * b).flatten(1).sum(1) for a, b in zip(trial, target))
    na = sum(a.pow(2).flatten(1).sum(1) for a in trial)
    nb = gradient_norm(target) if target_norm is None else target_norm
    return 1 - dot / (na.sqrt() * nb).clamp_min(1e-30)  # type: ignore[union-attr]


class GradientInversion:
    name = "gradient-inversion"
    data_kind = "images"
    threat_model = ThreatModel(
        requires=frozenset({Knowledge.MODEL, Knowledge.GRADIENTS}), optional=frozenset({Knowledge.LABELS})
    )
    Settings: type[InversionSettings] = InversionSettings
    uses_device = True  # runs where the model is; ``run(device=...)`` puts a copy of it there

    def __init__(self, **settings: Any) -> None:
        self.settings = build_settings(self.Settings, self.name, **settings)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"

    # -- the public entry: one client update ---------------------------------------------------------------------
    def run(
        self,
        *,
        model: nn.Module,
        gradients: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        rng: RngLike = None,
        progress: bool | None = None,
        device: DeviceLike = None,
    ) -> AttackResult:
        """Reconstruct the batch behind ``gradients`` (a list with one tensor per trainable parameter), where
        ``model`` is, or on ``device`` (a copy of the model goes there)."""
        s = self.settings
        if device is not None and not same_device(model_device(model), resolve_device(device)):
            model = copy.deepcopy(model).to(resolve_device(device))
        n = s.batch or (len(torch.as_tensor(labels).reshape(-1)) if labels is not None else 1)
        grads = [torch.as_tensor(g)[None] for g in gradients]
        lab = None if labels is None else torch.as_tensor(labels).reshape(1, -1)
        r = self.run_many(
            model=model, gradients=grads, labels=lab, shape=s.image_shape, batch=n, rng=rng, progress=progress
        )[0]
        return AttackResult(
            self.name,
            r.images,
            recovered={"labels": r.labels},
            metrics={
                "loss": r.loss,
                "restart_losses": r.restart_losses,
                "iterations": r.iterations,
                "history": r.history,
            },
            seconds=r.seconds,
        )

    # -- several independent client updates at once ---------------------------------------------------------------
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
        """``gradients``: one tensor per parameter with a leading dimension P (P independent updates, each of
        ``batch`` images); ``labels``: P×batch or None. Returns one result per update."""
        s = self.settings
        params: dict[str, torch.Tensor] = {k: v for k, v in model.named_parameters() if v.requires_grad}
        if len(gradients) != len(params):
            raise InputError(
                f"{self.name}: got {len(gradients)} gradient tensors, the model has {len(params)} trainable parameters"
            )
        p_count = int(gradients[0].shape[0])
        for g, (k, v) in zip(gradients, params.items()):
            if tuple(g.shape[1:]) != tuple(v.shape) or g.shape[0] != p_count:
                raise InputError(
                    f"{self.name}: gradient of {k} has shape {tuple(g.shape)}, expected "
                    f"({p_count}, {', '.join(map(str, v.shape))})"
                )
            if not torch.isfinite(g).all():
                raise InputError(f"{self.name}: the gradient of {k} contains NaN or infinite values")
        c = shape[0]
        if len(s.mean) != c:
            raise InputError(f"{self.name}: mean/std have {len(s.mean)} channels, the images {c}")
        model.eval()
        dev = model_device(model)  # everything runs where the model is; results come back to the CPU
        target = [g.detach().to(dev, torch.float32) for g in gradients]
        if labels is None:
            labels = torch.stack(
                [infer_labels(model, [g[i].to(dev) for g in gradients], batch) for i in range(p_count)]
            )
        model = evaluation_view(model)
        params, grad_fn = problem_gradients(model)
        labels_t: torch.Tensor = torch.as_tensor(labels, dtype=torch.int64).reshape(p_count, batch).to(dev)
        # problems: every update × every restart
        idx = np.repeat(np.arange(p_count), s.restarts)
        mean = torch.tensor(s.mean, device=dev).view(1, 1, c, 1, 1)
        std = torch.tensor(s.std, device=dev).view(1, 1, c, 1, 1)
        z0 = self._starts((len(idx), batch, *shape), as_generator(rng)).to(dev)
        keys = list(params)
        weights = [p for p in model.parameters() if p.requires_grad]  # the order of ``params``

        def trial_gradients(x: torch.Tensor, rows: np.ndarray) -> list[torch.Tensor]:
            if len(rows) == 1:  # one problem: plain double backpropagation, without vmap's per-call overhead
                with torch.enable_grad():  # as torch.func.grad does, also when scoring under no_grad
                    loss = F.cross_entropy(model(x[0]), labels_t[rows[0]])
                    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
                # a parameter the loss does not use (an auxiliary head) has a zero gradient, as torch.func.grad gives
                return [(torch.zeros_like(w) if g is None else g)[None] for g, w in zip(grads, weights)]
            trial = grad_fn(params, x, labels_t[rows])
            return [trial[k] for k in keys]

        chunk_targets: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}

        def targets(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            """The chunk's target gradients as one P×D matrix and their norms, made once per chunk."""
            if rows.tobytes() not in chunk_targets:
                chunk_targets.clear()
                flat = torch.cat([t[rows].reshape(len(rows), -1) for t in target], 1)
                chunk_targets[rows.tobytes()] = (flat, gradient_norm([flat]))
            return chunk_targets[rows.tobytes()]

        def objective(z: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            x = z * std + mean
            flat, norm = targets(rows)
            # the gradient cost of all layers, on one concatenated vector per problem: three reductions instead
            # of three per parameter tensor (65 for ResNet-20), forward and backward
            trial = torch.cat([g.reshape(len(rows), -1) for g in trial_gradients(x, rows)], 1)
            match = gradient_cost([trial], [flat], s.cost, target_norm=norm)
            return match + s.tv * total_variation(z), match

        t0 = time.perf_counter()
        final = torch.empty(len(idx), device=dev)
        out = torch.empty_like(z0)
        history: list[float] = []
        chunks = [np.arange(i, min(i + s.chunk, len(idx))) for i in range(0, len(idx), s.chunk)]
        if s.optimizer == "lbfgs":
            chunks = [np.array([i]) for i in range(len(idx))]
        with bar(
            total=len(chunks) * s.iterations,
            desc=self.name,
            unit="it",
            disable=None if progress is None else not progress,
        ) as pb:
            for rows_p in chunks:
                rows = idx[rows_p]
                z = z0[rows_p].clone().requires_grad_(True)
                if s.optimizer == "adam":
                    self._adam(z, rows, objective, mean, std, pb, history)
                else:
                    self._lbfgs(z, rows, objective, mean, std, pb, history)
                with torch.no_grad():
                    _, match = objective(z.detach(), rows)
                final[rows_p] = match.detach()
                out[rows_p] = z.detach()
        images = (out * std + mean).clamp(0, 1).cpu()
        final, labels_t = final.cpu(), labels_t.cpu()
        seconds = time.perf_counter() - t0
        results = []
        for i in range(p_count):
            mine = np.nonzero(idx == i)[0]
            losses = final[mine]
            best = mine[int(torch.nan_to_num(losses, nan=math.inf).argmin())]
            results.append(
                InversionResult(
                    images=images[best],
                    labels=labels_t[i],
                    loss=float(final[best]),
                    restart_losses=[float(v) for v in losses],
                    iterations=s.iterations,
                    seconds=seconds / p_count,
                    history=history,
                )
            )
        return results

    def _starts(self, shape: tuple[int, ...], gen: np.random.Generator) -> torch.Tensor:
        """The optimisation's starting points in the normalised space (``settings.init``), drawn on the CPU so that
        a seed gives the same start on every device."""
        s = self.settings
        torch_gen = torch.Generator().manual_seed(int(gen.integers(0, 2**62)))
        if s.init == "randn":
            return torch.randn(*shape, generator=torch_gen)
        if s.init == "rand":
            c = shape[2]
            mean, std = torch.tensor(s.mean).view(1, 1, c, 1, 1), torch.tensor(s.std).view(1, 1, c, 1, 1)
            return (torch.rand(*shape, generator=torch_gen) - mean) / std
        return torch.zeros(*shape)

    def _bounds(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (0 - mean) / std, (1 - mean) / std

    def _adam(
        self,
        z: torch.Tensor,
        rows: np.ndarray,
        objective: Any,
        mean: torch.Tensor,
        std: torch.Tensor,
        pb: Any,
        history: list[float],
        *,
        lr: float | None = None,
        span: int | None = None,
        begin: int = 0,
        end: int | None = None,
    ) -> None:
        """Signed Adam on ``z`` (in place). ``lr`` and ``span`` (the iterations the step decay is laid over) default
        to the settings' lr and iterations; ``begin``/``end`` run part of that schedule (a refinement resumed in
        stages)."""
        s = self.settings
        lr = s.lr if lr is None else lr
        span = s.iterations if span is None else span
        end = span if end is None else end
        opt = torch.optim.Adam([z], lr=lr)
        milestones = [int(span / 2.667), int(span / 1.6), int(span / 1.142)]
        lo, hi = self._bounds(mean, std)
        for it in range(begin, end):
            if s.lr_decay:
                opt.param_groups[0]["lr"] = lr * 0.1 ** sum(it >= m for m in milestones)
            loss, _ = objective(z, rows)
            (g,) = torch.autograd.grad(loss.sum(), z)
            z.grad = g.sign() if s.signed else g
            opt.step()
            if s.boxed:
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, hi), lo))
            if it % 100 == 0 or it == end - 1:
                history.append(float(loss.detach().mean()))
            pb.update(1)

    def _lbfgs(
        self,
        z: torch.Tensor,
        rows: np.ndarray,
        objective: Any,
        mean: torch.Tensor,
        std: torch.Tensor,
        pb: Any,
        history: list[float],
    ) -> None:
        s = self.settings
        # DLG: torch's L-BFGS defaults (up to 20 evaluations per step, history 100), lr 1, no line search
        opt = torch.optim.LBFGS([z], lr=s.lr, max_iter=20, history_size=100, line_search_fn=None)
        lo, hi = self._bounds(mean, std)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss, _ = objective(z, rows)
            total = loss.sum()
            (g,) = torch.autograd.grad(total, z)
            z.grad = g
            return total.detach()

        for it in range(s.iterations):
            loss = opt.step(closure)
            if not torch.isfinite(loss):
                break
            if s.boxed:
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, hi), lo))
            if it % 100 == 0 or it == s.iterations - 1:
                history.append(float(loss))
            pb.update(1)


class InvertingGradients(GradientInversion):
    """Inverting Gradients with the ATS configuration (4,800 iterations of signed Adam, TV 1e-4)."""

    name = "inverting_gradients"

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """ATS policies: the attack ATS measures its policies with (``none`` is plain federated learning)."""
        return {} if getattr(scheme, "name", None) == "ats" else None


@dataclass(frozen=True)
class DLGSettings(InversionSettings):
    """DLG's configuration: the same fields, other defaults."""

    iterations: int = 300
    lr: float = 1.0
    tv: float = 0.0
    cost: str = "l2"
    optimizer: str = "lbfgs"
    signed: bool = False
    boxed: bool = False
    lr_decay: bool = False
    init: str = "randn"


class DLG(GradientInversion):
    """Deep Leakage from Gradients: L2 gradient matching with L-BFGS (lr 1, 300 iterations, no prior)."""

    name = "dlg"
    Settings = DLGSettings
