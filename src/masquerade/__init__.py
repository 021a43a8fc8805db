"""masquerade: protect images and deep features, attack the protections, score privacy and utility.

The names below are loaded on first use, so that ``import masquerade`` (and the command line's ``--help``) stays
light; ``from masquerade import create_scheme`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from masquerade._version import __version__

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from masquerade.contracts import Attack, AttackResult, Knowledge, Scheme, ThreatModel
    from masquerade.data import ImageSet, extract_patches, fetch_dataset, load_images, load_photos
    from masquerade.errors import InputError, IntegrityError, MasqueradeError, NotInvertibleError
    from masquerade.keys import Key, fingerprint, load_key, save_key
    from masquerade.registry import create_attack, create_scheme, list_attacks, list_schemes, run_attack
    from masquerade.rng import secure_rng

_HOME = {
    "ImageSet": "masquerade.data",
    "load_images": "masquerade.data",
    "load_photos": "masquerade.data",
    "fetch_dataset": "masquerade.data",
    "extract_patches": "masquerade.data",
    "MasqueradeError": "masquerade.errors",
    "InputError": "masquerade.errors",
    "IntegrityError": "masquerade.errors",
    "NotInvertibleError": "masquerade.errors",
    "Key": "masquerade.keys",
    "save_key": "masquerade.keys",
    "load_key": "masquerade.keys",
    "fingerprint": "masquerade.keys",
    "secure_rng": "masquerade.rng",
    "Scheme": "masquerade.contracts",
    "Attack": "masquerade.contracts",
    "AttackResult": "masquerade.contracts",
    "Knowledge": "masquerade.contracts",
    "ThreatModel": "masquerade.contracts",
    "create_scheme": "masquerade.registry",
    "list_schemes": "masquerade.registry",
    "create_attack": "masquerade.registry",
    "list_attacks": "masquerade.registry",
    "run_attack": "masquerade.registry",
}

__all__ = [
    "__version__",
    "ImageSet",
    "load_images",
    "load_photos",
    "fetch_dataset",
    "extract_patches",
    "MasqueradeError",
    "InputError",
    "IntegrityError",
    "NotInvertibleError",
    "Key",
    "save_key",
    "load_key",
    "fingerprint",
    "secure_rng",
    "Scheme",
    "Attack",
    "AttackResult",
    "Knowledge",
    "ThreatModel",
    "create_scheme",
    "list_schemes",
    "create_attack",
    "list_attacks",
    "run_attack",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'masquerade' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
