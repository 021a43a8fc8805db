"""Models and data that do not fit each other: one line and exit 2 at the boundary, never torch's traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from masquerade.cli import main
from masquerade.errors import InputError
from masquerade.models import Normalized, create_model, load_model, save_model
from masquerade.models.resnet import check_input


def test_a_model_refuses_images_of_another_size_or_channel_count(tmp_path: Path) -> None:
    m = Normalized(create_model("resnet20", num_classes=10, in_channels=1), [0.5], [0.25], image_size=(28, 28))
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(InputError, match="trained on 28×28 images, got 8×8"):
        m(torch.zeros(2, 1, 8, 8))
    with pytest.raises(InputError, match="N×1×H×W"):
        m(torch.zeros(2, 3, 28, 28))
    save_model(tmp_path / "m.safetensors", m, arch="resnet20", num_classes=10, mean=[0.5], std=[0.25], in_channels=1)
    back = load_model(tmp_path / "m.safetensors")
    assert back.image_size == (28, 28)
    with pytest.raises(InputError, match="m.safetensors: .*28×28"):
        back.check_takes((1, 16, 16), what=str(tmp_path / "m.safetensors"))
    # a file without the size (older, or another tool's) is probed with one image instead
    bare = Normalized(create_model("convnet16", num_classes=10, in_channels=1), [0.5], [0.25])
    with pytest.raises(InputError, match="does not take 1×8×8 images") as e:
        bare.check_takes((1, 8, 8))
    assert "\n" not in str(e.value)
    bare.check_takes((1, 32, 32))
    with pytest.raises(InputError, match="convnet16 does not take 3×16×16"):
        check_input("convnet16", (3, 16, 16), what="--inversion-model")
    check_input("fastresnet", (3, 16, 16))


def test_damaged_size_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    m = Normalized(create_model("resnet20", num_classes=10, in_channels=1), [0.5], [0.25], image_size=(28, 28))
    path = save_model(
        tmp_path / "m.safetensors", m, arch="resnet20", num_classes=10, mean=[0.5], std=[0.25], in_channels=1
    )
    from masquerade.models.io import read_safetensors

    meta, _ = read_safetensors(path, "model")
    for bad in ("[28]", "[0, 28]", '["a", 1]', "[" * 10000, "[28, 1e999]"):
        save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata={**meta, "image_size": bad})
        with pytest.raises(InputError, match="image_size|nested|JSON"):
            load_model(tmp_path / "bad.safetensors")


def test_attacks_refuse_models_and_data_that_do_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conv = Normalized(create_model("convnet16", num_classes=10, in_channels=1), [0.5], [0.25])
    save_model(
        tmp_path / "conv.safetensors", conv, arch="convnet16", num_classes=10, mean=[0.5], std=[0.25], in_channels=1
    )
    res = Normalized(create_model("resnet20", num_classes=10, in_channels=1), [0.5], [0.25], image_size=(28, 28))
    save_model(
        tmp_path / "api.safetensors", res, arch="resnet20", num_classes=10, mean=[0.5], std=[0.25], in_channels=1
    )
    g = np.random.default_rng(0)
    np.save(tmp_path / "f7.npy", g.random((20, 7)).astype(np.float32))
    np.save(tmp_path / "f64.npy", g.random((20, 64)).astype(np.float32))
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28, 1), np.uint8), labels=np.zeros(0, np.int64))
    cases = [
        (
            [
                "attack",
                "inverting_gradients",
                "--model-file",
                str(tmp_path / "conv.safetensors"),
                "--data",
                "bundled:digits",
                "--images",
                "1",
                "--iterations",
                "2",
            ],
            "does not take 1×8×8 images",
        ),
        (
            [
                "attack",
                "feature-attribute",
                "--api-model",
                str(tmp_path / "api.safetensors"),
                "--aux",
                "bundled:mnist",
                "--encodings",
                str(tmp_path / "f7.npy"),
                "--epochs",
                "1",
            ],
            "7 numbers, the API's 64",
        ),
        (
            [
                "attack",
                "feature-inversion",
                "--api-model",
                str(tmp_path / "api.safetensors"),
                "--aux",
                str(tmp_path / "empty.npz"),
                "--encodings",
                str(tmp_path / "f64.npy"),
                "--epochs",
                "1",
            ],
            "holds no images",
        ),
        (
            [
                "attack",
                "feature-attribute",
                "--api-model",
                str(tmp_path / "api.safetensors"),
                "--aux",
                "bundled:digits",
                "--encodings",
                str(tmp_path / "f64.npy"),
                "--epochs",
                "1",
            ],
            "trained on 28×28 images, got 8×8",
        ),
    ]
    for i, (args, msg) in enumerate(cases):
        capsys.readouterr()
        assert main([*args, "--out", str(tmp_path / f"run{i}")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err


def test_evaluate_skips_the_gradient_settings_its_federated_model_cannot_take() -> None:
    from masquerade.workflows.evaluate import EvaluateSettings
    from masquerade.workflows.evaluate.cells import data_for, unfit

    s = EvaluateSettings.for_quick(size=16, schemes=("identity", "ats"), train=40, test=20, auxiliary=20)
    skipped = unfit(s, data_for(s))
    ats = [st.label for st in s.chosen() if st.shares == "gradients"]
    assert ats and set(skipped) == set(ats)
    assert all("--inversion-model convnet16 does not take" in why for why in skipped.values())
