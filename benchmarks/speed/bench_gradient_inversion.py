"""Speed of gradient inversion on this CPU: attack iterations per second, vectorised vs one problem at a time.

The cost of Inverting Gradients is double backpropagation. The reference is the textbook loop: one image (one
client update) at a time, ``torch.autograd.grad(..., create_graph=True)`` for the trial gradient, then the image
gradient of the cosine loss. Ours optimises P problems (images × restarts) in one pass with ``torch.func.vmap`` over
``torch.func.grad``. Both run the same signed-Adam step; the ratio is image-iterations per second, ours / loop,
measured in the same run.

    python benchmarks/speed/bench_gradient_inversion.py [--models resnet20,convnet16] [--problems 8] [--iterations 20]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from masquerade.ats.inversion import CIFAR10_MEAN, CIFAR10_STD, InvertingGradients, client_gradient, total_variation
from masquerade.models import Normalized, create_model


def loop_reference(model: torch.nn.Module, grads: list[list[torch.Tensor]], labels: torch.Tensor,
                   iterations: int) -> float:
    """Seconds for ``iterations`` signed-Adam steps on each problem, one problem after another."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    params = [p for p in model.parameters()]
    t0 = time.perf_counter()
    for i, target in enumerate(grads):
        z = torch.randn(1, 3, 32, 32, requires_grad=True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(iterations):
            x = z * std + mean
            trial = torch.autograd.grad(F.cross_entropy(model(x), labels[i:i + 1]), params, create_graph=True)
            dot = sum((a * b).sum() for a, b in zip(trial, target))
            na = sum(a.pow(2).sum() for a in trial)
            nb = sum(b.pow(2).sum() for b in target)
            loss = 1 - dot / (na.sqrt() * nb.sqrt()) + 1e-4 * total_variation(z)
            (g,) = torch.autograd.grad(loss, z)
            z.grad = g.sign()
            opt.step()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,convnet16")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    print(f"{torch.get_num_threads()} threads; {args.problems} problems (batch 1 each), {args.iterations} iterations")
    print(f"{'model':10s} {'params':>9s} {'loop it/s':>10s} {'ours it/s':>10s} {'ratio':>6s}")
    for arch in args.models.split(","):
        torch.manual_seed(0)
        model = Normalized(create_model(arch), CIFAR10_MEAN, CIFAR10_STD).eval()
        x = torch.rand(args.problems, 3, 32, 32)
        y = torch.randint(0, 10, (args.problems,))
        per = [client_gradient(model, x[i:i + 1], y[i:i + 1]) for i in range(args.problems)]
        stacked = [torch.stack(t) for t in zip(*per)]
        loop_reference(model, per[:1], y, 2)                      # warm-up
        t_loop = loop_reference(model, per, y, args.iterations)
        atk = InvertingGradients(iterations=args.iterations, chunk=args.problems)
        atk.run_many(model=model, gradients=[g[:1] for g in stacked], labels=y[:1, None], rng=0,   # warm-up
                     progress=False)
        t0 = time.perf_counter()
        atk.run_many(model=model, gradients=stacked, labels=y[:, None], rng=0, progress=False)
        t_ours = time.perf_counter() - t0
        n_it = args.problems * args.iterations
        row = {"model": arch, "params": sum(p.numel() for p in model.parameters()),
               "loop_it_per_s": n_it / t_loop, "ours_it_per_s": n_it / t_ours, "ratio": t_loop / t_ours}
        rows.append(row)
        print(f"{arch:10s} {row['params']:9d} {row['loop_it_per_s']:10.1f} {row['ours_it_per_s']:10.1f} "
              f"{row['ratio']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
