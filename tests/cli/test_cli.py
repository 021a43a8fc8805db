from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from masquerade import __version__
from masquerade.cli import main
from masquerade.keys import save_key
from tests.test_keys import make_key


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "report", "list", "data", "metrics", "key"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "masquerade", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("masquerade: error:") and "missing" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["data", "patches", "--from", "x", "--out", "y.npz", "--n", "-3"])
    assert e.value.code == 2
    capsys.readouterr()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["data", "info", str(tmp_path / "bad.png")]) == 2
    assert "bad.png" in capsys.readouterr().err
    from masquerade.errors import InputError

    with pytest.raises(InputError):  # --debug lets the exception (and its traceback) through
        main(["--debug", "data", "info", str(tmp_path / "missing")])
    assert main([]) == 2


def test_list_info_key_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "identity" in out and "bundled:NAME" in out and "mnist" in out
    assert main(["data", "info", "bundled:digits"]) == 0
    assert "1797 images" in capsys.readouterr().out
    key = make_key()
    save_key(tmp_path / "k.safetensors", key)
    assert main(["key", "show", str(tmp_path / "k.safetensors")]) == 0
    out = capsys.readouterr().out
    assert key.fingerprint in out and key.secret.hex() not in out
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=a)
    np.savez(tmp_path / "b.npz", images=a)
    assert main(["metrics", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "ssim_mean        1" in out and (tmp_path / "m" / "metrics.json").is_file()


def test_patches_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pool.npz"
    rc = main(
        [
            "--quiet",
            "data",
            "patches",
            "--from",
            "bundled:photos",
            "--n",
            "12",
            "--out",
            str(out),
            "--seed",
            "1",
            "--run-out",
            str(tmp_path / "run"),
            "--no-cache",
        ]
    )
    assert rc == 0
    with np.load(out) as z:
        assert z["images"].shape == (12, 32, 32, 3)
    assert (tmp_path / "run" / "patches.png").is_file()


@pytest.mark.slow
def test_demo_runs_offline_and_writes_report(tmp_path: Path) -> None:
    # proxies pointing at a closed loopback port: any attempt to download would fail the demo
    env = {
        "MASQUERADE_QUIET": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    # --quick: every section of the tour, with two settings of the scorecard at level 1 (the full tour is
    # `make demo`, 6 to 7 minutes; its sections are the same functions with more steps)
    r = subprocess.run(
        [sys.executable, "-m", "masquerade", "demo", "--quick", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    report = tmp_path / "demo" / "report.html"
    assert report.is_file() and str(report) in r.stdout
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 6 and "ssim_vs_noise" in page
    assert "ats_gradient_inversion" in page and "scorecard" in page and "masquerade demo (--quick)" in page
    assert "shufflebits_digits" in page and "camouflage_photos" in page
    # the scorecard's own report, and its InstaHide row broken from the encodings and labels alone
    card = json.loads((tmp_path / "demo" / "evaluate" / "scorecard.json").read_text())
    assert {r["setting"] for r in card["rows"]} == {"no protection", "inside k=4"} and list(card["levels"]) == ["1"]
    inside = [r for r in card["rows"] if r["setting"] == "inside k=4"]
    broken = [r for r in inside if r["attack"] == "instahide-inside"]
    assert broken and broken[0]["success"] > 0.5
    assert inside[0]["utility"] > 0.75  # far above chance (0.10), with the demo's lighter training
    assert (tmp_path / "demo" / "evaluate" / "report.html").is_file()
    config = json.loads((tmp_path / "demo" / "config.json").read_text())
    assert config["config"]["scale"]["settings"] == ["no protection", "inside k=4"]


def test_the_full_demo_scores_the_whole_quick_plan_and_quick_names_settings_it_has() -> None:
    from masquerade.workflows.demo import FULL, QUICK
    from masquerade.workflows.evaluate import EvaluateSettings

    assert FULL.settings == () and FULL.levels == (1, 2, 3) and (FULL.train, FULL.epochs) == (1000, 6)
    labels = {s.label for s in EvaluateSettings.for_quick().settings}
    assert set(QUICK.settings) <= labels and (QUICK.train, QUICK.epochs) == (FULL.train, FULL.epochs)


def test_protect_instahide_writes_encodings_and_a_separate_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from masquerade.keys import load_key

    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=g.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), labels=np.arange(30) % 3)
    np.savez(tmp_path / "pool.npz", images=g.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8))
    out, key = tmp_path / "enc", tmp_path / "keys" / "k.safetensors"
    rc = main(
        [
            "--quiet",
            "protect",
            "instahide",
            "--in",
            str(tmp_path / "d.npz"),
            "--out",
            str(out),
            "--key",
            str(key),
            "--k",
            "4",
            "--mode",
            "cross",
            "--public",
            str(tmp_path / "pool.npz"),
            "--seed",
            "3",
            "--run-out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 0
    enc = np.load(out / "encodings.npy")
    soft = np.load(out / "labels.npy")
    assert enc.shape == (30, 16, 16, 3) and enc.dtype == np.float32 and soft.shape == (30, 3)
    k = load_key(key, expect="instahide")
    assert k.n == 30 and k.pool_size == 200
    assert k.fingerprint in capsys.readouterr().out
    cfg = (tmp_path / "run" / "config.json").read_text()
    assert k.fingerprint in cfg and k.mask.tobytes().hex()[:64] not in cfg
    # the key is never written next to the data, and never overwritten silently
    assert (
        main(
            [
                "protect",
                "instahide",
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(out),
                "--key",
                str(out / "k.safetensors"),
            ]
        )
        == 2
    )
    assert "apart from the data" in capsys.readouterr().err
    assert (
        main(
            ["protect", "instahide", "--in", str(tmp_path / "d.npz"), "--out", str(tmp_path / "e2"), "--key", str(key)]
        )
        == 2
    )
    assert (
        main(
            [
                "protect",
                "instahide",
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "e3"),
                "--key",
                str(tmp_path / "k3.safetensors"),
                "--mode",
                "cross",
            ]
        )
        == 2
    )
    assert "needs --public" in capsys.readouterr().err


def test_train_command_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["--quiet", "train", "--data", str(tmp_path / "missing.npz"), "--test", "bundled:digits"]) == 2
    capsys.readouterr()
    g = np.random.default_rng(0)
    imgs = g.integers(0, 256, (120, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "tr.npz", images=imgs, labels=np.arange(120) % 4)
    np.savez(tmp_path / "te.npz", images=imgs[:40], labels=np.arange(40) % 4)
    args = [
        "--quiet",
        "train",
        "--data",
        str(tmp_path / "tr.npz"),
        "--test",
        str(tmp_path / "te.npz"),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--precision",
        "fp32",
        "--seed",
        "0",
        "--scheme",
        "instahide",
        "--k",
        "2",
        "--out",
        str(tmp_path / "run2"),
    ]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert len(metrics["accuracy_curve"]["y"]["test accuracy"]) == 2
    assert (tmp_path / "run2" / "checkpoint.pt").is_file()
    resume = args[:-2] + ["--resume", str(tmp_path / "run2")]
    assert main(resume) == 0  # already finished: resumes to the same end state
    # a resumed run refuses anything that differs from the run it resumes
    np.savez(tmp_path / "other.npz", images=imgs[::-1].copy(), labels=np.arange(120) % 4)
    capsys.readouterr()
    other = [a if a != str(tmp_path / "tr.npz") else str(tmp_path / "other.npz") for a in resume]
    assert main(other) == 2 and "other training data" in capsys.readouterr().err
    reseeded = [a if a != "0" else "1" for a in resume]
    assert main(reseeded) == 2 and "seed" in capsys.readouterr().err
    assert main(resume[: resume.index("--k")] + ["--k", "3"] + resume[resume.index("--k") + 2 :]) == 2
    assert "scheme settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scheme, extra",
    [("disguise", ["--set", "transform=aes"]), ("disguise", []), ("instahide", ["--k", "4", "--mode", "cross"])],
)
def test_protect_then_reveal_round_trip(tmp_path: Path, scheme: str, extra: list[str]) -> None:
    g = np.random.default_rng(1)
    imgs = g.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs, labels=np.arange(24) % 3)
    np.savez(tmp_path / "pool.npz", images=g.integers(0, 256, (120, 16, 16, 3), dtype=np.uint8))
    key = tmp_path / "k.safetensors"
    pub = ["--public", str(tmp_path / "pool.npz")] if scheme == "instahide" else []
    assert (
        main(
            [
                "--quiet",
                "protect",
                scheme,
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "enc"),
                "--key",
                str(key),
                "--seed",
                "0",
                "--run-out",
                str(tmp_path / "run"),
                *extra,
                *pub,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "reveal",
                scheme,
                "--in",
                str(tmp_path / "enc" / "encodings.npy"),
                "--key",
                str(key),
                "--out",
                str(tmp_path / "back.npz"),
            ]
        )
        == 0
    )
    back = np.load(tmp_path / "back.npz")["images"]
    if scheme == "instahide":  # float32 mixing, then a sparse solve: within a grey level or two
        assert np.abs(back.astype(int) - imgs).max() <= 2 or np.mean(back == imgs) > 0.95
    else:
        assert np.array_equal(back, imgs)
    assert (
        main(
            [
                "reveal",
                "instahide" if scheme == "disguise" else "disguise",
                "--in",
                str(tmp_path / "enc" / "encodings.npy"),
                "--key",
                str(key),
                "--out",
                str(tmp_path / "x.npz"),
            ]
        )
        == 2
    )
