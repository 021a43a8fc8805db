from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from masquerade.data import fetch_dataset, load_images
from masquerade.errors import IntegrityError, MasqueradeError

from .test_data import _cifar_archive


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder; counts requests."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = 0  # type: ignore[attr-defined]
    orig = httpd.finish_request

    def counting(*a: object, **k: object) -> None:
        httpd.requests += 1  # type: ignore[attr-defined]
        orig(*a, **k)  # type: ignore[arg-type]

    httpd.finish_request = counting  # type: ignore[method-assign]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_downloads_verifies_extracts_and_is_idempotent(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, www = server
    archive, truth = _cifar_archive(tmp_path)
    (www / archive.name).write_bytes(archive.read_bytes())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    folder = fetch_dataset("cifar10", root, url=f"{base}/{archive.name}", md5=md5, progress=False)
    assert folder == root / "cifar-10-batches-py" and (folder / "test_batch").is_file()
    ds = load_images(folder, split="test")
    assert np.array_equal(ds.images, truth["test_batch"][0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    # a second call is a no-op: no request reaches the server
    (www / archive.name).unlink()
    assert fetch_dataset("cifar10", root, url=f"{base}/{archive.name}", md5=md5, progress=False) == folder
    assert not [p for p in root.iterdir() if p.name.endswith(".part")]


def test_fetch_rejects_bad_checksum_and_leaves_nothing(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, www = server
    archive, _ = _cifar_archive(tmp_path)
    (www / archive.name).write_bytes(archive.read_bytes())
    root = tmp_path / "data"
    # the published MD5 of the real archive does not match our small stand-in
    with pytest.raises(IntegrityError, match="does not match the published"):
        fetch_dataset("cifar10", root, url=f"{base}/{archive.name}", progress=False)
    assert list(root.iterdir()) == []


def test_fetch_reports_unreachable_server(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, _ = server
    with pytest.raises(MasqueradeError, match="could not download"):
        fetch_dataset("cifar100", tmp_path / "d", url=f"{base}/missing.tar.gz", progress=False)
    assert not any((tmp_path / "d").iterdir())


def test_fetch_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(MasqueradeError, match="unknown data set"):
        fetch_dataset("mnist", tmp_path)


@pytest.mark.parametrize("evil", ["symlink", "dotdot", "absolute"])
def test_fetch_refuses_hostile_archive_members(tmp_path: Path, server: tuple[str, Path], evil: str) -> None:
    import io
    import tarfile

    base, www = server
    archive, _ = _cifar_archive(tmp_path)
    bad = www / archive.name
    with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo(
            {
                "symlink": "cifar-10-batches-py/link",
                "dotdot": "cifar-10-batches-py/../../escape",
                "absolute": "/tmp/masquerade-escape",
            }[evil]
        )
        if evil == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(info)
        else:
            info.size = 3
            dst.addfile(info, io.BytesIO(b"bad"))
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    root = tmp_path / "data"
    with pytest.raises(IntegrityError, match="refusing member"):
        fetch_dataset("cifar10", root, url=f"{base}/{archive.name}", md5=md5, progress=False)
    assert not (root / "cifar-10-batches-py").exists() and not (tmp_path / "escape").exists()


def test_fetch_never_deletes_what_it_did_not_create(tmp_path: Path, server: tuple[str, Path]) -> None:
    from masquerade.errors import InputError

    base, www = server
    archive, _ = _cifar_archive(tmp_path)
    (www / archive.name).write_bytes(archive.read_bytes())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    mine = root / "cifar-10-batches-py"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own work")
    with pytest.raises(InputError, match="not ours to delete"):
        fetch_dataset("cifar10", root, url=f"{base}/{archive.name}", md5=md5, progress=False)
    assert (mine / "notes.txt").read_text() == "my own work"
    other = tmp_path / "data2"
    other.mkdir()
    (other / archive.name).write_bytes(b"a user's own, different file")
    with pytest.raises(IntegrityError, match="not ours to delete"):
        fetch_dataset("cifar10", other, url=f"{base}/{archive.name}", md5=md5, progress=False)
    assert (other / archive.name).read_bytes() == b"a user's own, different file"
