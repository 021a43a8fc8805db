"""``camouflage --rating-set DIR`` (an appeal set of originals and outputs) and ``--run-code CODE`` (the MediaEval
Pixel Privacy submission layout)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from masquerade.data import load_images
from masquerade.hitl.ratingset import load_rating_set


@pytest.mark.slow
def test_camouflage_writes_an_appeal_set_and_the_submission_zip(tmp_path: Path, cli: Any) -> None:
    photos = load_images("bundled:photos", size=(96, 128)).images[:2]
    src = tmp_path / "photos"
    src.mkdir()
    for name, p in zip(["beach.png", "dog.jpg"], photos):
        Image.fromarray(p).save(src / name)
    r = cli(
        "camouflage",
        "--in",
        str(src),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "2",
        "--seed",
        "0",
        "--run-out",
        str(tmp_path / "run"),
        "--rating-set",
        str(tmp_path / "appeal"),
        "--run-code",
        "TEAM1",
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".masquerade-output",
        "TEAM1.zip",
        "TEAM1_beach.jpg",
        "TEAM1_dog.jpg",
    ]
    with zipfile.ZipFile(tmp_path / "o" / "TEAM1.zip") as z:
        assert sorted(z.namelist()) == ["TEAM1_beach.jpg", "TEAM1_dog.jpg"]
        assert z.read("TEAM1_dog.jpg") == (tmp_path / "o" / "TEAM1_dog.jpg").read_bytes()
    rs = load_rating_set(tmp_path / "appeal")
    assert rs.question_type == "appeal" and rs.answers_allowed == ("1", "2", "3", "4", "5") and len(rs.items) == 4
    answers = json.loads((tmp_path / "appeal" / "answers.json").read_text())
    assert sorted(a["condition"] for a in answers.values()) == ["camouflaged", "camouflaged", "original", "original"]
    for rid, a in answers.items():  # originals as given, outputs as their JPEG files decode
        shown = np.asarray(Image.open(rs.images[rid]))
        if a["condition"] == "original":
            want = np.asarray(Image.open(src / a["source"]).convert("RGB"))
        else:
            want = np.asarray(Image.open(tmp_path / "o" / a["file"]).convert("RGB"))
        assert np.array_equal(shown, want), rid
    assert not any("TEAM1" in p.name or "beach" in p.name for p in (tmp_path / "appeal" / "images").iterdir())


def test_bad_run_code_and_used_rating_set_folder_are_one_line(tmp_path: Path, cli: Any) -> None:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    r = cli("camouflage", "--in", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--run-code", "../x")
    assert r.returncode == 2 and "--run-code" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    r = cli(
        "camouflage",
        "--in",
        str(tmp_path / "a.png"),
        "--out",
        str(tmp_path / "o"),
        "--rating-set",
        str(tmp_path / "used"),
    )
    assert r.returncode == 2 and "not an empty folder" in r.stderr and not (tmp_path / "o").exists()
