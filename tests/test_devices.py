"""Devices: ``--device auto|cpu|cuda[:N]|mps`` on every command that runs a model, ``device=`` in the workflows.

This machine has no GPU: the tests check the names, the one-line errors for a device torch does not have, that
``cpu`` changes no result, and that every attack that declares ``uses_device`` takes ``device=``. The GPU paths are
exercised by ``benchmarks/gpu_smoke.py`` on a machine with one.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from masquerade.contracts import device_arguments, uses_device
from masquerade.devices import check_device_name, resolve_device
from masquerade.errors import InputError
from masquerade.registry import ATTACKS, create_attack, run_attack

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps", " CPU "])
def test_device_names_we_know(name: str) -> None:
    assert check_device_name(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda0", "tpu", "", "cpu:0", "cuda:1:2"])
def test_other_device_names_are_one_line_errors(name: str) -> None:
    with pytest.raises(InputError, match="unknown device") as exc:
        check_device_name(name)
    assert "\n" not in str(exc.value) and "auto, cpu, cuda, cuda:N or mps" in str(exc.value)


def test_cpu_and_auto_resolve_here() -> None:
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        want = "mps"
    assert resolve_device("auto").type == want


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_one_line_error(name: str) -> None:
    with pytest.raises(InputError, match=rf"device {name}: this machine's torch .* use --device cpu or auto"):
        resolve_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_a_one_line_error() -> None:
    with pytest.raises(InputError, match="no usable MPS"):
        resolve_device("mps")


def test_every_attack_that_declares_a_device_takes_one() -> None:
    takers = []
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        if uses_device(cls):
            assert "device" in inspect.signature(cls.run).parameters, name
            takers.append(name)
        else:
            assert device_arguments(cls, torch.device("cpu")) == {}
    # the attacks that train or optimise a model
    assert {
        "inverting_gradients",
        "dlg",
        "ats-adaptive",
        "feature-inversion",
        "feature-attribute",
        "instahide-challenge",
        "aes-ecb-codebook",
        "aes-ecb-frequency",
    } <= set(takers)


def test_a_device_that_is_not_a_flag_is_refused() -> None:
    class Odd:
        name = "odd"
        uses_device = "yes"

    with pytest.raises(InputError, match="uses_device must be true or false"):
        uses_device(Odd)


def test_gradient_inversion_on_cpu_is_the_run_without_a_device() -> None:
    from masquerade.attacks.gradient_inversion import client_gradient
    from masquerade.models import create_model

    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global generator
        torch.manual_seed(0)
        model = create_model("convnet16", num_classes=10, in_channels=1).eval()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3])
    grads = client_gradient(model, x, y)
    runs = []
    for device in (None, "cpu"):
        atk = create_attack(
            "inverting_gradients", iterations=5, restarts=1, image_shape=(1, 32, 32), mean=(0.5,), std=(0.5,)
        )
        runs.append(run_attack(atk, model=model, gradients=grads, labels=y, rng=1, device=device))
    assert torch.equal(runs[0].reconstructions, runs[1].reconstructions)
    assert runs[0].reconstructions.device.type == "cpu"


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_an_attack_asked_for_cuda_here_fails_in_one_line() -> None:
    atk = create_attack("dlg", iterations=1)
    with pytest.raises(InputError, match="device cuda"):
        run_attack(atk, model=torch.nn.Linear(2, 2), gradients=[], labels=None, device="cuda")


def _help(command: list[str]) -> str:
    """What ``masquerade COMMAND --help`` prints (in this process: the parsers import no torch)."""
    from masquerade.cli import build_parser
    from masquerade.cli.attack import attack_parser

    if command[0] == "attack":
        return attack_parser(command[1]).format_help()
    parser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser.format_help()


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["search"],
        ["camouflage"],
        ["evaluate"],
        ["challenge", "attack"],
        ["challenge", "prepare"],
        ["attack", "inverting_gradients"],
        ["attack", "feature-inversion"],
        ["attack", "instahide-challenge"],
    ],
)
def test_model_commands_offer_a_device(command: list[str]) -> None:
    text = " ".join(_help(command).split())
    assert "--device DEVICE" in text and "cuda:N" in text


def test_attacks_without_models_offer_no_device() -> None:
    assert "--device" not in _help(["attack", "disguise-moments"])


def test_a_bad_device_name_is_a_usage_error() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "masquerade",
            "train",
            "--data",
            "bundled:digits",
            "--test",
            "bundled:digits",
            "--device",
            "gpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "unknown device 'gpu'" in out.stderr


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", "bundled:digits", "--test", "bundled:digits", "--epochs", "1"],
        ["evaluate", "--quick", "--out", "{tmp}/ev"],
        ["camouflage", "--in", "bundled:photos", "--out", "{tmp}/cam"],
        ["challenge", "attack", "{tmp}/nochallenge", "--out", "{tmp}/att"],
    ],
)
def test_cuda_on_a_machine_without_it_is_refused_before_any_work(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from masquerade.cli import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    assert main(["--quiet", *argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device cuda: this machine's torch" in err
    assert not (tmp_path / "cam").exists() and not (tmp_path / "ev").exists()


def test_training_on_cpu_is_the_training_without_a_device() -> None:
    from masquerade.data import load_images
    from masquerade.training import TrainSettings, train

    digits = load_images("bundled:digits", size=32)
    tr, te = digits.select(np.arange(200)), digits.select(np.arange(200, 300))
    s = TrainSettings(model="convnet16", epochs=1, batch_size=64, lr=0.05, augment=False, precision="fp32")
    a = train(tr, te, settings=s, seed=3, progress=False)
    b = train(tr, te, settings=s, seed=3, progress=False, device="cpu")
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["test_acc"] == b["test_acc"] and b["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in b["model_state"].parameters())
