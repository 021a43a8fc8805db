"""Training a classifier on protected data (utility), with the scheme applied on the fly.

Each epoch draws a fresh key (a one-time key for InstaHide), protects the augmented training images with it and
trains on the result with soft-label cross-entropy and SGD with momentum and weight decay; the model is evaluated on
the clean test set (as the official InstaHide code does) and, optionally, in the paper's inference mode: the softmax
averaged over ``T`` encodings of each test image.

Checkpoints are written atomically after every epoch. With an integer seed, every epoch's randomness is derived from
(seed, epoch), so ``resume`` continues an interrupted run to the same result; without a seed, keys come from the OS
CSPRNG and a resumed run simply draws fresh ones (no key material is ever stored in a checkpoint).

``device``: the model trains there (:mod:`masquerade.devices`); each epoch's protected images are made on the CPU
(the schemes' kernels) and cross to the device once, and the returned model is back on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from masquerade import distributed
from masquerade.contracts import clean_view_of, label_mixer, one_time_keys
from masquerade.data import ImageSet
from masquerade.devices import DeviceLike, model_device, resolve_device
from masquerade.errors import InputError
from masquerade.fileio import atomic_path
from masquerade.models import Normalized, create_model, save_model
from masquerade.progress import bar
from masquerade.registry import Scheme, create_scheme

__all__ = ["TrainSettings", "TrainingView", "train", "augment", "accuracy", "bf16_supported"]


@dataclass(frozen=True)
class TrainSettings:
    model: str = "fastresnet"
    epochs: int = 15
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "onecycle": linear warm-up then linear decay; "step": /10 at 50 % and 75 %
    warmup: float = 0.2
    augment: bool = True  # random crop (4-pixel padding) and horizontal flip, before protection
    precision: str = "auto"  # "bf16", "fp32", or "auto" (bf16 where the CPU has native bf16)
    infer_encodings: int = 0  # the paper's inference mode: average over T encodings (0 = off)
    eval_batch: int = 1000

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.eval_batch < 1:
            raise InputError("train: epochs, batch_size, eval_batch and lr must be positive")
        if self.schedule not in ("onecycle", "step"):
            raise InputError(f"train: schedule must be 'onecycle' or 'step', got {self.schedule!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"train: precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not 0 <= self.warmup < 1 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise InputError("train: warmup in [0, 1), weight_decay >= 0, momentum in [0, 1)")
        if self.infer_encodings < 0:
            raise InputError("train: infer_encodings must be >= 0")


def bf16_supported(device: torch.device | None = None) -> bool:
    """True where ``device`` (default the CPU) computes bf16 natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU
    with bf16), so autocast pays off."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8  # native bf16 from Ampere on, not emulated
    if device is not None and device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def augment(x: torch.Tensor, gen: np.random.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops from a zero-padded copy and random horizontal flips, for a whole batch at once."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.from_numpy(gen.integers(0, 2 * pad + 1, n))
    ox = torch.from_numpy(gen.integers(0, 2 * pad + 1, n))
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    flip = torch.from_numpy(gen.random(n) < 0.5)
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


class TrainingView:
    """How protected and clean images are presented to the model (the scheme's own scale, or standardisation)."""

    def __init__(self, scheme: Scheme, train_x: torch.Tensor) -> None:
        """``train_x``: the training images as the model will see them before standardisation."""
        self.own = clean_view_of(scheme)
        mean = train_x.mean(dim=(0, 2, 3))
        std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self.mean, self.std = mean[None, :, None, None], std[None, :, None, None]

    def encoded(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.own else (z - self.mean) / self.std

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        return self.own(x) if self.own else (x - self.mean) / self.std


def _soft_targets(scheme: Scheme, labels: np.ndarray, key: Any, num_classes: int) -> torch.Tensor:
    mix = label_mixer(scheme)
    if mix is not None:
        return mix(labels, key, num_classes)
    return F.one_hot(torch.from_numpy(labels), num_classes).float()


def _lr_at(step: int, total: int, s: TrainSettings) -> float:
    frac = step / max(1, total)
    if s.schedule == "step":
        return s.lr * (0.1 if frac >= 0.5 else 1.0) * (0.1 if frac >= 0.75 else 1.0)
    if frac < s.warmup:
        return s.lr * frac / s.warmup
    return s.lr * max(0.0, (1 - frac) / (1 - s.warmup))


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int = 1000, bf16: bool = False
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the softmax probabilities (on the CPU) of ``model`` on ready inputs ``x``; batches go to
    the model's device."""
    model.eval()
    dev = model_device(model)
    probs = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            probs.append(model(xb).float().softmax(dim=1).cpu())
    p = torch.cat(probs) if probs else torch.zeros(0, 1)
    acc = float((p.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return acc, p


def _scheme_id(sch: Scheme) -> str:
    return f"{sch.name}:{sch.settings!r}"


def _epoch_rng(seed: int | None, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch]) if seed is not None else distributed.shared_secure_rng()


def train(
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    scheme: Scheme | str = "identity",
    public: ImageSet | None = None,
    settings: TrainSettings | None = None,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
    snapshots: Sequence[int] = (),
    snapshot_dir: str | Path | None = None,
    device: DeviceLike = None,
) -> dict[str, Any]:
    """Train ``settings.model`` on ``train_set`` protected by ``scheme``; returns history and final accuracies.

    ``snapshots``: epochs after which the model is written to ``snapshot_dir/model-epoch{E}.safetensors`` (a model
    file that takes [0, 1] images: see :func:`masquerade.models.load_model`), for attacks at several stages of
    training. ``result["classifier"]`` is the final model in that form.
    """
    s = settings or TrainSettings()
    if snapshots and snapshot_dir is None:
        raise InputError("train: snapshots need a snapshot_dir")
    if any(not 1 <= e <= s.epochs for e in snapshots):
        raise InputError(f"train: snapshot epochs must lie in 1..epochs, got {list(snapshots)}")
    sch: Scheme = create_scheme(scheme) if isinstance(scheme, str) else scheme
    dev = distributed.local_device(resolve_device(device))
    if train_set.labels is None or test_set.labels is None:
        raise InputError("train: the training and test sets need labels")
    if train_set.image_shape != test_set.image_shape:
        raise InputError(f"train: train images are {train_set.image_shape}, test images {test_set.image_shape}")
    num_classes = max(train_set.num_classes, test_set.num_classes)
    h, w, c = train_set.image_shape
    x_train, y_train = train_set.to_tensor(), train_set.labels
    x_test, y_test = test_set.to_tensor(), test_set.labels_tensor()
    pub = public.to_rgb().to_tensor() if public is not None and c == 3 else (public.to_tensor() if public else None)
    pool = 0 if pub is None else len(pub)
    fixed_key, view, x_eval = _keys_and_views(sch, x_train, x_test, pub, seed=seed, resume=resume)
    if snapshots and view.own:
        raise InputError(
            f"train: {sch.name} feeds the model its own input scale; snapshots are models of [0, 1] "
            "images, so they are not available for it"
        )
    bf16 = s.precision == "bf16" or (s.precision == "auto" and bf16_supported(dev))
    # torch initialises weights from its global generator: seed it inside fork_rng so the caller's state is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed if seed is not None else int(distributed.shared_secure_rng().integers(0, 2**62)))
        model = create_model(s.model, num_classes=num_classes, in_channels=c)
        if distributed.world()[1] > 1:  # under torchrun: batch statistics over every process's rows
            model = distributed.convert_sync_batchnorm(model)
        # Module.to accepts memory_format (as documented); torch's overload stubs leave it out
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = model.to(dev)  # initialised on the CPU: the same weights on every device
    opt = _optimizer(model, s)
    steps_per_epoch = math.ceil(len(x_train) / s.batch_size)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume:
        history, start_epoch = _resume(ckpt, model, opt, s, seed, sch)
    net = distributed.wrap(model)  # DistributedDataParallel when there is a process group
    rank, world_size = distributed.world()
    writer = rank == 0  # only one process writes checkpoints and snapshots
    t_start = time.perf_counter() - sum(h_["seconds"] for h_ in history)
    for epoch in range(start_epoch, s.epochs):
        t0 = time.perf_counter()
        gen = _epoch_rng(seed, epoch)
        x = augment(x_train, gen) if s.augment else x_train
        key = fixed_key if fixed_key is not None else sch.keygen(len(x), rng=gen, shape=(c, h, w), pool_size=pool)
        # protected on the CPU (the schemes' kernels), then on the model's device for the whole epoch
        inputs = view.encoded(sch.encode(x, key, public=pub, rng=gen)).to(dev)
        targets = _soft_targets(sch, y_train, key, num_classes).to(dev)
        del x
        order = torch.from_numpy(gen.permutation(len(inputs)))
        model.train()
        total_loss = _epoch(
            net, opt, inputs, targets, order.to(dev), epoch, s, bf16=bf16, world_size=world_size, progress=progress
        )
        del inputs, targets
        acc, _ = accuracy(model, x_eval, y_test, batch=s.eval_batch, bf16=bf16)
        record = {
            "epoch": epoch + 1,
            "train_loss": distributed.mean_over_world(total_loss / steps_per_epoch),
            "test_acc": acc,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if ckpt is not None and writer:
            _checkpoint(ckpt, model, opt, epoch, history, s, seed, sch)
        if epoch + 1 in snapshots and writer:
            save_model(
                Path(snapshot_dir) / f"model-epoch{epoch + 1}.safetensors",  # type: ignore[arg-type]
                model,
                arch=s.model,
                num_classes=num_classes,
                mean=view.mean,
                std=view.std,
                in_channels=c,
                info={"epoch": epoch + 1, "scheme": _scheme_id(sch), "test_acc": acc},
                image_size=x_train.shape[-2:],
            )
        if on_epoch is not None:
            on_epoch(record)
    result: dict[str, Any] = {
        "history": history,
        "test_acc": history[-1]["test_acc"] if history else float("nan"),
        "seconds": time.perf_counter() - t_start,
        "bf16": bf16,
        "model": s.model,
        "train_images": len(x_train),
        "test_images": len(x_test),
    }
    result["tested_on"] = "clean images" if fixed_key is None else "images disguised with the dataset key"
    if s.infer_encodings and fixed_key is None:
        result["test_acc_encoded"] = _encoded_inference(model, sch, view, x_test, y_test, pub, s, seed, bf16)
    model = model.to("cpu")  # results come back to the CPU
    result["model_state"] = model
    result["device"] = str(dev)
    # the model as a function of [0, 1] images (schemes with their own input scale have no such form)
    result["classifier"] = (
        None if view.own else Normalized(model, view.mean, view.std, image_size=x_train.shape[-2:]).eval()
    )
    return result


def _keys_and_views(
    sch: Scheme,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    pub: torch.Tensor | None,
    *,
    seed: int | None,
    resume: bool,
) -> tuple[Any, TrainingView, torch.Tensor]:
    """(the dataset key or None, the training view, the test inputs). Schemes with one-time keys get a fresh key
    every epoch and are tested on clean images (as InstaHide's code); dataset-key schemes (DisguisedNets) use one
    key for the training set, extended to the test set, and are tested on the disguised test images."""
    if one_time_keys(sch):
        view = TrainingView(sch, x_train)
        return None, view, view.clean(x_test)
    if resume and seed is None:
        raise InputError(
            f"train: {sch.name} trains on one dataset key, and this run drew it from OS randomness, "
            f"which no checkpoint stores; it cannot be resumed (start runs with --seed to resume them)"
        )
    shape = tuple(x_train.shape[1:])
    pool = 0 if pub is None else len(pub)
    g_key = np.random.default_rng([seed, 2**32]) if seed is not None else distributed.shared_secure_rng()
    fixed_key = sch.keygen(len(x_train), rng=g_key, shape=shape, pool_size=pool)
    test_key = sch.keygen(len(x_test), rng=g_key, shape=shape, pool_size=pool, base=fixed_key)
    view = TrainingView(sch, sch.encode(x_train, fixed_key, public=pub, rng=g_key))
    return fixed_key, view, view.encoded(sch.encode(x_test, test_key, public=pub, rng=g_key))


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on the weights, none on biases and normalisation parameters."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for prm in model.parameters():
        (no_decay if prm.ndim <= 1 else decay).append(prm)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=s.lr,
        momentum=s.momentum,
        nesterov=True,
    )


def _resume(
    ckpt: Path | None,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    s: TrainSettings,
    seed: int | None,
    sch: Scheme,
) -> tuple[list[dict[str, Any]], int]:
    """Load a checkpoint made with the same settings, seed and scheme into ``model`` and ``opt``; returns the
    history so far and the epoch to continue from."""
    if ckpt is None or not ckpt.is_file():
        raise InputError(f"train: nothing to resume (no checkpoint at {ckpt})")
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    if state["settings"] != dataclasses.asdict(s) or state["seed"] != seed or state["scheme"] != _scheme_id(sch):
        raise InputError(f"{ckpt}: the checkpoint was made with other settings, seed or scheme; cannot resume")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return list(state["history"]), int(state["epoch"]) + 1


def _checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, Any]],
    s: TrainSettings,
    seed: int | None,
    sch: Scheme,
) -> None:
    """Everything :func:`_resume` needs, written atomically (a kill leaves the previous checkpoint)."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "history": history,
        "settings": dataclasses.asdict(s),
        "seed": seed,
        "scheme": _scheme_id(sch),
    }
    with atomic_path(ckpt) as tmp:
        torch.save(state, tmp)


def _epoch(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    epoch: int,
    s: TrainSettings,
    *,
    bf16: bool,
    world_size: int,
    progress: bool | None,
) -> float:
    """One epoch of minibatch steps over ``inputs`` in ``order`` (soft-target cross-entropy, the learning rate of
    each step from the schedule); returns the summed loss."""
    steps_per_epoch = math.ceil(len(inputs) / s.batch_size)
    total_steps = steps_per_epoch * s.epochs
    total_loss = 0.0
    with bar(
        total=steps_per_epoch,
        desc=f"epoch {epoch + 1}/{s.epochs}",
        unit="batch",
        disable=None if progress is None else not progress,
    ) as pb:
        for b in range(steps_per_epoch):
            idx = order[b * s.batch_size : (b + 1) * s.batch_size]
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + b, total_steps, s)
            mine, factor = distributed.shard(idx)  # all the batch, in one process
            xb = inputs[mine].contiguous(memory_format=torch.channels_last)
            with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(xb)
            per_row = torch.sum(-targets[mine] * F.log_softmax(logits.float(), dim=1), dim=1)
            # the processes' averaged gradient is the global batch's mean loss's
            loss = per_row.mean() if world_size == 1 else per_row.sum() * factor
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach())
            pb.update(1)
    return total_loss


def _encoded_inference(
    model: torch.nn.Module,
    sch: Scheme,
    view: TrainingView,
    x: torch.Tensor,
    y: torch.Tensor,
    pub: torch.Tensor | None,
    s: TrainSettings,
    seed: int | None,
    bf16: bool,
) -> float:
    """The paper's inference mode: average the softmax over T fresh encodings of every test image."""
    c, h, w = x.shape[1:]
    total = torch.zeros(len(x), int(y.max()) + 1 if len(y) else 1)
    for t in range(s.infer_encodings):
        gen = _epoch_rng(None if seed is None else seed + 1_000_003, t)
        key = sch.keygen(len(x), rng=gen, shape=(c, h, w), pool_size=0 if pub is None else len(pub))
        _, p = accuracy(model, view.encoded(sch.encode(x, key, public=pub)), y, batch=s.eval_batch, bf16=bf16)
        total[:, : p.shape[1]] += p
    return float((total.argmax(1) == y).float().mean())


def __getattr__(name: str) -> Any:
    # ``evaluate`` shared its name with the evaluate workflow; it is ``accuracy`` now, the old name kept a release
    if name == "evaluate":
        return accuracy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
