"""masquerade: protect images and deep features, attack the protections, score privacy and utility."""

from ._version import __version__
from .data import ImageSet, extract_patches, fetch_dataset, load_images, load_photos
from .errors import InputError, IntegrityError, MasqueradeError, NotInvertibleError
from .keys import Key, fingerprint, load_key, save_key
from .registry import (Attack, Knowledge, Scheme, ThreatModel, create_attack, create_scheme, list_attacks,
                       list_schemes, run_attack)
from .rng import secure_rng

__all__ = [
    "__version__", "ImageSet", "load_images", "load_photos", "fetch_dataset", "extract_patches",
    "MasqueradeError", "InputError", "IntegrityError", "NotInvertibleError",
    "Key", "save_key", "load_key", "fingerprint", "secure_rng",
    "Scheme", "Attack", "Knowledge", "ThreatModel", "create_scheme", "list_schemes", "create_attack",
    "list_attacks", "run_attack",
]
