"""Model inversion from deep features, as ShuffleBits (Ni, Huttunen, Rahtu, 2021) evaluates it.

Threat model: the adversary holds feature vectors of victims' images (``encodings``: plaintext features, or what it
made of ciphertexts), auxiliary labelled images of the same kind (``auxiliary``), and a black-box inference API
(``api``: :class:`FeatureAPI`, images in, feature vectors out, no gradients). It queries the API on its auxiliary
images to get (image, feature) pairs of its own and trains:

- ``feature-attribute``: a classifier feature -> attribute (here the image class), applied to the victims' features;
- ``feature-inversion`` with ``loss="pixel"``: a decoder feature -> image trained with a pixel (MSE) loss;
- ``feature-inversion`` with ``loss="feature"``: the same decoder trained with the pixel loss plus the
  feature-reconstruction loss ||API(decoder(f)) - f||². A black-box API has no gradients, so the loss goes through a
  surrogate distilled from API queries on the auxiliary images (the adversary's own copy of the API), and the
  result is judged through the real API.

``representation="float"`` reads the inputs as float features (non-finite values, which ciphertexts are full of, are
set to 0 and the rest clipped to the auxiliary range: what a naive adversary feeding ciphertexts does);
``"popcount"`` reads only the number of set bits of every number -- all that per-element bit shuffling leaves.
The paper's metric is the cosine distance between the API features of the original and of its reconstruction
(:func:`cosine_distance`).

``device`` (of ``run``): where the adversary's own networks train; the API answers where it runs, and the results
come back to the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.devices import DeviceLike, resolve_device
from masquerade.errors import InputError
from masquerade.progress import bar
from masquerade.rng import RngLike, as_generator

__all__ = ["FeatureAPI", "Decoder", "FeatureAttribute", "FeatureInversion", "cosine_distance", "represent", "popcount"]

REPRESENTATIONS = ("float", "popcount")


class FeatureAPI:
    """A black-box inference API: ``predict(images)`` returns feature vectors (float32 N × D), nothing else.

    ``extractor`` maps float32 N×C×H×W images in [0, 1] to N × D features (the service's model, preprocessing
    included). ``queries`` counts the images sent through it.
    """

    def __init__(self, extractor: Callable[[torch.Tensor], torch.Tensor], *, batch: int = 500) -> None:
        self._extractor = extractor
        self.batch = batch
        self.queries = 0

    @classmethod
    def from_model(cls, model: nn.Module, *, batch: int = 500) -> "FeatureAPI":
        """The API of a classifier service that returns its penultimate features: the input of the model's last
        linear layer (for the models here, the pooled activations before the classifier)."""
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise InputError("FeatureAPI.from_model: the model has no linear layer to take features before")
        last = linear[-1]

        def extract(x: torch.Tensor) -> torch.Tensor:
            got: list[torch.Tensor] = []
            handle = last.register_forward_hook(lambda _m, inp, _out: got.append(inp[0]))
            try:
                model(x)
            finally:
                handle.remove()
            return got[0]

        return cls(extract, batch=batch)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InputError("FeatureAPI.predict: expected images as a float32 N×C×H×W tensor")
        if isinstance(self._extractor, nn.Module):
            self._extractor.eval()
        out = [
            self._extractor(images[i : i + self.batch]).float().reshape(len(images[i : i + self.batch]), -1)
            for i in range(0, len(images), self.batch)
        ]
        self.queries += len(images)
        return torch.cat(out) if out else torch.zeros(0, 0)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of every 32-bit word (float32 features read as their bit patterns): what any permutation of the bits
    leaves, and so all that one-time bit shuffles (ShuffleBits per vector or per number) leave an adversary."""
    w = np.asarray(words).view(np.uint32)
    return np.unpackbits(w.view(np.uint8).reshape(w.shape + (4,)), axis=-1).sum(-1)


def represent(features: Any, how: str, *, reference: torch.Tensor | None = None) -> torch.Tensor:
    """What the adversary feeds its models: float features (made finite and clipped to the ``reference`` range)
    or the popcount of every number."""
    if how not in REPRESENTATIONS:
        raise InputError(f"representation must be one of {REPRESENTATIONS}, got {how!r}")
    a = features.detach().cpu().contiguous().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if a.dtype != np.float32:
        raise InputError(f"expected float32 features, got {a.dtype}")
    a = a.reshape(len(a), -1)
    if how == "popcount":
        return torch.from_numpy(popcount(a).astype(np.float32))
    with np.errstate(invalid="ignore"):  # signalling NaN patterns warn when widened
        out = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # a copy: the input is untouched
    if reference is not None and len(reference):
        ref = reference.detach().double().numpy()
        out = np.clip(out, ref.min(0), ref.max(0))
    return torch.from_numpy(out.astype(np.float32))


