"""Downloading public data sets: official archive, published checksum, atomic extraction.

``fetch_dataset("cifar10", root=...)`` is a no-op when the extracted folder is already complete; otherwise it
downloads the archive (resuming nothing: a partial download is never kept), checks its published MD5, and extracts it
into a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from masquerade.errors import InputError, IntegrityError, MasqueradeError
from masquerade.fileio import atomic_dir, atomic_path
from masquerade.progress import bar

__all__ = ["DATASETS", "DatasetSpec", "fetch_dataset", "default_root", "file_digest"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    url: str
    filename: str
    md5: str
    folder: str
    files: tuple[str, ...]


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
    ),
    "cifar100": DatasetSpec(
        "cifar100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("meta", "train", "test"),
    ),
}


def default_root() -> Path:
    """``$MASQUERADE_DATA`` or ``~/.cache/masquerade/datasets``."""
    env = os.environ.get("MASQUERADE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "masquerade" / "datasets"


def file_digest(path: str | os.PathLike[str], algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _complete(folder: Path, spec: DatasetSpec) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in spec.files)


def _download(url: str, dest: Path, *, timeout: float, progress: bool | None) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - URL is ours or the user's
            total = int(resp.headers.get("Content-Length") or 0) or None
            with (
                atomic_path(dest) as tmp,
                open(tmp, "wb") as out,
                bar(
                    total=total,
                    desc=f"download {dest.name}",
                    unit="B",
                    unit_scale=True,
                    disable=None if progress is None else not progress,
                ) as b,
            ):
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    b.update(len(chunk))
                if total is not None and out.tell() != total:
                    raise IntegrityError(f"{url}: download ended after {out.tell()} of {total} bytes")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MasqueradeError(
            f"could not download {url}: {reason} (no internet? pass a local copy with "
            f"load_images(PATH) or fetch_dataset(..., url=MIRROR))"
        ) from None


def fetch_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> Path:
    """Make sure the data set ``name`` is extracted under ``root`` and return its folder.

    ``url`` points at a mirror of the same archive (the published checksum still applies unless ``md5`` overrides
    it). A file that fails the checksum is deleted and an :class:`IntegrityError` raised.
    """
    if name not in DATASETS:
        raise InputError(f"unknown data set {name!r}; fetch_dataset knows {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    root = Path(root) if root is not None else default_root()
    folder = root / spec.folder
    if _complete(folder, spec):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.filename
    want = (md5 or spec.md5).lower()
    if archive.is_file() and file_digest(archive) != want:
        raise IntegrityError(
            f"{archive}: exists, but its MD5 is not the published {want}; it is not ours to delete: "
            f"remove it, or pass the expected --md5"
        )
    if not archive.is_file():
        _download(url or spec.url, archive, timeout=timeout, progress=progress)
        got = file_digest(archive)
        if got != want:
            archive.unlink(missing_ok=True)
            raise IntegrityError(
                f"{spec.filename}: MD5 {got} does not match the published {want}; the download was deleted"
            )
    if folder.exists():  # not made by us (we only ever rename complete folders into place): leave it alone
        raise InputError(
            f"{folder}: exists but does not hold the complete data set; it is not ours to delete: "
            f"remove it or choose another --root"
        )
    try:
        with tarfile.open(archive) as tar, atomic_dir(folder) as tmp:
            every = tar.getmembers()
            members = [m for m in every if m.name.split("/", 1)[0] == spec.folder]
            if not members:
                raise IntegrityError(f"{archive}: has no {spec.folder}/ folder")
            for m in every:
                parts = Path(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                    raise IntegrityError(
                        f"{archive}: refusing member {m.name!r} (links, devices, absolute paths "
                        f"and '..' never leave an archive)"
                    )
            tar.extractall(tmp, members=members, filter="data")
            inner = tmp / spec.folder
            for item in inner.iterdir():
                os.replace(item, tmp / item.name)
            inner.rmdir()
    except tarfile.TarError as exc:
        raise IntegrityError(f"{archive}: cannot be extracted ({exc})") from None
    if not _complete(folder, spec):
        missing = [f for f in spec.files if not (folder / f).is_file()]
        shutil.rmtree(folder, ignore_errors=True)
        raise IntegrityError(f"{archive}: extracted, but {missing} are missing")
    return folder
