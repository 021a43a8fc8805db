"""Automatic transformation search (ATS, Gao et al., CVPR 2021): find policies that defeat gradient inversion
while keeping the model trainable, without running a single attack or training a model per candidate.

Two scores per candidate policy:

- **S_pri** (privacy, lower is better). For an image ``x`` transformed by the policy and uniform noise ``u``, take
  21 points ``x_a = a x + (1 - a) u`` (a = 0, 0.05, ..., 1) on the path from noise to the image, and the cosine
  similarity between the gradient at ``x_a`` and the shared gradient at ``x``, averaged over the layers; S_pri is
  the area under that curve (trapezoid rule, a in [0, 1]). A small area means the gradient says little about the
  image until the search is already there: gradient matching has no slope to follow. The model is one trained
  briefly on a small share of the data (the ATS code: 10 % of the training set); scores are averaged over images.
- **S_acc** (trainability, higher is better). At initialisation, the Jacobians of the summed network outputs with
  respect to a batch of transformed inputs; with the eigenvalues ``v`` of their correlation matrix,
  ``S_acc = -sum(log(v + k) + 1 / (v + k))``, k = 1e-5, averaged over 10 batches. Uncorrelated Jacobians (the
  network tells the images apart) give the maximum, ``-N`` for a batch of N.

The search draws random candidates (3 slots, each a sub-policy or empty, as the ATS generator), scores them in
parallel on all cores, keeps those with ``S_acc`` at or above a threshold and ranks them by ``S_pri``.

Fixed here, against the published scripts: their generator draws sub-policy numbers 0-50 from a list of 50 (the
draw of 50 crashes); their ranking script does not run (a Unicode minus sign in ``-85``); their sub-policies ignore
their probabilities (see :mod:`masquerade.ats.policies`). On CIFAR-100 the ATS code builds each S_acc batch from one
image per class among 100 test images (about 63 images); with 10 classes we draw batches of ``acc_images`` images.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from masquerade.ats.policies import SUB_POLICIES, ATSPolicy, format_policy, parse_policy
from masquerade.attacks.gradient_inversion import per_sample_gradients
from masquerade.devices import DeviceLike, model_device, require_float64, resolve_device, same_device
from masquerade.errors import InputError
from masquerade.progress import bar
from masquerade.rng import RngLike, as_generator, spawn

__all__ = ["SearchSettings", "privacy_score", "accuracy_score", "random_policies", "score_policy", "search", "rank"]


@dataclass(frozen=True)
class SearchSettings:
    candidates: int = 100  # random policies scored (the ATS scripts: 1,600 on 8 GPUs)
    slots: int = 3  # sub-policies per candidate (each slot may stay empty)
    privacy_images: int = 50  # images S_pri is averaged over (ATS: 5 per class)
    bins: int = 20  # S_pri's path has bins + 1 points
    acc_images: int = 64  # images per S_acc batch
    acc_runs: int = 10  # S_acc batches averaged
    acc_threshold: float | None = -85.0  # keep S_acc >= this (ATS: -85, for ~64-image batches); None: the median
    keep: int = 5  # policies reported as chosen
    always: bool = True  # score policies as the published code applies them (every sub-policy fires)
    workers: int = 0  # processes; 0 = one per core

    def __post_init__(self) -> None:
        if (
            min(self.candidates, self.slots, self.privacy_images, self.bins, self.acc_images, self.acc_runs, self.keep)
            < 1
            or self.workers < 0
        ):
            raise InputError("search: counts must be positive (workers >= 0)")
        if self.acc_images < 2:
            raise InputError("search: acc_images must be at least 2 (a correlation needs two Jacobians)")


def privacy_score(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, *, bins: int = 20
) -> torch.Tensor:
    """S_pri of each (already transformed) image: the area under the layer-averaged gradient cosine similarity on
    the path from ``noise`` to the image. Returns N values."""
    model.eval()
    n = len(x)
    alphas = torch.arange(bins + 1, dtype=x.dtype, device=x.device) / bins
    path = alphas.view(-1, 1, 1, 1, 1) * x[None] + (1 - alphas.view(-1, 1, 1, 1, 1)) * noise[None]
    with torch.no_grad():
        g_true = per_sample_gradients(model, x, y)
        sims = torch.zeros(bins + 1, n, dtype=torch.float64, device=x.device)
        for a in range(bins + 1):  # 21 batched passes, each over all images
            g = per_sample_gradients(model, path[a], y)
            for gt, ga in zip(g_true, g):
                sims[a] += F.cosine_similarity(ga.flatten(1), gt.flatten(1), dim=1, eps=1e-30).double()
        sims /= len(g_true)
    return (((sims[1:] + sims[:-1]) / 2).sum(0) / bins).cpu()


def accuracy_score(model: nn.Module, x: torch.Tensor, *, k: float = 1e-5) -> float:
    """S_acc of one batch at initialisation: ``-sum(log(v + k) + 1/(v + k))`` over the eigenvalues ``v`` of the
    correlation matrix of the inputs' Jacobians of the summed outputs."""
    model.eval()
    xr = x.detach().clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(model(xr).sum(), xr)
    j = jac.reshape(len(x), -1).double().cpu().numpy()
    corr = np.corrcoef(j)
    v = np.linalg.eigvalsh(np.nan_to_num(corr))
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def random_policies(n: int, slots: int, rng: RngLike = None) -> list[str]:
    """``n`` distinct random candidates: ``slots`` draws each, a sub-policy number or nothing (as the ATS generator,
    without its off-by-one)."""
    g = as_generator(rng)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        draw = g.integers(-1, len(SUB_POLICIES), slots)
        text = format_policy((tuple(int(d) for d in draw if d >= 0),)) if (draw >= 0).any() else "none"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _transformed(policy: str, x: torch.Tensor, always: bool, seed: int) -> torch.Tensor:
    sch = ATSPolicy(policy=policy, always=always)
    return sch.encode(x, sch.keygen(len(x), rng=seed, shape=tuple(x.shape[1:])))


