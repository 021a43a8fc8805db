"""Data-parallel training across processes (``torchrun``), with the single-process run's mathematics.

Every process draws the same keys from the same seed and walks the same batch order; process r takes rows
r, r+W, r+2W, ... of each global batch, and its loss is scaled so that DistributedDataParallel's average of the
processes' gradients is the gradient of the global batch's mean loss. Batch normalisation pools its statistics over
all processes (:class:`CPUSyncBatchNorm`: torch's ``SyncBatchNorm`` runs on GPUs only), so a step sees the batch
statistics a single process would. What differs from one process is the order of floating-point sums.

``masquerade train`` joins the process group that ``torchrun`` describes (gloo for CPU tensors, and NCCL for CUDA
tensors where CUDA is available: on ``--device cuda`` process r trains on GPU ``LOCAL_RANK``); only rank 0 writes
the run folder.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "world",
    "init_from_env",
    "shutdown",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "shard",
    "wrap",
    "shared_secure_rng",
    "mean_over_world",
    "local_device",
]


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment); False when there is
    none. CPU tensors (keys, losses) go through gloo, CUDA tensors (gradients on a GPU) through NCCL where CUDA is
    available."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
    return True


def local_device(device: torch.device) -> torch.device:
    """The device this process trains on: ``device`` itself, except that under torchrun a CUDA device means this
    process's own GPU (``cuda:LOCAL_RANK``), one per process."""
    if device.type != "cuda" or world()[1] == 1:
        return device
    index = int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        from masquerade.errors import InputError

        raise InputError(
            f"process {world()[0]} (LOCAL_RANK {index}) has no GPU of its own: this machine has "
            f"{torch.cuda.device_count()}; start at most that many processes per node"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group, after every process has arrived when ``wait`` (tearing down while a peer still
    talks aborts it); a process that failed leaves at once (``wait=False``) rather than wait for peers that may be
    waiting for it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def shared_secure_rng() -> Any:
    """A generator keyed from the operating system's CSPRNG, the same in every process: rank 0 draws the key and
    sends it to the others (the processes must draw the same one-time keys). Never stored, never reproducible."""
    import secrets

    import numpy as np

    from masquerade.rng import secure_rng

    if world()[1] == 1:
        return secure_rng()
    import torch.distributed as dist

    words = torch.zeros(6, dtype=torch.int64)
    if world()[0] == 0:
        words = torch.from_numpy(np.frombuffer(secrets.token_bytes(48), dtype=np.int64).copy())
    dist.broadcast(words, src=0)
    raw = words.numpy().view(np.uint64)
    return np.random.Generator(np.random.Philox(key=raw[:2].copy(), counter=raw[2:].copy()))


def mean_over_world(value: float) -> float:
    """The mean of a number over every process (itself outside a process group)."""
    if world()[1] == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0]) / world()[1]


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are the mean and variance over every process's part of the batch
    (sums all-reduced, differentiably); evaluation uses the running statistics as usual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # two small differentiable all-reduces, summed in float64: the global mean first, then the squared
        # deviations from it (no E[x²] - E[x]² cancellation), as accurate as a single process's statistics
        c = x.shape[1]
        first = all_reduce(
            torch.cat(
                [
                    x.sum((0, 2, 3), dtype=torch.float64),
                    torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device),
                ]
            )
        )
        n = first[-1]
        mean = (first[:c] / n).to(x.dtype)
        dev = x - mean[None, :, None, None]
        var = (all_reduce((dev * dev).sum((0, 2, 3), dtype=torch.float64)) / n).to(x.dtype)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        y = dev * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a :class:`CPUSyncBatchNorm` with the same parameters and buffers."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        new = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        module._modules[name] = convert_sync_batchnorm(child)
    return module


def shard(idx: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This process's rows of a global batch, and the factor that makes the processes' averaged gradient the
    global batch's mean: ``factor * sum(losses of my rows)``. A batch smaller than the world is computed whole by
    every process (each then weighs it by 1 / rows)."""
    rank, size = world()
    if size == 1 or len(idx) < size:
        return idx, 1.0 / max(1, len(idx))
    return idx[rank::size], size / len(idx)


def wrap(model: nn.Module) -> Any:
    """The model to train in this process: itself, or DistributedDataParallel over it when there is a process
    group (convert its batch normalisation first, before an optimiser holds its parameters)."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    from masquerade.devices import model_device

    dev = model_device(model)
    ids = [dev.index] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