class _Standardise(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Decoder(nn.Module):
    """Feature vector -> image: a linear map to ⌈size/8⌉² × width, three ×2 upsampling conv stages, a sigmoid;
    a size that 8 does not divide (28 for digits) is cut from the middle of the next multiple of 8."""

    def __init__(self, dim: int, out_channels: int = 3, size: int = 32, width: int = 128) -> None:
        super().__init__()
        if size < 1:
            raise InputError(f"Decoder: the image size must be positive, got {size}")
        self.start = -(-size // 8)
        self.size = size
        self.width = width
        self.fc = nn.Sequential(
            nn.Linear(dim, width * self.start**2), nn.BatchNorm1d(width * self.start**2), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        c = width
        for _ in range(3):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c // 2, 3, padding=1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        layers += [nn.Conv2d(c, out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.fc(f).reshape(len(f), self.width, self.start, self.start)
        out = self.body(x)
        lo = (out.shape[-1] - self.size) // 2
        return torch.sigmoid(out[..., lo : lo + self.size, lo : lo + self.size])


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a_i, b_i) per row (the ShuffleBits paper's reconstruction metric, on API features)."""
    return 1 - F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)


def _aux(auxiliary: Any, where: str, labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hasattr(auxiliary, "to_tensor"):
        x = auxiliary.to_tensor()
        y = auxiliary.labels_tensor() if auxiliary.labels is not None else None
    elif isinstance(auxiliary, tuple) and len(auxiliary) == 2:
        x, y = auxiliary
        y = torch.as_tensor(y) if y is not None else None
    else:
        x, y = auxiliary, None
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"{where}: auxiliary is an ImageSet, an images tensor, or (images, labels)")
    if labels and y is None:
        raise InputError(f"{where}: needs labelled auxiliary images")
    return x, y


def _adversary_inputs(
    name: str, encodings: Any, auxiliary: Any, api: FeatureAPI, representation: str, labels: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the adversary trains and attacks with: its auxiliary images (and labels), their API features, and both
    those and the victims' features in the chosen representation."""
    x_aux, y_aux = _aux(auxiliary, name, labels=labels)
    f_aux = api.predict(x_aux)
    width = tuple(getattr(encodings, "shape", ()))[1:]
    if width != tuple(f_aux.shape[1:]):
        got = "×".join(map(str, width)) or "no"
        raise InputError(
            f"{name}: the victims' feature vectors have {got} numbers, the API's {f_aux.shape[1]}: "
            "they are not this API's features"
        )
    a = represent(f_aux, representation, reference=f_aux)
    v = represent(encodings, representation, reference=f_aux)
    return x_aux, y_aux, f_aux, a, v


def _torch_seed(gen: np.random.Generator) -> int:
    return int(gen.integers(0, 2**62))


def _positive(where: str, **values: float) -> None:
    bad = sorted(k for k, v in values.items() if not v > 0)
    if bad:
        raise InputError(f"{where}: {', '.join(bad)} must be positive")


class FeatureAttribute(Configurable):
    """Train a classifier on the API features of labelled auxiliary images; predict the victims' attribute.

    ``rng`` (of ``run``): the classifier's initialisation and batch order (0 when not given)."""

    @dataclass(frozen=True)
    class Settings:
        representation: str = "float"
        hidden: int = 256
        epochs: int = 30
        lr: float = 1e-3
        batch: int = 256

        def __post_init__(self) -> None:
            if self.representation not in REPRESENTATIONS:
                raise InputError(f"feature-attribute: representation must be one of {REPRESENTATIONS}")
            _positive("feature-attribute", hidden=self.hidden, epochs=self.epochs, lr=self.lr, batch=self.batch)

    name = "feature-attribute"
    data_kind = "features"  # its encodings are feature vectors
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY, Knowledge.API}))
    uses_device = True

    def run(
        self,
        *,
        encodings: Any,
        auxiliary: Any,
        api: FeatureAPI,
        rng: RngLike = None,
        progress: bool | None = None,
        device: DeviceLike = None,
    ) -> AttackResult:
        t = time.perf_counter()
        s = self.settings
        dev = resolve_device(device)
        _, y_aux, _, a, v = _adversary_inputs(self.name, encodings, auxiliary, api, s.representation, True)
        assert y_aux is not None
        gen = as_generator(0 if rng is None else rng)
        classes = int(y_aux.max()) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(gen))
            model = nn.Sequential(
                _Standardise(a),
                nn.Linear(a.shape[1], s.hidden),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.Linear(s.hidden, classes),
            )
        # initialised on the CPU (the same weights on every device), then trained on the device
        model, a, v, y_aux = model.to(dev), a.to(dev), v.to(dev), y_aux.to(dev)
        _fit(
            model,
            len(a),
            lambda idx: F.cross_entropy(model(a[idx]), y_aux[idx].long()),
            epochs=s.epochs,
            batch=s.batch,
            lr=s.lr,
            gen=gen,
            desc=self.name,
            progress=progress,
            weight_decay=1e-4,
            one_cycle=False,
        )
        model.eval()
        with torch.no_grad():
            pred = model(v).argmax(1).cpu()
        return AttackResult(
            self.name,
            recovered={"attributes": pred, "classifier": model.cpu()},
            metrics={"auxiliary_images": len(a), "api_queries": api.queries},
            seconds=time.perf_counter() - t,
        )


