"""Key material: a frozen base class, safe key files, fingerprints.

Every scheme's key extends :class:`Key`. A key file is a single ``.safetensors`` file: the arrays as tensors, and one
JSON document in the header's metadata (scheme name, key type, format version and the key's other fields). Nothing
else is ever loaded as a key -- in particular never a pickle -- so loading a key never runs code. Key files are
written atomically with permissions 0600.

``repr(key)`` never prints key material, only the fingerprint (a SHA-256 prefix over the canonical serialisation) and
array shapes; reports and logs carry fingerprints only.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import importlib
import json
import os
import typing
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from masquerade.errors import InputError, IntegrityError
from masquerade.fileio import atomic_path, parse_json
from masquerade.rng import secure_bytes, secure_rng

__all__ = [
    "Key",
    "save_key",
    "load_key",
    "fingerprint",
    "key_types",
    "secure_rng",
    "secure_bytes",
    "FORMAT_VERSION",
    "check_key_array",
    "check_key_field",
    "is_count",
    "just_drawn",
]

FORMAT_VERSION = 1
_META_FIELD = "masquerade"
_KEY_TYPES: dict[str, type["Key"]] = {}
_JSON_SCALARS = (str, int, float, bool, type(None))


def key_types() -> dict[str, type["Key"]]:
    """The registered key classes by type name."""
    return dict(_KEY_TYPES)


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Key:
    """Base of every scheme's key: a frozen dataclass of arrays and JSON-able fields.

    Subclasses set ``scheme`` (the scheme's registry name) and declare their fields. A field may hold a numpy
    array, ``bytes``, a JSON value (numbers, strings, lists, dicts) or a frozen dataclass of JSON values (settings).
    ``public_fields`` names the fields that ``repr`` may show (settings, sizes); everything else is redacted.
    """

    scheme: ClassVar[str] = ""
    public_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.type_name()
        if name in _KEY_TYPES and _KEY_TYPES[name].__qualname__ != cls.__qualname__:
            raise TypeError(
                f"key type {name!r} is registered twice ({_KEY_TYPES[name].__qualname__}, {cls.__qualname__})"
            )
        _KEY_TYPES[name] = cls

    @classmethod
    def type_name(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    # -- contents ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the key's contents (shapes, dtypes, ranges, permutations) before any kernel sees them; raise
        :class:`~masquerade.errors.InputError`. Runs on every construction, so a key read from a file, however it
        was tampered with, is either valid or refused. Subclasses extend it with :func:`check_key_array` and
        :func:`check_key_field`."""

    # -- serialisation -------------------------------------------------------------------------------------------
    def to_parts(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Split into arrays (for safetensors) and a JSON document (everything else)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        byte_fields: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = np.ascontiguousarray(value)
            elif isinstance(value, (bytes, bytearray)):
                arrays[f.name] = np.frombuffer(bytes(value), dtype=np.uint8).copy()
                byte_fields.append(f.name)
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                meta[f.name] = _jsonable(dataclasses.asdict(value), f.name)
            else:
                meta[f.name] = _jsonable(value, f.name)
        doc = {
            "format_version": FORMAT_VERSION,
            "key_type": self.type_name(),
            "scheme": self.scheme,
            "fields": meta,
            "bytes_fields": byte_fields,
        }
        return arrays, doc

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> "Key":
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        bytes_fields = set(doc.get("bytes_fields", []))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        given = set(arrays) | set(doc["fields"])
        missing = [
            n
            for n, f in fields.items()
            if n not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        unknown = sorted(given - set(fields))
        if missing or unknown:
            raise IntegrityError(f"key file does not match {cls.__name__}: missing {missing}, unexpected {unknown}")
        for name, arr in arrays.items():
            values[name] = arr.tobytes() if name in bytes_fields else arr
        for name, value in doc["fields"].items():
            hint = hints.get(name)
            if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
                value = hint(**value)
            values[name] = value
        return cls(**values)

    # -- identity --------------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return fingerprint(self)

    def __json_summary__(self) -> dict[str, str]:
        """What a run folder records of a key: its fingerprint, never its material."""
        return {"fingerprint": self.fingerprint}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key) or type(other) is not type(self):
            return NotImplemented
        return _canonical_digest(self) == _canonical_digest(other)

    def __hash__(self) -> int:
        return hash(_canonical_digest(self))

    def __repr__(self) -> str:
        parts = [f"fingerprint={self.fingerprint!r}"]
        for name in self.public_fields:
            parts.append(f"{name}={getattr(self, name)!r}")
        shapes = {
            f.name: tuple(getattr(self, f.name).shape)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        if shapes:
            parts.append(f"arrays={shapes}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # keys never travel by pickle
        raise TypeError("keys are not picklable; save them with masquerade.keys.save_key")


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, _JSON_SCALARS):
        if isinstance(value, float) and not np.isfinite(value):
            raise InputError(f"key field {where!r}: non-finite float {value} cannot be stored")
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    raise InputError(f"key field {where!r}: {type(value).__name__} cannot be stored in a key file")


def _canonical_digest(key: Key) -> bytes:
    arrays, doc = key.to_parts()
    h = hashlib.sha256()
    h.update(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.digest()


_DRAWN = contextvars.ContextVar("masquerade_key_just_drawn", default=False)


@contextlib.contextmanager
def just_drawn() -> Any:
    """For ``keygen`` only: the key built inside was drawn here, by construction valid, so the O(size) scans of its
    values (ranges, permutations) are skipped; shapes and dtypes are still checked. Keys read from files never get
    this."""
    token = _DRAWN.set(True)
    try:
        yield
    finally:
        _DRAWN.reset(token)


def check_key_field(key: Key, name: str, ok: bool, want: str) -> None:
    """Refuse a key whose ``name`` is not what it must be (``want`` says what)."""
    if not ok:
        raise InputError(f"{key.scheme} key: {name} must be {want}, got {_describe(getattr(key, name, None))}")


def check_key_array(
    key: Key,
    name: str,
    *,
    dtype: Any,
    shape: tuple[int | None, ...],
    low: float | None = None,
    high: float | None = None,
    finite: bool = False,
    permutation_rows: bool = False,
) -> np.ndarray:
    """Refuse a key array of the wrong dtype or shape (``None`` in ``shape``: any size), with values outside
    ``[low, high)`` or non-finite, or (``permutation_rows``) whose rows are not permutations of 0..width-1."""
    a = getattr(key, name)
    where = f"{key.scheme} key: {name}"
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
        raise InputError(f"{where} must be a {np.dtype(dtype)} array, got {_describe(a)}")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "×".join("*" if s is None else str(s) for s in shape) or "a scalar"
        raise InputError(f"{where} must have shape {want}, got {'×'.join(map(str, a.shape)) or 'a scalar'}")
    if a.size and not _DRAWN.get():
        if finite and not np.isfinite(a).all():
            raise InputError(f"{where} holds NaN or infinite values")
        if low is not None and a.min() < low:
            raise InputError(f"{where} holds {a.min()}, below {low}")
        if high is not None and a.max() >= high:
            raise InputError(f"{where} holds {a.max()}, not below {high}")
        if permutation_rows:
            width = a.shape[-1]
            flat = a.reshape(-1, width)
            if flat.min() < 0 or flat.max() >= width:
                ok = False
            elif width <= 64:  # each row holds every value once: the OR of their bits is all ones
                word = np.uint32 if width <= 32 else np.uint64
                table = np.left_shift(np.ones(width, word), np.arange(width, dtype=word))
                full = np.bitwise_or.reduce(table)
                ok = bool((np.bitwise_or.reduce(table[flat], axis=1) == full).all())
            else:
                ok = bool((np.sort(flat.astype(np.int64), axis=1) == np.arange(width)).all())
            if not ok:
                raise InputError(f"{where}: every row must be a permutation of 0..{width - 1} (each value once)")
    return a


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {v.shape}"
    text = repr(v)
    return text if len(text) <= 40 else type(v).__name__


def is_count(v: Any, minimum: int = 0) -> bool:
    """A plain int (not a bool) >= minimum."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) >= minimum


def fingerprint(key: Key, length: int = 16) -> str:
    """A SHA-256 prefix (hex) that identifies ``key`` without revealing it."""
    if not isinstance(key, Key):
        raise InputError(f"fingerprint() takes a Key, not {type(key).__name__}")
    return _canonical_digest(key).hex()[:length]


def save_key(path: str | os.PathLike[str], key: Key) -> Path:
    """Write ``key`` to ``path`` (``.safetensors``), atomically, readable by the owner only."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: key files are written as .safetensors (use that suffix)")
    if not isinstance(key, Key):
        raise InputError(f"save_key() takes a Key, not {type(key).__name__}")
    arrays, doc = key.to_parts()
    doc["fingerprint"] = key.fingerprint
    with atomic_path(path, mode=0o600) as tmp:
        save_file(arrays, str(tmp), metadata={_META_FIELD: json.dumps(doc, sort_keys=True)})
    return path


def load_key(path: str | os.PathLike[str], *, expect: str | type[Key] | None = None) -> Key:
    """Read a key file written by :func:`save_key`; ``expect`` (a scheme name or Key class) guards against mix-ups."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such key file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if (
        path.suffix != ".safetensors"
        or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
        or head[:2] == b"PK"
    ):
        raise InputError(f"{path}: not a masquerade key file (keys are .safetensors; pickles are never loaded)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable key file ({exc})") from None
    if _META_FIELD not in meta:
        raise InputError(f"{path}: a safetensors file, but not a masquerade key (no '{_META_FIELD}' metadata)")
    doc = parse_json(meta[_META_FIELD], where=f"{path}: key metadata", error=IntegrityError)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("fields"), dict)
        or not isinstance(doc.get("key_type"), str)
        or not isinstance(doc.get("scheme", ""), str)
        or not isinstance(doc.get("bytes_fields", []), list)
    ):
        raise InputError(f"{path}: a damaged or tampered key file (its metadata is not a key's)")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IntegrityError(
            f"{path}: key format version {version!r} is newer than this masquerade understands "
            f"({FORMAT_VERSION}); upgrade masquerade"
        )
    scheme = doc.get("scheme", "")
    if expect is not None:
        want = expect if isinstance(expect, str) else expect.scheme
        if scheme != want:
            raise InputError(f"{path}: this key is for scheme {scheme!r}, not {want!r}")
    key_type = doc.get("key_type")
    cls = _KEY_TYPES.get(key_type or "")
    why = ""
    if cls is None:
        why = _import_scheme_module(scheme) if isinstance(scheme, str) else ""
        cls = _KEY_TYPES.get(key_type or "")
    if cls is None:
        raise InputError(f"{path}: unknown key type {key_type!r} (scheme {scheme!r}){why}")
    if cls.scheme != scheme:
        raise InputError(
            f"{path}: a damaged or tampered key file: its key type is for scheme {cls.scheme!r}, its "
            f"metadata says {scheme!r}"
        )
    try:
        key = cls.from_parts(arrays, doc)
    except InputError as exc:
        raise InputError(f"{path}: a damaged or tampered key file: {exc}") from None
    except (TypeError, ValueError, KeyError, IntegrityError) as exc:
        raise InputError(f"{path}: a damaged or tampered key file ({type(exc).__name__}: {exc})") from None
    stored = doc.get("fingerprint")
    if stored is not None and stored != key.fingerprint:
        raise InputError(
            f"{path}: the key material does not match the fingerprint recorded with it "
            f"({stored} vs {key.fingerprint}); the file was altered"
        )
    return key


def _import_scheme_module(scheme: str) -> str:
    """Key classes live beside their schemes: import the module of a built-in scheme, or of a scheme an installed
    package registers (entry point ``masquerade.schemes``), never one the file names. Returns why that failed
    ("" when it did not)."""
    from masquerade.catalogue import BUILTIN_SCHEMES

    entry = BUILTIN_SCHEMES.get(scheme)
    if entry is not None:
        importlib.import_module(entry[0].partition(":")[0])
        return ""
    from masquerade.entrypoints import plugin_entries

    entry = plugin_entries("masquerade.schemes", "scheme").get(scheme)
    if entry is None:
        return "; no installed package registers that scheme"
    try:
        importlib.import_module(entry[0].partition(":")[0])
    except Exception as exc:  # another package's import failing is that package's error, reported in one line
        return f"; its plugin did not import ({type(exc).__name__}: {exc})"
    return ""
