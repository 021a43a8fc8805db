"""Training under torchrun (DistributedDataParallel, 2 gloo processes on the CPU) follows the single-process run:
the same keys, the same batches, batch statistics pooled over both processes, so the weights agree to float
rounding; only rank 0 writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from masquerade import distributed


def test_outside_a_process_group_nothing_changes() -> None:
    assert distributed.world() == (0, 1)
    idx = torch.arange(10)
    mine, factor = distributed.shard(idx)
    assert torch.equal(mine, idx) and factor == pytest.approx(0.1)
    bn = torch.nn.BatchNorm2d(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), bn)
    assert distributed.wrap(model) is model
    synced = distributed.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)))
    assert isinstance(synced[1], distributed.CPUSyncBatchNorm)
    x = torch.randn(4, 1, 6, 6)
    synced[0].load_state_dict(model[0].state_dict())
    torch.testing.assert_close(synced(x), model(x))  # a world of one: plain batch normalisation
    assert distributed.mean_over_world(2.5) == 2.5


def _train(args: list[str], out: Path, *, procs: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "masquerade", "train", *args, "--out", str(out)]
    if procs > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
            "-m",
            "masquerade",
            "train",
            *args,
            "--out",
            str(out),
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASQUERADE_THREADS="1")
    return _launch(cmd, env, fresh=out)


# Known, not fixed: gloo's teardown sometimes aborts a process as it exits after a complete run ("terminate called
# without an active exception", about one launch in three here); a launch that ended that way is retried.
_TEARDOWN = "terminate called without an active exception"


def _launch(
    cmd: list[str], env: dict[str, str] | None = None, *, fresh: Path | None = None
) -> subprocess.CompletedProcess[str]:
    import shutil

    for _ in range(3):
        if fresh is not None and fresh.exists():
            shutil.rmtree(fresh)  # a retried run starts from an empty run folder
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if r.returncode == 0 or _TEARDOWN not in r.stderr:
            return r
    return r


def _digits(path: Path, n: int | None = None) -> Path:
    """The bundled digits with a little noise (their flat backgrounds tie in max-pooling, where a rounding
    difference moves a whole pooled gradient), the first ``n`` of them."""
    import numpy as np

    from masquerade.data import load_images

    ds = load_images("bundled:digits")
    g = np.random.default_rng(0)
    noisy = np.clip(ds.images.astype(np.int16) + g.integers(0, 24, ds.images.shape), 0, 255).astype(np.uint8)
    np.savez(path, images=noisy[:n], labels=ds.labels[:n])
    return path


@pytest.mark.slow
def test_two_gloo_processes_train_the_single_process_model(tmp_path: Path) -> None:
    # four steps of batch 64 (two per process): the weights must agree to float rounding. Over many steps two
    # fp32 runs that sum in different orders drift apart like any two such runs (measured: 56 steps on all the
    # digits, test accuracy 0.774 vs 0.777), and a single process's fp32 gradient is itself only 2e-3 from float64
    # at batch 1,797; a few steps show the mathematics is the same.
    train, test = str(_digits(tmp_path / "train.npz", 128)), str(_digits(tmp_path / "test.npz"))
    args = [
        "--data",
        train,
        "--test",
        test,
        "--scheme",
        "instahide",
        "--set",
        "k=2",
        "--set",
        "pixel_scale=[0,1]",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--schedule",
        "step",
        "--no-augment",
        "--precision",
        "fp32",
        "--seed",
        "3",
    ]
    one = _train(args, tmp_path / "one", procs=1)
    assert one.returncode == 0, one.stderr
    two = _train(args, tmp_path / "two", procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test accuracy") == 1  # rank 0 reports; rank 1 writes nothing
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True)["model"] for n in ("one", "two"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)  # updates are ~1e-3
    acc = [json.loads((tmp_path / n / "metrics.json").read_text())["test_acc"] for n in ("one", "two")]
    assert acc[0] == acc[1]
    # the control: another seed's keys give other weights, so the comparison above can fail
    other = _train([*args[:-1], "4"], tmp_path / "other", procs=2)
    assert other.returncode == 0
    c = torch.load(tmp_path / "other" / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.allclose(c["linear.weight"], a["linear.weight"], rtol=1e-4, atol=2e-5)


@pytest.mark.slow
def test_without_a_seed_every_process_draws_the_same_one_time_keys(tmp_path: Path) -> None:
    script = tmp_path / "draw.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from masquerade import distributed\n"
        "distributed.init_from_env()\n"
        "g = distributed.shared_secure_rng()\n"
        "rank = distributed.world()[0]\n"
        "Path(sys.argv[1], f'draw{rank}.txt').write_text(str(g.integers(0, 2**62, 4).tolist()))\n"
        "distributed.shutdown()\n"
    )
    draws = []
    for i in range(2):
        out = tmp_path / f"launch{i}"
        out.mkdir()
        r = _launch(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
        )
        assert r.returncode == 0, r.stderr[-3000:]
        mine = [(out / f"draw{rank}.txt").read_text() for rank in (0, 1)]
        assert mine[0] == mine[1]  # both processes hold the same generator
        draws.append(mine[0])
    assert draws[0] != draws[1]  # from OS randomness: never the same twice
