"""The ATS commands end to end on tiny data cut from the bundled photos: train --policy, search, attack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masquerade.cli import main
from masquerade.data import load_images


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 labelled 32×32 crops: 10 from each of 6 bundled photos (label = photo)."""
    photos = load_images("bundled:photos", size=(96, 96)).images[:6]
    g = np.random.default_rng(0)
    imgs, labels = [], []
    for i, p in enumerate(photos):
        for _ in range(10):
            y, x = g.integers(0, 64, 2)
            imgs.append(p[y : y + 32, x : x + 32])
            labels.append(i)
    path = tmp_path_factory.mktemp("ats") / "crops.npz"
    np.savez(path, images=np.stack(imgs), labels=np.array(labels), classes=np.array([f"p{i}" for i in range(6)]))
    return path


def test_train_with_policy_search_and_attack(crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "train"
    assert (
        main(
            [
                "--quiet",
                "train",
                "--data",
                str(crops),
                "--test",
                str(crops),
                "--model",
                "convnet16",
                "--epochs",
                "2",
                "--policy",
                "3-1-7+43-18-18",
                "--snapshots",
                "1",
                "--seed",
                "0",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert (run / "model.safetensors").is_file() and (run / "model-epoch1.safetensors").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert "3-1-7+43-18-18" in json.dumps(cfg)

    out = tmp_path / "search"
    assert (
        main(
            [
                "--quiet",
                "search",
                "--data",
                str(crops),
                "--pool",
                str(crops),
                "--model",
                "convnet16",
                "--share",
                "0.5",
                "--epochs",
                "1",
                "--policies",
                "none,3-1-7",
                "--also",
                "21-13",
                "--keep",
                "1",
                "--workers",
                "1",
                "--acc-threshold=-1e9",
                "--set",
                "privacy_images=4",
                "--set",
                "acc_images=4",
                "--set",
                "acc_runs=2",
                "--set",
                "bins=4",
                "--seed",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "search.json").read_text())
    assert {r["policy"] for r in res["table"]} == {"none", "3-1-7", "21-13"} and len(res["chosen"]) == 1
    assert (out / "scores.jsonl").is_file() and len((out / "scores.jsonl").read_text().splitlines()) == 3
    # resuming recomputes nothing and gives the same table
    assert (
        main(
            [
                "--quiet",
                "search",
                "--data",
                str(crops),
                "--pool",
                str(crops),
                "--model",
                "convnet16",
                "--policies",
                "none,3-1-7",
                "--also",
                "21-13",
                "--keep",
                "1",
                "--workers",
                "1",
                "--acc-threshold=-1e9",
                "--set",
                "privacy_images=4",
                "--set",
                "acc_images=4",
                "--set",
                "acc_runs=2",
                "--set",
                "bins=4",
                "--seed",
                "0",
                "--resume",
                str(out),
            ]
        )
        == 0
    )
    assert len((out / "scores.jsonl").read_text().splitlines()) == 3

    att = tmp_path / "attack"
    assert (
        main(
            [
                "--quiet",
                "attack",
                "inverting_gradients",
                "--model-file",
                str(run / "model-epoch1.safetensors"),
                "--data",
                str(crops),
                "--images",
                "2",
                "--iterations",
                "5",
                "--policy",
                "3-1-7",
                "--classifier",
                str(run / "model.safetensors"),
                "--rating-set",
                "--seed",
                "1",
                "--out",
                str(att),
            ]
        )
        == 0
    )
    m = json.loads((att / "metrics.json").read_text())
    assert m["images"] == 2 and "mr" in m and np.isfinite(m["psnr"])
    assert (att / "reconstructions.png").is_file() and (att / "rating" / "manifest.json").is_file()
    assert main(["report", str(att), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Rating set (4 images)" in page and "r0003" in page
    assert '"condition"' not in page and "answers.json" not in page  # the report never names a condition
    capsys.readouterr()


def test_cli_refuses_bad_input(crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["train", "--data", str(crops), "--test", str(crops), "--policy", "99", "--out", str(tmp_path / "a")]) == 2
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(crops),
                "--test",
                str(crops),
                "--scheme",
                "instahide",
                "--policy",
                "3",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(crops),
                "--test",
                str(crops),
                "--epochs",
                "2",
                "--snapshots",
                "5",
                "--policy",
                "3",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    (tmp_path / "x.safetensors").write_bytes(b"nope")
    assert (
        main(["attack", "inverting_gradients", "--model-file", str(tmp_path / "x.safetensors"), "--data", str(crops)])
        == 2
    )
    err = capsys.readouterr().err
    assert "sub-policies are numbered" in err and "not a masquerade model file" in err


def test_a_search_killed_mid_line_resumes_from_its_good_scores(tmp_path: Path) -> None:
    from masquerade.workflows.train import _scores_done

    partial = tmp_path / "scores.jsonl"
    good = [{"policy": "3-1-7", "s_pri": -0.1, "s_acc": 0.8}, {"policy": "43-18-18", "s_pri": -0.2, "s_acc": 0.7}]
    lines = [
        json.dumps(good[0]),
        "[" * 50_000,
        json.dumps({"policy": 1, "s_pri": 0, "s_acc": 0}),
        json.dumps({"policy": "x"}),
        "1" * 5000,
        json.dumps(good[1]),
        '{"policy": "21-13-3", "s_p',
    ]
    partial.write_text("\n".join(lines))  # the last line cut short by a kill
    assert _scores_done(partial) == good
    assert partial.read_text() == "".join(json.dumps(g) + "\n" for g in good)
    with partial.open("a") as f:  # the next score appends on a line of its own
        f.write(json.dumps({"policy": "21-13-3", "s_pri": 0.0, "s_acc": 0.5}) + "\n")
    assert [d["policy"] for d in _scores_done(partial)] == ["3-1-7", "43-18-18", "21-13-3"]
    assert _scores_done(tmp_path / "none.jsonl") == []