def score_policy(
    policy: str,
    *,
    trained: nn.Module,
    init: nn.Module,
    privacy_x: torch.Tensor,
    privacy_y: torch.Tensor,
    noise: torch.Tensor,
    acc_batches: Sequence[torch.Tensor],
    bins: int = 20,
    always: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Both scores of one policy; the transformation draws are fixed by ``seed`` (the same for every policy). The
    policy transforms images on the CPU; the scores run on the models' device."""
    t0 = time.perf_counter()
    dev = model_device(trained)
    xt = _transformed(policy, privacy_x, always, seed).to(dev)
    s_pri = privacy_score(trained, xt, privacy_y.to(dev), noise.to(dev), bins=bins)
    s_acc = [
        accuracy_score(init, _transformed(policy, b, always, seed + 1 + i).to(dev)) for i, b in enumerate(acc_batches)
    ]
    return {
        "policy": policy,
        "s_pri": float(s_pri.mean()),
        "s_pri_std": float(s_pri.std()),
        "s_acc": float(np.mean(s_acc)),
        "seconds": time.perf_counter() - t0,
    }


_WORKER: dict[str, Any] = {}


def _worker_init(state: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    _WORKER.update(state)


def _worker_score(policy: str) -> dict[str, Any]:
    w = _WORKER
    return score_policy(
        policy,
        trained=w["trained"],
        init=w["init"],
        privacy_x=w["privacy_x"],
        privacy_y=w["privacy_y"],
        noise=w["noise"],
        acc_batches=w["acc_batches"],
        bins=w["bins"],
        always=w["always"],
        seed=w["seed"],
    )


def rank(
    results: Sequence[dict[str, Any]], *, threshold: float | None = None, keep: int = 5
) -> tuple[list[dict[str, Any]], float]:
    """Sort by S_pri (ascending); mark candidates with S_acc >= threshold (default: the median) as admissible and
    the first ``keep`` admissible ones as chosen."""
    if not results:
        raise InputError("search: no candidates to rank")
    thr = float(np.median([r["s_acc"] for r in results])) if threshold is None else float(threshold)
    table = sorted((dict(r) for r in results), key=lambda r: (r["s_pri"], -r["s_acc"]))
    chosen = 0
    for r in table:
        r["admissible"] = bool(r["s_acc"] >= thr)
        r["chosen"] = bool(r["admissible"] and chosen < keep)
        chosen += r["chosen"]
    return table, thr


def search(
    *,
    trained: nn.Module,
    init: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: SearchSettings | None = None,
    candidates: Sequence[str] | None = None,
    rng: RngLike = None,
    progress: bool | None = None,
    done: Sequence[dict[str, Any]] = (),
    on_result: Any = None,
    extra: Sequence[str] = (),
    device: DeviceLike = None,
) -> dict[str, Any]:
    """Score ``candidates`` (default: ``settings.candidates`` random ones) and ``extra`` policies (for reference,
    e.g. the paper's), and rank them all.

    ``trained``: the briefly trained model (S_pri); ``init``: the same architecture at initialisation (S_acc); both
    take [0, 1] images. ``images``/``labels``: a pool of held-out images the scores are computed on. ``done``:
    results of an interrupted search, not recomputed; ``on_result`` is called with each new result (to save it).
    ``device``: where the scores run; on a GPU the candidates are scored one after another in this process.
    """
    s = settings or SearchSettings()
    dev = resolve_device(device)
    require_float64(dev, "search")  # S_pri sums cosine similarities in float64
    # copies on the device where the models are elsewhere: the caller's models stay where they are
    trained, init = (m if same_device(model_device(m), dev) else copy.deepcopy(m).to(dev) for m in (trained, init))
    # two streams: the scoring material (images, noise, draws) does not depend on how the candidates came, so a
    # policy scores the same in every search with the same seed, pool and models
    g, g_candidates = spawn(rng, 2)
    if len(images) < max(s.privacy_images, s.acc_images):
        raise InputError(f"search: needs at least {max(s.privacy_images, s.acc_images)} images, got {len(images)}")
    pol = list(candidates) if candidates is not None else random_policies(s.candidates, s.slots, g_candidates)
    if extra:
        pol += [p for p in extra if p not in pol]
    for p in pol:
        parse_policy(p)
    pick = g.permutation(len(images))
    px, py = images[pick[: s.privacy_images]], torch.as_tensor(labels)[pick[: s.privacy_images]].long()
    noise = torch.from_numpy(g.random(tuple(px.shape))).float()
    acc_batches = [images[g.choice(len(images), s.acc_images, replace=False)] for _ in range(s.acc_runs)]
    seed = int(g.integers(0, 2**31))
    state = {
        "trained": trained,
        "init": init,
        "privacy_x": px,
        "privacy_y": py,
        "noise": noise,
        "acc_batches": acc_batches,
        "bins": s.bins,
        "always": s.always,
        "seed": seed,
    }
    finished = {r["policy"]: r for r in done}
    todo = [p for p in pol if p not in finished]
    results = [finished[p] for p in pol if p in finished]
    workers = (s.workers or (os.cpu_count() or 1)) if dev.type == "cpu" else 1
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        pb = stack.enter_context(
            bar(total=len(todo), desc="search", unit="policy", disable=None if progress is None else not progress)
        )
        if workers <= 1 or len(todo) <= 1:
            _WORKER.update(state)  # in this process: keep its thread settings
            stack.callback(_WORKER.clear)
            scored: Iterable[dict[str, Any]] = map(_worker_score, todo)
        else:
            import multiprocessing as mp

            pool = stack.enter_context(
                mp.get_context("fork").Pool(min(workers, len(todo)), initializer=_worker_init, initargs=(state,))
            )
            scored = pool.imap_unordered(_worker_score, todo)
        for r in scored:
            results.append(r)
            if on_result:
                on_result(r)
            pb.update(1)
    table, thr = rank(results, threshold=s.acc_threshold, keep=s.keep)
    return {
        "table": table,
        "threshold": thr,
        "chosen": [r["policy"] for r in table if r["chosen"]],
        "settings": asdict(s),
        "seconds": time.perf_counter() - t0,
        "workers": workers,
    }
