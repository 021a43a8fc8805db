"""Outputs are committed as a unit, bound to their key, and never clobbered: protect writes a temporary sibling and
renames it into place (a SIGKILL mid-run leaves the old state), holds a lock against a concurrent protect, and
records the key's fingerprint in a manifest that reveal checks; reveal never writes over its inputs or an existing
output without --force."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from masquerade.cli import main


def _data(path: Path, n: int = 40, size: int = 16) -> None:
    g = np.random.default_rng(0)
    np.savez(path, images=(g.random((n, size, size, 3)) * 255).astype(np.uint8), labels=np.arange(n) % 4)


def _protect(tmp: Path, out: str = "enc", key: str = "keys/k.safetensors", *extra: str) -> int:
    return main(
        [
            "--quiet",
            "protect",
            "disguise",
            "--in",
            str(tmp / "d.npz"),
            "--out",
            str(tmp / out),
            "--key",
            str(tmp / key),
            "--seed",
            "1",
            "--run-out",
            str(tmp / f"run-{out}-{len(extra)}-{time.time_ns()}"),
            *extra,
        ]
    )


def test_manifest_binds_encodings_to_their_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _data(tmp_path / "d.npz")
    assert _protect(tmp_path) == 0
    m = json.loads((tmp_path / "enc" / "manifest.json").read_text())
    assert m["count"] == 40 and set(m["files"]) == {"encodings.npy"} and len(m["key_fingerprint"]) == 16
    # another valid key of the same scheme: refused, both fingerprints named
    assert _protect(tmp_path, "enc2", "keys/other.safetensors", "--seed", "2") == 0
    capsys.readouterr()
    args = [
        "reveal",
        "disguise",
        "--in",
        str(tmp_path / "enc" / "encodings.npy"),
        "--key",
        str(tmp_path / "keys" / "other.safetensors"),
        "--out",
        str(tmp_path / "r.npz"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert m["key_fingerprint"] in err and "--force" in err and err.count("\n") == 1
    assert not (tmp_path / "r.npz").exists()
    assert main(args + ["--force"]) == 0  # the user insists: decoded, with the wrong key
    # the right key reveals; an existing output or an input as output is refused
    good = [
        "reveal",
        "disguise",
        "--in",
        str(tmp_path / "enc" / "encodings.npy"),
        "--key",
        str(tmp_path / "keys" / "k.safetensors"),
    ]
    assert main(good + ["--out", str(tmp_path / "ok.npz")]) == 0
    assert main(good + ["--out", str(tmp_path / "ok.npz")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(good + ["--out", str(tmp_path / "enc" / "encodings.npy"), "--force"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert np.load(tmp_path / "enc" / "encodings.npy").shape == (40, 16, 16, 3)  # untouched


def test_protect_refuses_to_replace_outputs_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _data(tmp_path / "d.npz")
    assert _protect(tmp_path) == 0
    before = (tmp_path / "enc" / "encodings.npy").read_bytes()
    assert _protect(tmp_path, "enc", "keys/k2.safetensors") == 2
    assert "earlier outputs" in capsys.readouterr().err
    assert (tmp_path / "enc" / "encodings.npy").read_bytes() == before
    assert not (tmp_path / "keys/k2.safetensors").exists()
    assert _protect(tmp_path, "enc", "keys/k.safetensors", "--force", "--seed", "5") == 0
    m = json.loads((tmp_path / "enc" / "manifest.json").read_text())
    assert (tmp_path / "enc" / "encodings.npy").read_bytes() != before
    assert not list(tmp_path.glob(".enc.*")), "no temporary or set-aside folder is left behind"
    from masquerade.keys import load_key

    assert load_key(tmp_path / "keys" / "k.safetensors").fingerprint == m["key_fingerprint"]
    (tmp_path / "afile").write_text("x")
    assert _protect(tmp_path, "afile", "keys/k3.safetensors") == 2
    assert "not a folder" in capsys.readouterr().err
    assert _protect(tmp_path, "enc4", "enc4/k.safetensors") == 2  # key inside the output
    run = tmp_path / "pub"
    assert (
        main(
            [
                "protect",
                "identity",
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "e5"),
                "--key",
                str(run / "k.safetensors"),
                "--run-out",
                str(run),
            ]
        )
        == 2
    )  # key inside the published run folder
    assert "run folder" in capsys.readouterr().err


def _spawn(tmp: Path, out: str, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "masquerade",
            "--quiet",
            "protect",
            "disguise",
            "--in",
            str(tmp / "big.npz"),
            "--out",
            str(tmp / out),
            "--key",
            str(tmp / key),
            "--seed",
            "3",
            "--force",
            "--set",
            "transform=rmt",
            "--set",
            "key_scope=image",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_protect_leaves_the_old_state_and_a_rerun_completes(tmp_path: Path) -> None:
    _data(tmp_path / "d.npz")
    _data(tmp_path / "big.npz", n=4000, size=32)
    assert _protect(tmp_path) == 0
    old = (tmp_path / "enc" / "encodings.npy").read_bytes()
    old_manifest = (tmp_path / "enc" / "manifest.json").read_text()
    for delay in (0.5, 1.5, 3.0):  # kill at several moments of the run
        p = _spawn(tmp_path, "enc", "keys/k.safetensors")
        time.sleep(delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        enc = tmp_path / "enc"
        files = sorted(f.name for f in enc.iterdir())
        assert files == ["encodings.npy", "manifest.json"], files  # always a whole folder: old or new
        manifest = json.loads((enc / "manifest.json").read_text())
        if (enc / "encodings.npy").read_bytes() == old:
            assert (enc / "manifest.json").read_text() == old_manifest
        else:
            assert manifest["count"] == 4000
    p = _spawn(tmp_path, "enc", "keys/k.safetensors")
    assert p.wait() == 0, p.stderr.read() if p.stderr else ""
    assert json.loads((tmp_path / "enc" / "manifest.json").read_text())["count"] == 4000
    assert not list(tmp_path.glob(".enc.*"))


@pytest.mark.slow
def test_two_concurrent_protects_into_one_folder(tmp_path: Path) -> None:
    _data(tmp_path / "big.npz", n=4000, size=32)
    a = _spawn(tmp_path, "enc", "keys/a.safetensors")
    time.sleep(2.0)  # past the imports: a holds the lock while it encodes
    b = _spawn(tmp_path, "enc", "keys/b.safetensors")
    codes = {"a": a.wait(), "b": b.wait()}
    errs = {"a": a.stderr.read() if a.stderr else "", "b": b.stderr.read() if b.stderr else ""}
    assert 0 in codes.values(), errs
    for name, rc in codes.items():
        if rc != 0:  # the one that found the other's lock: one line, exit 2, nothing of its own written
            assert rc == 2 and "another masquerade process" in errs[name] and errs[name].count("\n") == 1
            assert not (tmp_path / "keys" / f"{name}.safetensors").exists()
    from masquerade.keys import load_key

    fp = json.loads((tmp_path / "enc" / "manifest.json").read_text())["key_fingerprint"]
    winners = [
        k for k in ("a", "b") if codes[k] == 0 and load_key(tmp_path / "keys" / f"{k}.safetensors").fingerprint == fp
    ]
    assert winners, "the folder belongs to the key that wrote it last"


def test_a_failed_commit_keeps_the_old_key_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import masquerade.fileio as fio

    _data(tmp_path / "d.npz")
    assert _protect(tmp_path) == 0
    key_before = (tmp_path / "keys" / "k.safetensors").read_bytes()
    enc_before = (tmp_path / "enc" / "encodings.npy").read_bytes()
    # a killed writer left a temporary folder behind; the next protect removes it
    (tmp_path / ".enc.abcd1234.part").mkdir()
    (tmp_path / ".enc.abcd1234.part" / "encodings.npy").write_bytes(b"partial")

    def fail(new: Path, target: Path) -> None:
        raise OSError("device busy")

    monkeypatch.setattr(fio, "replace_dir", fail)
    with pytest.raises(OSError):
        main(
            [
                "--debug",
                "--quiet",
                "protect",
                "disguise",
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "enc"),
                "--key",
                str(tmp_path / "keys" / "k.safetensors"),
                "--seed",
                "9",
                "--force",
                "--run-out",
                str(tmp_path / "run-fail"),
            ]
        )
    assert (tmp_path / "keys" / "k.safetensors").read_bytes() == key_before  # the old key is back
    assert (tmp_path / "enc" / "encodings.npy").read_bytes() == enc_before
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers == [], leftovers  # no part, lock or aside file
    assert not any(p.name.startswith(".") for p in (tmp_path / "keys").iterdir())


def test_key_metadata_that_is_not_a_key_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import save_file

    for doc in (
        "[1, 2]",
        '{"fields": [], "key_type": "x", "format_version": 1}',
        '{"fields": {}, "key_type": ["a"], "format_version": 1}',
    ):
        save_file({"a": np.zeros(1, np.float32)}, str(tmp_path / "k.safetensors"), metadata={"masquerade": doc})
        assert main(["key", "show", str(tmp_path / "k.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error" not in err
