"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or Ctrl-C therefore never leaves a half-written key, array or image that looks whole: either the old file
(or nothing) is there, or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_open",
    "atomic_dir",
    "replace_dir",
    "recover_dir",
    "exclusive_lock",
    "LockedError",
    "write_json",
    "write_text",
    "save_npy",
    "save_npz",
    "save_png",
    "sha256_file",
    "parse_json",
    "read_json",
]

MAX_JSON_BYTES = 64 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if mode is not None:
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8", file_mode: int | None = None
) -> Iterator[IO[Any]]:
    """``open()`` for writing, made atomic; ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, mode=file_mode) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` (which must not exist yet)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` (a sibling of ``target``) in place of ``target`` with two renames: the old
    folder is moved aside first and deleted last, so a kill leaves the old folder, the new one, or the old one set
    aside under ``.NAME.old-*`` (which :func:`recover_dir` puts back)."""
    if not target.exists():
        os.replace(new, target)
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def recover_dir(target: Path) -> bool:
    """Undo a replacement that a kill interrupted between its two renames, and drop the temporary folders of killed
    writers of ``target``. Call it while holding :func:`exclusive_lock` on ``target``. Returns whether an old folder
    was put back."""
    import re

    restored = False
    for aside in sorted(target.parent.glob(f".{target.name}.old-*")):
        if not target.exists():
            os.replace(aside, target)
            restored = True
        else:
            shutil.rmtree(aside, ignore_errors=True)
    mine = re.compile(rf"^\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.part$")  # tempfile.mkdtemp's names only
    for part in target.parent.iterdir() if target.parent.is_dir() else ():
        if mine.match(part.name) and part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
    return restored


class LockedError(Exception):
    """Another live process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.NAME.lock`` beside ``target`` while writing it; a second writer gets
    :class:`LockedError` naming the holder's pid. The kernel drops the lock when its process dies, so a killed run
    never blocks the next one."""
    import fcntl

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(
                f"{target}: another masquerade process (pid {holder}) is writing it; wait for it to finish"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a lock file its holder just removed
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still holding it: a waiter re-checks the inode and retries
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    summary = getattr(obj, "__json_summary__", None)  # keys: their fingerprint, never their material
    if callable(summary):
        return summary()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """JSON with numpy scalars handled and keys replaced by their fingerprints."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True)


def parse_json(
    data: str | bytes,
    *,
    where: str,
    expect: type | tuple[type, ...] | None = None,
    error: type[Exception] | None = None,
) -> Any:
    """JSON from text we did not write ourselves, with every way it can fail turned into one line naming ``where``:
    malformed text or bytes that are not UTF-8, nesting deep enough to exhaust the parser's recursion, integers past
    Python's 4,300-digit limit; ``expect`` checks the top level's type (``dict`` for an object). ``error`` is the
    exception raised (:class:`~masquerade.errors.InputError` by default)."""
    from masquerade.errors import InputError

    err = error or InputError
    try:
        doc = json.loads(data)
    except RecursionError:
        raise err(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer with too many digits
        raise err(f"{where}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    if expect is not None and not isinstance(doc, expect):
        names = " or ".join(
            {"dict": "an object", "list": "an array", "str": "a string"}.get(t.__name__, t.__name__)
            for t in (expect if isinstance(expect, tuple) else (expect,))
        )
        raise err(f"{where}: expected {names} at the top level, got {type(doc).__name__}")
    return doc


def read_json(
    path: str | os.PathLike[str],
    *,
    expect: type | tuple[type, ...] | None = None,
    limit: int = MAX_JSON_BYTES,
    error: type[Exception] | None = None,
) -> Any:
    """A JSON file read by :func:`parse_json`, refused above ``limit`` bytes (a FIFO or device is not read)."""
    from masquerade.errors import InputError

    err = error or InputError
    p = Path(path)
    if not p.is_file():
        raise err(f"{p}: not a regular file")
    with open(p, "rb") as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise err(f"{p}: larger than {limit >> 20} MiB; not read")
    return parse_json(raw, where=str(p), expect=expect, error=error)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(to_json(obj) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return Path(path)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> Path:
    # typed Any: numpy's stub lets a ``**`` mapping fill ``allow_pickle`` too, which the arrays' type does not fit
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **payload)
    return Path(path)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Save one uint8 H×W×C (C in 1, 3, 4) or H×W image as PNG."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    with atomic_open(path, "wb") as fh:
        Image.fromarray(arr).save(fh, format="PNG")
    return Path(path)
