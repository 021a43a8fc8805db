"""The plugin contracts: what every registered scheme and attack promises.

One test (``tests/test_contracts.py``) walks every registered entry and checks these promises.

A **scheme** is a class with

- ``name`` (its registry name), ``Settings`` (a frozen dataclass; ``Scheme(**settings)`` builds ``Settings(**settings)``
  and keeps it as ``.settings``), ``invertible`` (false: one-way, ``decode`` raises
  :class:`~masquerade.errors.NotInvertibleError`) and ``data_kind`` (``"images"`` or ``"features"``);
- ``keygen(n, *, rng=None, shape=..., pool_size=0, base=None) -> Key``: draws every random choice for ``n`` items of
  ``shape``; ``pool_size`` is the public pool a scheme mixes in (0 for schemes without one); ``base`` extends a key's
  data-set secrets to new items (schemes that cannot refuse it);
- ``encode(x, key, *, public=None, rng=None)``: a pure function of its inputs, except for fresh noise a scheme
  declares (``rng``); ``decode(z, key, *, public=None)``.

Optional scheme hooks, read only through this module's functions (callers never look for them by name):

- ``mix_labels(labels, key, num_classes)``: the labels released with the encodings (InstaHide's mixed one-hots);
  :func:`label_mixer`;
- ``clean_view(x)``: clean images on the scale the encodings use, for schemes that train on their own scale;
  :func:`clean_view_of`;
- ``one_time_keys`` (default true): false where one dataset key disguises every image (DisguisedNets), so a model
  trains and tests under that key; :func:`one_time_keys`;
- ``public_slots`` (default 0): slots of each mix filled from a public pool (InstaHide cross: k - p), so a release
  needs one; :func:`public_slots`.

An **attack** is a class with ``name``, ``Settings`` (frozen; ``Attack(**settings)``), ``threat_model`` (a
:class:`ThreatModel`: exactly what it is given), ``data_kind`` (what its encodings are) and
``run(*, rng=None, progress=None, **given) -> AttackResult``; ``rng`` is the attacker's own randomness. Its optional
hook ``settings_against(scheme) -> dict | None`` (a classmethod) names the schemes it targets, with the published
settings it takes from them; :func:`settings_against` reads it, and the scorecard runs the attack where it answers.
An attack that trains or optimises a model declares ``uses_device = True`` and takes ``device=`` (a
``torch.device``) in ``run``; :func:`device_arguments` passes it only to those (the others run on the CPU). An attack
that uses nothing every other attack at its level does not also hold declares ``baseline = True`` (``as-is``): it is
that level's floor, and an attack scoring below it has failed (:func:`is_baseline`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from masquerade.errors import InputError

if TYPE_CHECKING:
    import torch

    from masquerade.keys import Key
    from masquerade.rng import RngLike

__all__ = [
    "Scheme",
    "Attack",
    "AttackResult",
    "Knowledge",
    "ThreatModel",
    "Configurable",
    "check_images",
    "check_key",
    "refuse_pool",
    "refuse_base",
    "label_mixer",
    "clean_view_of",
    "one_time_keys",
    "public_slots",
    "settings_against",
    "uses_device",
    "is_baseline",
    "device_arguments",
]


@runtime_checkable
class Scheme(Protocol):
    """A protection: ``keygen`` draws every random choice, ``encode`` is a pure function of its inputs."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    invertible: ClassVar[bool]
    data_kind: ClassVar[str]
    settings: Any

    def keygen(
        self, n: int, *, rng: RngLike = None, shape: tuple[int, ...] = ..., pool_size: int = 0, base: Key | None = None
    ) -> Key: ...

    def encode(self, x: Any, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None) -> Any: ...

    def decode(self, z: Any, key: Key, *, public: torch.Tensor | None = None) -> Any: ...


# -- optional hooks (see the module docstring): the one place that looks for them ------------------------------------


def label_mixer(scheme: Any) -> Callable[..., Any] | None:
    """The scheme's ``mix_labels`` (the labels its release carries), or None where it releases hard labels."""
    return getattr(scheme, "mix_labels", None)


def clean_view_of(scheme: Any) -> Callable[..., Any] | None:
    """The scheme's ``clean_view`` (clean images on its own input scale), or None (standardise instead)."""
    return getattr(scheme, "clean_view", None)


def one_time_keys(scheme: Any) -> bool:
    """True where every release draws fresh keys (the default); false for one dataset key (DisguisedNets)."""
    return bool(getattr(scheme, "one_time_keys", True))


