"""Bad inputs on the command line: each ends with exit 2 and one line on stderr naming what and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from masquerade.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "empty.npy", np.zeros((0, 8, 8, 3), np.uint8))
    (d / "trunc.npy").write_bytes((d / "empty.npy").read_bytes()[:20])
    (d / "zero.npy").write_bytes(b"")
    np.save(d / "feats_nan.npy", np.array([[1.0, np.nan]], np.float32))
    np.save(d / "feats_empty.npy", np.zeros((0, 4), np.float32))
    np.savez(d / "d.npz", images=np.zeros((10, 8, 8, 3), np.uint8), labels=np.arange(10) % 2)
    (d / "mixed").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "mixed" / "a.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(d / "mixed" / "b.png")
    (d / "bomb").mkdir()
    Image.new("1", (20000, 20000)).save(d / "bomb" / "x.png", optimize=True)  # 400 megapixels in a few KB
    (d / "afile").write_text("x")
    (d / "loop1").symlink_to(d / "loop2")
    (d / "loop2").symlink_to(d / "loop1")
    return d


CASES = [
    (["data", "info", "{d}/trunc.npy"], "trunc.npy"),
    (["data", "info", "{d}/zero.npy"], "zero.npy"),
    (["data", "info", "{d}/mixed"], "different sizes"),
    (["data", "info", "{d}/bomb"], "decompression bomb"),
    (["protect", "identity", "--in", "{d}/empty.npy", "--out", "{d}/o1", "--key", "{d}/k1.safetensors"], "no images"),
    (
        ["protect", "shufflebits", "--in", "{d}/feats_nan.npy", "--out", "{d}/o2", "--key", "{d}/k2.safetensors"],
        "NaN or infinite",
    ),
    (
        ["protect", "shufflebits", "--in", "{d}/feats_empty.npy", "--out", "{d}/o3", "--key", "{d}/k3.safetensors"],
        "no feature vectors",
    ),
    (
        [
            "protect",
            "disguise",
            "--in",
            "{d}/d.npz",
            "--out",
            "{d}/o4",
            "--key",
            "{d}/k4.safetensors",
            "--set",
            "block=abc",
        ],
        "setting block must be an integer",
    ),
    (
        ["protect", "instahide", "--in", "{d}/d.npz", "--out", "{d}/afile", "--key", "{d}/k5.safetensors"],
        "not a folder",
    ),
    (["protect", "identity", "--in", "{d}/d.npz", "--out", "{d}/o6", "--key", "{d}/k6.key"], ".safetensors"),
    (
        ["attack", "dlg", "--model-file", "{d}/none", "--data", "{d}/d.npz", "--set", "iterations=abc"],
        "iterations must be an integer",
    ),
    (
        ["attack", "inverting_gradients", "--model-file", "{d}/none", "--data", "{d}/d.npz", "--set", "lr=inf"],
        "finite number",
    ),
    (["attack", "shufflebits-popcount", "--encodings", "{d}/trunc.npy"], "trunc.npy"),
    (["train", "--data", "{d}/d.npz", "--test", "{d}/d.npz", "--lr", "nan"], "finite number"),
    (["metrics", "{d}/d.npz", "{d}/empty.npy"], "holds no images"),
    (["protect", "identity", "--in", "{d}/d.npz", "--out", "{d}/loop1", "--key", "{d}/k7.safetensors"], "loop"),
    (["metrics", "{d}/d.npz", "{d}/d.npz", "--out", "{d}/loop1"], "loop1"),
    (["data", "patches", "--from", "bundled:photos", "--n", "2", "--out", "{d}/afile/p.npz"], "afile"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(files: Path, argv: list[str], needle: str, cli: Any) -> None:
    r = cli("--quiet", *[a.format(d=files) for a in argv])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, err
    assert needle in err[-1] and "Traceback" not in "\n".join(err) and "internal error" not in err[-1]
    assert len([line for line in err if line.startswith("masquerade")]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["challenge", "attack"],
        ["frobnicate"],
        ["evaluate", "--workers", "-1"],
        ["attack", "instahide-inside"],
        ["protect", "instahide", "--k", "x"],
        ["train", "--data"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str], cli: Any) -> None:
    """argparse's own errors, like every other: one line naming what is wrong and where help is, exit 2."""
    r = cli(*argv)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("masquerade") and "error:" in err[0] and err[0].endswith("--help)")


def test_resource_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from safetensors.numpy import save_file

    (tmp_path / "many").mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "many" / f"{i}.png")
    monkeypatch.setenv("MASQUERADE_MAX_TOTAL_PIXELS", "30000")  # 3 of these 100×100 images
    assert main(["data", "info", str(tmp_path / "many")]) == 2
    assert "pixels in all" in capsys.readouterr().err
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(200, 100, 100, 3))
    del big
    assert main(["data", "info", str(tmp_path / "big.npy")]) == 2
    assert "declares" in capsys.readouterr().err
    monkeypatch.delenv("MASQUERADE_MAX_TOTAL_PIXELS")
    # model metadata that asks for 10^11 classes is refused before anything is allocated
    meta = {
        "arch": "convnet16",
        "num_classes": str(10**11),
        "in_channels": "3",
        "mean": json.dumps([0.5] * 3),
        "std": json.dumps([0.25] * 3),
    }
    save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / "m.safetensors"), metadata=meta)
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.arange(4))
    assert (
        main(["attack", "dlg", "--model-file", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "d.npz")]) == 2
    )
    assert "10000" in capsys.readouterr().err.replace(",", "")
    meta |= {"num_classes": "10", "std": "[0, 1, nan]"}
    save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / "m.safetensors"), metadata=meta)
    assert (
        main(["attack", "dlg", "--model-file", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "d.npz")]) == 2
    )
    assert "damaged model metadata" in capsys.readouterr().err