class FeatureInversion(Configurable):
    """Train a decoder feature -> image on API queries of auxiliary images; decode the victims' features.

    ``loss="pixel"``: MSE to the image. ``loss="feature"``: MSE plus ``feature_weight`` times the normalised feature
    reconstruction error through a surrogate of the API (distilled for ``surrogate_epochs`` from API queries).
    ``rng`` (of ``run``): initialisations and batch order (0 when not given)."""

    @dataclass(frozen=True)
    class Settings:
        loss: str = "pixel"
        representation: str = "float"
        epochs: int = 20
        lr: float = 2e-3
        batch: int = 128
        feature_weight: float = 0.1
        surrogate_epochs: int = 8
        surrogate: Callable[[], nn.Module] | None = None  # builds the surrogate network (default: fastresnet trunk)
        recover_key: bool = False  # ciphertexts under one fixed ShuffleBits key: recover the bit order first

        def __post_init__(self) -> None:
            if self.loss not in ("pixel", "feature"):
                raise InputError(f"feature-inversion: loss must be 'pixel' or 'feature', got {self.loss!r}")
            if self.representation not in REPRESENTATIONS:
                raise InputError(f"feature-inversion: representation must be one of {REPRESENTATIONS}")
            _positive(
                "feature-inversion",
                epochs=self.epochs,
                lr=self.lr,
                batch=self.batch,
                surrogate_epochs=self.surrogate_epochs,
            )

    name = "feature-inversion"
    data_kind = "features"  # its encodings are feature vectors
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY, Knowledge.API}))
    uses_device = True

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """Features in the clear (identity) as floats; ShuffleBits under one fixed key after recovering the bit
        order from the ciphertexts; one-time keys (vector, element) through the popcount, all they leave."""
        name = getattr(scheme, "name", None)
        if name == "identity":
            return {"representation": "float"}
        if name != "shufflebits":
            return None
        if scheme.settings.scope == "fixed":
            return {"representation": "float", "recover_key": True}
        return {"representation": "popcount"}

    def _distill(
        self, api: FeatureAPI, x_aux: torch.Tensor, f_aux: torch.Tensor, gen: np.random.Generator, progress: bool | None
    ) -> nn.Module:
        """A copy of the black-box API from its answers: regress the API features of the auxiliary images (and of
        their mirror images, queried too)."""
        from masquerade.models import create_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(gen))
            if self.settings.surrogate is not None:
                net = self.settings.surrogate()
            else:
                trunk = create_model("fastresnet", num_classes=1, in_channels=x_aux.shape[1]).net
                assert isinstance(trunk, nn.Module)
                with torch.no_grad():
                    width = trunk.eval()(x_aux[:2].cpu()).shape[1]  # the trunk is still on the CPU
                net = nn.Sequential(trunk, nn.Linear(width, f_aux.shape[1]))
        dev = f_aux.device
        net = net.to(dev)
        f_flip = api.predict(x_aux.flip(3).cpu()).to(dev)
        scale = f_aux.std().clamp_min(1e-6)

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            flip = torch.from_numpy(gen.random(len(idx)) < 0.5).to(dev)  # mirror images, queried too
            xb = torch.where(flip[:, None, None, None], x_aux[idx].flip(3), x_aux[idx])
            target = torch.where(flip[:, None], f_flip[idx], f_aux[idx])
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=_bf16(dev)):
                out = net(xb)
            return F.mse_loss(out.float() / scale, target / scale)

        _fit(
            net,
            len(x_aux),
            loss_of,
            epochs=self.settings.surrogate_epochs,
            batch=self.settings.batch,
            lr=2e-3,
            gen=gen,
            desc="surrogate",
            progress=progress,
        )
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def run(
        self,
        *,
        encodings: Any,
        auxiliary: Any,
        api: FeatureAPI,
        rng: RngLike = None,
        progress: bool | None = None,
        device: DeviceLike = None,
    ) -> AttackResult:
        t = time.perf_counter()
        dev = resolve_device(device)
        gen = as_generator(0 if rng is None else rng)
        recovered: dict[str, Any] = {}
        if self.settings.recover_key:
            # the ciphertexts' bit order first, by the registered key-recovery attack (a plugin like any other)
            from masquerade.registry import ATTACKS

            got = ATTACKS.create("shufflebits-key-recovery", group="all").run(
                encodings=torch.as_tensor(encodings), rng=gen
            )
            encodings, recovered["perm"] = got.reconstructions, got.recovered["perm"]
        x_aux, _, f_aux, a, v = _adversary_inputs(
            self.name, encodings, auxiliary, api, self.settings.representation, False
        )
        # the API has answered: the adversary's own training runs on the device
        x_aux, f_aux, a, v = x_aux.to(dev), f_aux.to(dev), a.to(dev), v.to(dev)
        timings: dict[str, float] = {}
        surrogate = None
        if self.settings.loss == "feature":
            t0 = time.perf_counter()
            surrogate = self._distill(api, x_aux, f_aux, gen, progress)
            timings["surrogate_seconds"] = time.perf_counter() - t0
        c, h = x_aux.shape[1], x_aux.shape[2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(gen))
            decoder = nn.Sequential(_Standardise(a.cpu()), Decoder(a.shape[1], c, h))
        decoder = decoder.to(dev)
        f_scale = f_aux.std().clamp_min(1e-6)

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            rec = decoder(a[idx])
            loss = F.mse_loss(rec, x_aux[idx])
            if surrogate is not None:  # the feature-reconstruction term, through the adversary's copy of the API
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=_bf16(dev)):
                    fr = surrogate(rec)
                loss = loss + self.settings.feature_weight * F.mse_loss(fr.float() / f_scale, f_aux[idx] / f_scale)
            return loss

        t0 = time.perf_counter()
        _fit(
            decoder,
            len(a),
            loss_of,
            epochs=self.settings.epochs,
            batch=self.settings.batch,
            lr=self.settings.lr,
            gen=gen,
            desc=f"decoder ({self.settings.loss} loss)",
            progress=progress,
        )
        timings["decoder_seconds"] = time.perf_counter() - t0
        decoder.eval()
        with torch.no_grad():
            rec = (
                torch.cat([decoder(v[i : i + 500]).cpu() for i in range(0, len(v), 500)])
                if len(v)
                else torch.zeros(0, c, h, h)
            )
        return AttackResult(
            self.name,
            rec,
            recovered={"decoder": decoder.cpu(), **recovered},
            metrics={"auxiliary_images": len(a), "api_queries": api.queries, **timings},
            seconds=time.perf_counter() - t,
        )


def _fit(
    net: nn.Module,
    n: int,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch: int,
    lr: float,
    gen: np.random.Generator,
    desc: str,
    progress: bool | None,
    weight_decay: float = 0.0,
    one_cycle: bool = True,
) -> None:
    """Adam over ``epochs`` shuffled passes of ``n`` rows in minibatches: ``loss_of(rows)`` is each step's loss (the
    rows a CPU index tensor); the learning rate follows a one-cycle schedule peaking at ``lr`` unless told not to.
    Every trainer of this module (classifier, surrogate, decoder) runs through it."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = -(-n // batch)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps)) if one_cycle else None
    )
    with bar(total=epochs * steps, desc=desc, unit="step", disable=progress is False or None) as pb:
        for _ in range(epochs):
            net.train()
            order = torch.from_numpy(gen.permutation(n))
            for i in range(steps):
                loss = loss_of(order[i * batch : (i + 1) * batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                pb.update(1)


def _bf16(device: torch.device) -> bool:
    from masquerade.training import bf16_supported

    return bf16_supported(device)
