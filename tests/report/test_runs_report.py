from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masquerade.errors import InputError, MasqueradeError
from masquerade.fileio import atomic_open, parse_json, read_json, save_npy, write_json
from masquerade.report import build_report
from masquerade.runs import image_grid, start_run
from tests.test_keys import make_key


def test_run_folder_layout_and_report(tmp_path: Path) -> None:
    key = make_key()
    with start_run("unit", root=tmp_path) as run:
        run.write_config({"k": 4, "key": key, "nested": {"a": [1, 2]}}, seed=11, keys={"train": key})
        run.add_metrics(
            acc=0.5,
            table=[{"a": 1, "b": 2.5}, {"a": 2, "b": 3.5}],
            curve={"x": [1, 2, 3], "y": {"ssim": [0.1, 0.5, 0.9]}, "xlabel": "t"},
        )
        run.add_metrics(loss=1.25)
        run.save_grid("samples", torch.rand(6, 3, 8, 8), ncol=3, caption="random <b>pixels</b>")
        run.log("hello log")
    assert run.path.parent == tmp_path / "unit"
    cfg = json.loads((run.path / "config.json").read_text())
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert cfg["seed"] == 11 and cfg["keys"]["train"]["fingerprint"] == key.fingerprint
    assert cfg["config"]["key"] == {"key_fingerprint": key.fingerprint, "scheme": "toy"}
    assert metrics["acc"] == 0.5 and metrics["loss"] == 1.25
    text = (run.path / "config.json").read_text() + (run.path / "log.txt").read_text()
    assert key.secret.hex() not in text and str(key.perm.tolist()) not in text
    assert "hello log" in (run.path / "log.txt").read_text()

    report = build_report([run.path])
    page = report.read_text()
    assert report == run.path / "report.html"
    assert page.count("data:image/png;base64,") == 2  # the grid and the plot
    assert "random &lt;b&gt;pixels&lt;/b&gt;" in page and "<th>table</th>" not in page
    assert "1.25" in page and key.fingerprint in page and key.secret.hex() not in page
    assert "<h3>table</h3>" in page


def test_two_runs_do_not_collide(tmp_path: Path) -> None:
    a = start_run("x", root=tmp_path)
    b = start_run("x", root=tmp_path)
    a.close()
    b.close()
    assert a.path != b.path
    with pytest.raises(InputError, match="not empty"):
        start_run("x", out=a.path)
    with pytest.raises(InputError, match="not a run folder"):
        build_report([tmp_path / "nothing"])


def test_image_grid_shapes() -> None:
    g = image_grid(np.zeros((5, 4, 6, 1), np.uint8), ncol=2, pad=1)
    assert g.shape == (3 * 5 + 1, 2 * 7 + 1, 3)
    with pytest.raises(InputError):
        image_grid(np.zeros((2, 4, 4, 3), np.float32))


def test_atomic_writes_leave_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write('{"a": 2')
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    save_npy(tmp_path / "x.npy", np.arange(4))
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2, 3]


@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
            max_leaves=10,
        ).map(json.dumps),
    )
)
@settings(max_examples=200, deadline=None)
def test_parse_json_returns_json_or_one_input_error(data: str | bytes) -> None:
    """Whatever the bytes, the reader gives the parsed value or an InputError naming the source, nothing else."""
    try:
        doc = parse_json(data, where="somewhere")
    except InputError as exc:
        assert str(exc).startswith("somewhere: ") and "\n" not in str(exc)
    else:
        assert doc == json.loads(data)


def test_hostile_json_in_run_folders_keys_and_models_is_one_line(tmp_path: Path) -> None:
    """Deep nesting and 4,300-digit integers (which escape a bare ValueError handler), wrong top-level types."""
    from safetensors.numpy import save_file

    from masquerade.keys import load_key
    from masquerade.models.io import load_model

    deep, huge = "[" * 50_000 + "]" * 50_000, '{"a": ' + "9" * 5000 + "}"
    run = tmp_path / "run"
    run.mkdir()
    for name, text, needle in (
        ("metrics.json", deep, "nested too deeply"),
        ("metrics.json", huge, "not valid JSON"),
        ("metrics.json", "[1, 2]", "expected an object"),
        ("captions.json", '"a caption"', "expected an object"),
    ):
        for f in run.iterdir():
            f.unlink()
        (run / "config.json").write_text("{}")
        (run / name).write_text(text)
        with pytest.raises(InputError, match=needle):
            build_report([run], tmp_path / "report.html")
    for meta in ({"masquerade": deep}, {"masquerade": huge}):
        save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / "k.safetensors"), metadata=meta)
        with pytest.raises(MasqueradeError):
            load_key(tmp_path / "k.safetensors")
    meta = {"arch": "convnet16", "num_classes": "10", "in_channels": "3", "mean": deep, "std": "[1, 1, 1]"}
    save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / "m.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="nested too deeply"):
        load_model(tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="not a regular file"):
        read_json(tmp_path)


def test_a_report_never_embeds_a_file_from_outside_its_run_folder(tmp_path: Path) -> None:
    """A link in a run folder (to an image, the log, a JSON file, a whole folder) is refused, not embedded."""
    secret = tmp_path / "secret"
    secret.mkdir()
    save_npy(secret / "x.npy", np.zeros(1))
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(secret / "private.png")
    (secret / "notes.txt").write_text("a private note")
    write_json(secret / "m.json", {"a": 1})
    cases = {"leak.png": secret / "private.png", "log.txt": secret / "notes.txt", "metrics.json": secret / "m.json"}
    for name, target in cases.items():
        run = tmp_path / f"run-{name}"
        run.mkdir()
        write_json(run / "config.json", {"command": "unit"})
        (run / name).symlink_to(target)
        with pytest.raises(InputError, match="leads out of the run folder"):
            build_report([run], tmp_path / "r.html")
        assert not (tmp_path / "r.html").exists()
    # a rating folder that is a link to images elsewhere
    run = tmp_path / "run-rating"
    run.mkdir()
    write_json(run / "config.json", {"command": "unit"})
    (secret / "manifest.json").write_text(json.dumps({"format": "masquerade-rating-set", "items": []}))
    (run / "rating").symlink_to(secret)
    with pytest.raises(InputError, match="leads out of the run folder"):
        build_report([run], tmp_path / "r.html")


_NUM = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)
_SERIES = st.fixed_dictionaries(
    {
        "x": st.one_of(st.lists(_NUM, max_size=6), _NUM, st.dictionaries(st.text(max_size=2), _NUM, max_size=2)),
        "y": st.one_of(
            st.dictionaries(st.text(max_size=3), st.one_of(st.lists(_NUM, max_size=6), _NUM), max_size=3),
            st.lists(_NUM, max_size=3),
            _NUM,
        ),
    },
    optional={"logx": st.one_of(st.booleans(), _NUM), "xlabel": st.one_of(_NUM, st.lists(_NUM, max_size=3))},
)


@settings(max_examples=60, deadline=None)
@given(series=_SERIES)
def test_any_plot_series_in_a_run_folder_renders_or_shows_as_values(series: dict) -> None:
    """metrics.json is read from disk: a series of strings, None, infinities, mismatched lengths or a log axis over
    negative x is shown as the values it holds (or plotted where it can be), never an internal error."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        (run / "metrics.json").write_text(json.dumps({"curve": series}))
        (run / "config.json").write_text("{}")
        page = build_report([run]).read_text()
        assert page.rstrip().endswith("</html>")