def public_slots(scheme: Any) -> int:
    """Slots of each mix a public pool fills (0: the scheme needs no public pool)."""
    n = getattr(scheme, "public_slots", 0)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise InputError(f"{getattr(scheme, 'name', scheme)!r}: public_slots must be a count, got {n!r}")
    return int(n)


def settings_against(attack: Any, scheme: Any) -> dict[str, Any] | None:
    """The settings ``attack`` (a class) takes against ``scheme``, or None where it does not target it (or declares
    no targets)."""
    hook = getattr(attack, "settings_against", None)
    return None if hook is None else hook(scheme)


def uses_device(attack: Any) -> bool:
    """True where the attack's ``run`` takes ``device=`` (it trains or optimises a model there)."""
    flag = getattr(attack, "uses_device", False)
    if not isinstance(flag, bool):
        raise InputError(f"{getattr(attack, 'name', attack)!r}: uses_device must be true or false, got {flag!r}")
    return flag


def is_baseline(attack: Any) -> bool:
    """True where the attack is its level's floor (``baseline = True``): every other attack holds what it uses."""
    flag = getattr(attack, "baseline", False)
    if not isinstance(flag, bool):
        raise InputError(f"{getattr(attack, 'name', attack)!r}: baseline must be true or false, got {flag!r}")
    return flag


def device_arguments(attack: Any, device: Any) -> dict[str, Any]:
    """``{"device": device}`` for an attack that takes one (and a device was asked for), else nothing."""
    return {"device": device} if device is not None and uses_device(attack) else {}


class Knowledge(str, enum.Enum):
    """What an adversary may be given."""

    ENCODINGS = "encodings"  # the protected data (images or feature vectors)
    LABELS = "labels"  # labels released with the protected data
    PUBLIC_POOL = "public_pool"  # the public data a scheme mixes in
    AUXILIARY = "auxiliary"  # clean data from the same distribution, disjoint from the private data
    KNOWN_PAIRS = "known_pairs"  # (plaintext, ciphertext) pairs under the victim's key
    MODEL = "model"  # the model's architecture and weights
    GRADIENTS = "gradients"  # a client's gradient update
    API = "api"  # a black-box inference API


@dataclass(frozen=True)
class ThreatModel:
    """What an attack requires and what it may optionally use; anything else is refused."""

    requires: frozenset[Knowledge]
    optional: frozenset[Knowledge] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires", frozenset(Knowledge(k) for k in self.requires))
        object.__setattr__(self, "optional", frozenset(Knowledge(k) for k in self.optional))
        both = self.requires & self.optional
        if both:
            raise ValueError(f"threat model lists {sorted(k.value for k in both)} as both required and optional")

    def check(self, given: Mapping[str, Any], *, attack: str = "attack") -> None:
        names = set(given)
        allowed = {k.value for k in self.requires | self.optional}
        extra = sorted(names - allowed)
        if extra:
            raise InputError(f"{attack}: its threat model does not give it {extra}; it may use {sorted(allowed)}")
        missing = sorted(k.value for k in self.requires if k.value not in names or given[k.value] is None)
        if missing:
            raise InputError(f"{attack}: needs {missing} (its threat model requires them)")

    def describe(self) -> str:
        req = ", ".join(sorted(k.value for k in self.requires)) or "nothing"
        opt = ", ".join(sorted(k.value for k in self.optional))
        return f"given {req}" + (f" (optionally {opt})" if opt else "")


@dataclass
class AttackResult:
    """What every attack returns.

    ``reconstructions``: what it recovered of the private data (images float32 N×C×H×W in [0, 1], or feature
    vectors), or None; ``aligned``: whether ``reconstructions[i]`` belongs to the i-th input (false where an attack
    recovers a set, as the challenge attack recovers the private images behind all encodings: score by best match);
    ``recovered``: other recovered secrets (key material, labels, attributes, fitted models); ``metrics``: numbers
    about the run (JSON-able); ``seconds``: its wall time.
    """

    attack: str
    reconstructions: Any = None
    recovered: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    aligned: bool = True


