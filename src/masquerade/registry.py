"""Registries of schemes and attacks, their protocols, and explicit threat models.

``create_scheme("instahide", k=6)`` builds a scheme from keyword settings (validated by the scheme's frozen settings
dataclass); ``list_schemes()`` names them all. The same holds for attacks. An attack declares its
:class:`ThreatModel` -- what it is given -- and :func:`run_attack` hands it exactly that and nothing else.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Protocol, TypeVar, runtime_checkable

import torch

from .errors import InputError
from .keys import Key
from .rng import RngLike

__all__ = [
    "Scheme", "Attack", "Knowledge", "ThreatModel", "Registry", "SCHEMES", "ATTACKS", "create_scheme",
    "list_schemes", "create_attack", "list_attacks", "run_attack", "load_builtin",
]

T = TypeVar("T")


@runtime_checkable
class Scheme(Protocol):
    """A protection: ``keygen`` draws every random choice, ``encode`` is a pure function of its inputs.

    Images cross the API as float32 NCHW tensors in [0, 1]. ``decode(encode(x, key), key)`` returns ``x`` (exactly,
    or to float precision where the scheme says so) when ``invertible`` is true, and raises
    :class:`~masquerade.errors.NotInvertibleError` otherwise.
    """

    name: str
    invertible: bool
    settings: Any

    def keygen(self, n: int, rng: RngLike = None) -> Key: ...

    def encode(self, x: torch.Tensor, key: Key) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor, key: Key) -> torch.Tensor: ...


class Knowledge(str, enum.Enum):
    """What an adversary may be given."""

    ENCODINGS = "encodings"          # the protected data
    LABELS = "labels"                # labels released with the protected data
    PUBLIC_POOL = "public_pool"      # the public data a scheme mixes in
    AUXILIARY = "auxiliary"          # clean data from the same distribution, disjoint from the private data
    KNOWN_PAIRS = "known_pairs"      # (plaintext, ciphertext) pairs under the victim's key
    MODEL = "model"                  # the model's architecture and weights
    GRADIENTS = "gradients"          # a client's gradient update
    API = "api"                      # a black-box inference API


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
            raise InputError(f"{attack}: its threat model does not give it {extra}; it may use "
                             f"{sorted(allowed)}")
        missing = sorted(k.value for k in self.requires if k.value not in names or given[k.value] is None)
        if missing:
            raise InputError(f"{attack}: needs {missing} (its threat model requires them)")

    def describe(self) -> str:
        req = ", ".join(sorted(k.value for k in self.requires)) or "nothing"
        opt = ", ".join(sorted(k.value for k in self.optional))
        return f"given {req}" + (f" (optionally {opt})" if opt else "")


@runtime_checkable
class Attack(Protocol):
    """An attack on a scheme: declares its threat model; ``run`` takes exactly what that model gives."""

    name: str
    threat_model: ThreatModel

    def run(self, **given: Any) -> Any: ...


def run_attack(attack: Attack, **given: Any) -> Any:
    """Check ``given`` against the attack's threat model, then run it."""
    attack.threat_model.check(given, attack=attack.name)
    return attack.run(**given)


@dataclass
class _Entry(Generic[T]):
    factory: Callable[..., T]
    description: str


class Registry(Generic[T]):
    """Name -> factory, with helpful errors for unknown names and settings."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry[T]] = {}

    def register(self, name: str, *, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        if not name or name != name.strip().lower():
            raise ValueError(f"{self.kind} names are lower-case and non-empty, not {name!r}")

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description
            if not doc and factory.__doc__:
                doc = factory.__doc__.strip().splitlines()[0]
            self._entries[name] = _Entry(factory, doc)
            return factory

        return deco

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        load_builtin()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        load_builtin()
        return {n: self._entries[n].description for n in sorted(self._entries)}

    def get(self, name: str) -> Callable[..., T]:
        load_builtin()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none yet"
            raise InputError(f"unknown {self.kind} {name!r}; available: {known}")
        return self._entries[name].factory

    def create(self, name: str, /, **settings: Any) -> T:
        factory = self.get(name)
        settings_cls = getattr(factory, "Settings", None)
        if settings_cls is not None and dataclasses.is_dataclass(settings_cls):
            allowed = {f.name for f in dataclasses.fields(settings_cls)}
            unknown = sorted(set(settings) - allowed)
            if unknown:
                raise InputError(f"{self.kind} {name!r} has no setting {unknown}; its settings are "
                                 f"{sorted(allowed) or 'none'}")
        return factory(**settings)

    def __contains__(self, name: object) -> bool:
        load_builtin()
        return name in self._entries


SCHEMES: Registry[Scheme] = Registry("scheme")
ATTACKS: Registry[Attack] = Registry("attack")

_BUILTIN_PACKAGES = ("masquerade.schemes", "masquerade.attacks")
_loaded = False


def load_builtin() -> None:
    """Import the built-in scheme and attack packages once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in _BUILTIN_PACKAGES:
        importlib.import_module(pkg)


def create_scheme(name: str, /, **settings: Any) -> Scheme:
    """Build the scheme registered as ``name`` with keyword ``settings``."""
    return SCHEMES.create(name, **settings)


def list_schemes() -> list[str]:
    return SCHEMES.names()


def create_attack(name: str, /, **settings: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword ``settings``."""
    return ATTACKS.create(name, **settings)


def list_attacks() -> list[str]:
    return ATTACKS.names()
