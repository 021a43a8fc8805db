"""Registries of schemes and attacks: one name, one home.

The built-in catalogue below names each plugin's class by its dotted path, so ``masquerade list`` reads it without
importing torch. Other packages add plugins through the entry-point groups ``masquerade.schemes`` and
``masquerade.attacks`` (``name = "package.module:Class"``); code can also ``register`` a class at run time.
``create_scheme("instahide", k=6)`` builds a plugin from keyword settings, validated by its frozen ``Settings``.
The contracts the classes keep are in :mod:`masquerade.contracts`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from masquerade.catalogue import BUILTIN_ATTACKS, BUILTIN_SCHEMES
from masquerade.contracts import Attack, AttackResult, Knowledge, Scheme, ThreatModel, device_arguments
from masquerade.errors import InputError

__all__ = [
    "Scheme",
    "Attack",
    "AttackResult",
    "Knowledge",
    "ThreatModel",
    "Registry",
    "SCHEMES",
    "ATTACKS",
    "create_scheme",
    "list_schemes",
    "create_attack",
    "list_attacks",
    "run_attack",
    "BUILTIN_SCHEMES",
    "BUILTIN_ATTACKS",
]

T = TypeVar("T")


@dataclass
class _Entry:
    target: str | Callable[..., Any]  # "module:Class", or the class itself
    description: str

    def load(self, kind: str, name: str) -> Any:
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # noqa: BLE001 - a plugin's import may raise anything; name the plugin instead
            raise InputError(
                f"{kind} {name!r} cannot be loaded from {self.target} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None
        self.target = obj
        return obj


class Registry(Generic[T]):
    """Name -> plugin class, loaded on first use, with helpful errors for unknown names and settings."""

    def __init__(self, kind: str, builtin: dict[str, tuple[str, str]], group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, _Entry] = {n: _Entry(t, d) for n, (t, d) in builtin.items()}
        self._builtin = frozenset(builtin)
        self._plugins_read = False

    def _read_entry_points(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        from masquerade.entrypoints import plugin_entries

        for name, (target, who) in plugin_entries(self.group, self.kind).items():
            if name not in self._entries:  # a built-in name is never shadowed
                self._entries[name] = _Entry(target, who)

    def register(self, name: str, *, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a class at run time (tests, notebooks); packages use the entry-point group instead."""
        if not name or name != name.strip().lower():
            raise ValueError(f"{self.kind} names are lower-case and non-empty, not {name!r}")

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            old = self._entries.get(name)
            if old is not None and old.target is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = _Entry(factory, doc)
            return factory

        return deco

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        self._read_entry_points()
        return {n: self._entries[n].description for n in sorted(self._entries)}

    def get(self, name: str) -> Callable[..., T]:
        self._read_entry_points()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none yet"
            raise InputError(f"unknown {self.kind} {name!r}; available: {known}")
        return self._entries[name].load(self.kind, name)

    def create(self, name: str, /, **settings: Any) -> T:
        return self.get(name)(**settings)

    def setting_names(self, name: str) -> set[str]:
        """The fields of ``name``'s ``Settings`` (none where it has no dataclass of settings)."""
        cls = getattr(self.get(name), "Settings", None)
        return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()

    def builtin_with_setting(self, field: str) -> list[str]:
        """The built-in entries whose settings include ``field`` (another package's plugin never answers here, so
        that installing one cannot change what a shorthand option means)."""
        return sorted(n for n in self._builtin if n in self._entries and field in self.setting_names(n))

    def __contains__(self, name: object) -> bool:
        self._read_entry_points()
        return name in self._entries


SCHEMES: Registry[Scheme] = Registry("scheme", BUILTIN_SCHEMES, "masquerade.schemes")
ATTACKS: Registry[Attack] = Registry("attack", BUILTIN_ATTACKS, "masquerade.attacks")


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


def run_attack(
    attack: Attack, *, rng: Any = None, progress: bool | None = None, device: Any = None, **given: Any
) -> AttackResult:
    """Check ``given`` against the attack's threat model, then run it; ``device`` (``auto``, ``cpu``, ``cuda[:N]``,
    ``mps`` or a ``torch.device``) goes to attacks that run models (:func:`masquerade.contracts.uses_device`)."""
    attack.threat_model.check(given, attack=attack.name)
    if device is not None:
        from masquerade.devices import resolve_device

        device = resolve_device(device)
    return attack.run(rng=rng, progress=progress, **device_arguments(attack, device), **given)