@runtime_checkable
class Attack(Protocol):
    """An attack on a scheme: declares its threat model; ``run`` takes exactly what that model gives."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    threat_model: ClassVar[ThreatModel]
    data_kind: ClassVar[str]  # what its encodings are: "images" or "features"
    settings: Any

    def run(self, *, rng: RngLike = None, progress: bool | None = None, **given: Any) -> AttackResult: ...


def build_settings(cls: type, where: str, /, **values: Any) -> Any:
    """``cls(**values)`` for a Settings dataclass, with one-line errors for unknown names and wrong values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{where} has no setting {unknown}; its settings are {sorted(fields) or 'none'}")
    for name, value in list(values.items()):
        kind = field_kind(str(fields[name].type))[0]
        if kind == "tuple" and isinstance(value, (int, float, str, list)):
            value = values[name] = tuple(value) if isinstance(value, list) else (value,)
        if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = values[name] = str(value)  # --set policy=43 is a policy name, not a number
        if kind == "str" and isinstance(value, tuple) and all(isinstance(v, str | int | float) for v in value):
            value = values[name] = ",".join(map(str, value))  # --set pixel_scale=[0,1]: a comma inside a name
        want = _value_fits(str(fields[name].type), value)
        if want:
            raise InputError(f"{where}: setting {name} must be {want}, got {value!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        raise InputError(text if text.startswith(f"{where}:") else f"{where}: {text}") from None


def field_kind(annotation: str) -> tuple[str | None, bool]:
    """The simple kind of a Settings field from its annotation (a string under postponed evaluation): "int",
    "float", "bool", "str" or "tuple", or None for anything else (callables, modules, unions); and whether it
    allows None. The command line's options and the type checks of settings both read fields through this."""
    kinds = [k.strip() for k in str(annotation).replace(" ", "").split("|")]
    optional = "None" in kinds
    kinds = [k for k in kinds if k != "None"]
    if len(kinds) != 1:
        return None, optional
    kind = "tuple" if kinds[0].startswith("tuple") else kinds[0]
    return (kind if kind in ("int", "float", "bool", "str", "tuple") else None), optional


def _value_fits(annotation: str, value: Any) -> str:
    """'' when ``value`` fits a simple annotation (int, float, bool, str, tuple, their ``| None``), else what it
    must be. Annotations it does not know are not checked here (the Settings' own checks still run)."""
    import math

    kind, optional = field_kind(annotation)
    if kind is None or (optional and value is None):
        return ""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if kind == "int":
        return "" if is_int else "an integer"
    if kind == "float":
        ok = (is_int or isinstance(value, (float, np.floating))) and math.isfinite(float(value))
        return "" if ok else "a finite number"
    if kind == "bool":
        return "" if isinstance(value, (bool, np.bool_)) else "true or false"
    if kind == "str":
        return "" if isinstance(value, str) else "a string"
    return "" if isinstance(value, (tuple, list)) else "a comma-separated list"


class Configurable:
    """``Plugin(**settings)`` keeps ``self.settings = Plugin.Settings(**settings)`` (validated, frozen)."""

    name: ClassVar[str]
    Settings: ClassVar[type]

    def __init__(self, **settings: Any) -> None:
        self.settings = build_settings(self.Settings, self.name, **settings)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


def refuse_pool(name: str, pool_size: int) -> None:
    """For schemes without a public pool."""
    if pool_size:
        raise InputError(f"{name}: this scheme mixes in no public pool (pool_size must be 0, got {pool_size})")


def refuse_base(name: str, base: object) -> None:
    """For schemes whose keys cannot be extended to new items."""
    if base is not None:
        raise InputError(f"{name}: keys of this scheme cannot be extended to new images")


def check_images(x: object, *, where: str, range01: bool = True) -> torch.Tensor:
    """Validate a float32 N×C×H×W batch (in [0, 1] when ``range01``) and return it."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{where}: expected a torch.Tensor of images (N×C×H×W float32 in [0, 1]), "
            f"got {type(x).__name__}; ImageSet.to_tensor() gives one"
        )
    if x.ndim != 4:
        raise InputError(f"{where}: expected images as N×C×H×W, got a tensor of shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise InputError(f"{where}: expected float32 pixels, got {x.dtype}")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN propagates into lo/hi
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{where}: images contain NaN or infinite values")
        if range01 and (lo < 0 or hi > 1):
            raise InputError(f"{where}: pixels must lie in [0, 1], found [{lo:.3g}, {hi:.3g}]")
    return x


def check_key(key: object, cls: type[Key], *, where: str, n: int | None = None) -> None:
    """Refuse a key of another scheme, or one drawn for a different number of images."""
    if not isinstance(key, cls):
        other = getattr(key, "scheme", type(key).__name__)
        raise InputError(f"{where}: expected a {cls.scheme!r} key, got one for {other!r}")
    key_n = getattr(key, "n", None)
    if n is not None and key_n is not None and key_n != n:
        raise InputError(f"{where}: the key was drawn for {key_n} images, the batch has {n}")
