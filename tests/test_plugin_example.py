"""The example plugin in ``examples/blockshuffle``: installed into a throw-away site folder the way a researcher
installs their own package, it shows in ``masquerade list`` and the scorecard scores it, with its own attack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "blockshuffle"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built and installed (its dist-info and entry points) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    return target


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "masquerade", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_the_installed_example_is_listed(site: Path) -> None:
    out = _cli(site, "list")
    assert out.returncode == 0, out.stderr
    assert "blockshuffle " in out.stdout and "blockshuffle-means" in out.stdout
    bare = subprocess.run([sys.executable, "-m", "masquerade", "list"], capture_output=True, text=True)
    assert "blockshuffle" not in bare.stdout  # nothing of it outside the environment it was installed in


def test_protect_and_reveal_take_the_example_like_any_scheme(site: Path, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "shuffle.safetensors"
    out = _cli(
        site,
        "protect",
        "blockshuffle",
        "--in",
        "bundled:digits",
        "--out",
        str(tmp_path / "shuffled"),
        "--key",
        str(key),
        "--set",
        "block=2",
    )
    assert out.returncode == 0, out.stderr
    back = _cli(
        site,
        "reveal",
        "blockshuffle",
        "--in",
        str(tmp_path / "shuffled" / "encodings.npy"),
        "--key",
        str(key),
        "--out",
        str(tmp_path / "revealed.npz"),
    )
    assert back.returncode == 0, back.stderr
    import masquerade as mq

    revealed = mq.load_images(str(tmp_path / "revealed.npz")).images
    assert np.array_equal(revealed, mq.load_images("bundled:digits").images)
    bad = _cli(
        site,
        "protect",
        "blockshuffle",
        "--in",
        "bundled:digits",
        "--out",
        str(tmp_path / "bad"),
        "--key",
        str(tmp_path / "keys" / "bad.safetensors"),
        "--set",
        "block=3",
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "block 3" in bad.stderr


def test_the_scorecard_scores_the_example_with_the_generic_attack_and_its_own(site: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _cli(
        site,
        "evaluate",
        "--quick",
        "--schemes",
        "blockshuffle",
        "--out",
        str(run),
        "--levels",
        "1,2",
        "--train",
        "200",
        "--test",
        "100",
        "--targets",
        "6",
        "--pairs",
        "10",
        "--auxiliary",
        "100",
        "--epochs",
        "1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r for r in json.loads((run / "scorecard.json").read_text())["rows"] if r["scheme"] == "blockshuffle"]
    by = {(r["level"], r["attack"]): r for r in rows}
    assert by[(1, "as-is")]["success"] < 0.5  # shuffled and turned blocks hide the digits
    assert by[(2, "blockshuffle-means")]["success"] >= 0.8  # the distribution's mean blocks undo the key
    assert any(r.get("utility") is not None for r in rows)


def test_the_example_scheme_round_trips_and_its_attack_needs_the_right_distribution() -> None:
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        from masquerade_blockshuffle import BlockShuffle, MeanBlocks
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
    import masquerade as mq
    from masquerade.metrics import ssim

    digits = mq.load_images("bundled:mnist").to_tensor()
    pick = np.random.default_rng(0).permutation(len(digits))
    x, aux = digits[pick[:300]], digits[pick[300:600]]
    s = BlockShuffle()
    key = s.keygen(0, rng=1, shape=(1, 28, 28))
    z = s.encode(x, key)
    assert torch.equal(s.decode(z, key), x) and not torch.equal(z, x)
    r = MeanBlocks().run(encodings=z, auxiliary=aux)
    assert float(ssim(r.reconstructions, x, data_range=1.0).mean()) > 0.9
    noise = MeanBlocks().run(encodings=z, auxiliary=torch.rand_like(aux))
    assert float(ssim(noise.reconstructions, x, data_range=1.0).mean()) < 0.5
