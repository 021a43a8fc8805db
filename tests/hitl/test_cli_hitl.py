"""``masquerade hitl``: bad rating sets and study files are one line and exit 2; a missing extra names it; the
command line still answers --help without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from masquerade.cli import main

from .conftest import make_choice_set


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.timeout(60)
def test_bad_sets_and_databases_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_choice_set(tmp_path / "good", n=2)
    db = ["--db", str(tmp_path / "s.sqlite"), "--port", "0"]
    assert "not a folder" in _err(capsys, ["hitl", "serve", str(tmp_path / "nowhere"), *db])
    man = json.loads((good / "manifest.json").read_text())
    cases = {
        "version": {**man, "version": 7},
        "question_type": {**man, "question_type": "essay"},
        "appears twice": {**man, "items": man["items"] + man["items"][:1]},
        "under images/": {**man, "items": [{"id": "x", "image": "../answers.json"}]},
        "missing": {**man, "items": [{"id": "x", "image": "images/x.png"}]},
        "remove it from choices": {**man, "choices": ["cat", "unrecognisable"]},
    }
    for k, (what, bad) in enumerate(cases.items()):
        folder = tmp_path / f"bad-{k}"
        (folder / "images").mkdir(parents=True)
        for it in man["items"]:
            (folder / it["image"]).write_bytes((good / it["image"]).read_bytes())
        (folder / "manifest.json").write_text(json.dumps(bad))
        assert what in _err(capsys, ["hitl", "serve", str(folder), *db]), what
    (good / "images" / "r0001.png").write_bytes(b"GIF89a" + b"\0" * 40)
    assert "not a PNG" in _err(capsys, ["hitl", "serve", str(good), *db])
    assert not (tmp_path / "s.sqlite").exists()  # nothing made for a set that was refused
    assert "no such study" in _err(capsys, ["hitl", "results", "--db", str(tmp_path / "none.sqlite")])
    other = make_choice_set(tmp_path / "other", n=2, seed=3)
    from masquerade.hitl.store import open_study

    open_study(tmp_path / "o.sqlite", [other]).close()
    other2 = make_choice_set(tmp_path / "third", n=2, seed=9)
    assert "made for other rating sets" in _err(
        capsys, ["hitl", "serve", str(other2), "--db", str(tmp_path / "o.sqlite"), "--port", "0"]
    )


def test_results_table_and_json_of_an_empty_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from masquerade.hitl.store import open_study

    open_study(tmp_path / "s.sqlite", [make_choice_set(tmp_path / "a", n=2)]).close()
    assert main(["hitl", "results", "--db", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "0 raters, 0 ratings" in out and "original" in out
    assert main(["hitl", "results", "--db", str(tmp_path / "s.sqlite"), "--json", "--csv"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ratings"] == 0 and {r["condition"] for r in res["rows"]} == {"original", "blurred"}
    assert (tmp_path / "a" / "ratings.csv").read_text() == "rater,id,choice\n"


def test_a_missing_extra_names_hitl_and_help_needs_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nsys.modules['starlette'] = None\nfrom masquerade.cli import main\n"
        f"sys.exit(main(['hitl', 'serve', {str(tmp_path)!r}, '--db', 'x.sqlite']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'masquerade[hitl]'" in r.stderr
    code = (
        "import sys\nfrom masquerade.cli import main\ntry:\n    main(['hitl', 'serve', '--help'])\n"
        "except SystemExit:\n    pass\nassert 'torch' not in sys.modules and 'starlette' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