def test_an_output_folder_never_holds_inputs_or_another_commands_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`challenge attack CH --out T` with T the truth folder overwrote private_images.npy: refused, nothing written."""
    ch, truth = tmp_path / "ch", tmp_path / "truth"
    ch.mkdir()
    truth.mkdir()
    np.save(truth / "private_images.npy", np.zeros((2, 32, 32, 3), np.uint8))
    before = (truth / "private_images.npy").read_bytes()
    for out, needle in ((truth, "holds other files"), (ch, "would hold an input"), (tmp_path, "would hold an input")):
        assert main(["--quiet", "challenge", "attack", str(ch), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert sorted(p.name for p in truth.iterdir()) == ["private_images.npy"]
    assert (truth / "private_images.npy").read_bytes() == before
    # an empty folder becomes the attack's own, and a rerun into it gets past the check (to the missing encodings)
    mine = tmp_path / "mine"
    for _ in range(2):
        assert main(["--quiet", "challenge", "attack", str(ch), "--out", str(mine)]) == 2
        assert "no encryption.npy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scheme, extra, make",
    [
        ("instahide", [], "images"),
        ("instahide", ["--k", "4", "--mode", "cross", "--public", "POOL"], "images"),
        ("shufflebits", [], "features"),
        ("shufflebits", ["--scope", "fixed"], "features"),
    ],
)
def test_reveal_of_bare_encodings_with_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str, extra: list[str], make: str
) -> None:
    """Two releases of the same shape under two keys; the encodings copied out without their manifest. Only the
    key that made them decodes them; the other one's garbage is refused, not written (``--force`` writes it)."""
    import shutil

    g = np.random.default_rng(3)
    np.savez(tmp_path / "pool.npz", images=g.integers(0, 256, (60, 12, 12, 3), dtype=np.uint8))
    extra = [str(tmp_path / "pool.npz") if a == "POOL" else a for a in extra]
    name = "encodings.npy" if make == "images" else "features.npy"
    for who in ("a", "b"):
        if make == "images":
            np.savez(
                tmp_path / f"{who}.npz",
                images=g.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8),
                labels=np.arange(20) % 2,
            )
        else:
            feats = np.maximum(g.standard_normal((20, 48)).astype(np.float32) * 3, 0)
            np.savez(tmp_path / f"{who}.npz", features=feats, labels=np.arange(20) % 2)
        assert (
            main(
                [
                    "--quiet",
                    "protect",
                    scheme,
                    "--in",
                    str(tmp_path / f"{who}.npz"),
                    "--out",
                    str(tmp_path / f"enc-{who}"),
                    "--key",
                    str(tmp_path / "keys" / f"{who}.safetensors"),
                    "--run-out",
                    str(tmp_path / f"run-{who}"),
                    *extra,
                ]
            )
            == 0
        )
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "enc-a" / name, tmp_path / "bare" / name)
    out = tmp_path / ("back.npz" if make == "images" else "back.npy")
    capsys.readouterr()
    other = str(tmp_path / "keys" / "b.safetensors")
    rc = main(["reveal", scheme, "--in", str(tmp_path / "bare" / name), "--key", other, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not fit" in err, err
    assert not out.exists()
    assert (
        main(
            [
                "reveal",
                scheme,
                "--in",
                str(tmp_path / "bare" / name),
                "--key",
                str(tmp_path / "keys" / "a.safetensors"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    back = np.load(out)
    if make == "images":
        assert np.abs(back["images"].astype(int) - np.load(tmp_path / "a.npz")["images"]).max() <= 2
    else:
        np.testing.assert_array_equal(back, np.load(tmp_path / "a.npz")["features"])
    assert (
        main(
            [
                "reveal",
                scheme,
                "--in",
                str(tmp_path / "bare" / name),
                "--key",
                other,
                "--out",
                str(tmp_path / ("forced" + out.suffix)),
                "--force",
            ]
        )
        == 0
    )


def test_outputs_never_replace_or_overwrite_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``protect --force`` replaces its output folder: never one holding its data; camouflage writes JPEGs under
    the photos' names: never where the photos are, never into a folder of other files."""
    import hashlib

    g = np.random.default_rng(0)
    d = tmp_path / "work"
    d.mkdir()
    np.savez(d / "d.npz", images=g.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), labels=np.arange(6) % 2)
    Image.fromarray(g.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / "p0.jpg")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}
    cases = [
        [
            "protect",
            "identity",
            "--in",
            str(d / "d.npz"),
            "--out",
            str(d),
            "--key",
            str(tmp_path / "k.safetensors"),
            "--force",
        ],
        ["camouflage", "--in", str(d / "p0.jpg"), "--out", str(d), "--method", "filter"],
        ["camouflage", "--in", str(d / "p0.jpg"), "--out", str(tmp_path), "--method", "filter"],
    ]
    for args in cases:
        capsys.readouterr()
        assert main(["--quiet", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "would hold an input" in err, err
    others = tmp_path / "others"
    others.mkdir()
    (others / "p0.jpg").write_bytes(b"someone else's file")
    assert main(["--quiet", "camouflage", "--in", str(d / "p0.jpg"), "--out", str(others), "--method", "filter"]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert (others / "p0.jpg").read_bytes() == b"someone else's file"
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()} == before
