"""Broken model files for camouflage: damaged archives, programs that fail on photos or return something else
than scores, weights that are not KonCept512's. Each is one line and exit 2, never torch's traceback or log."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from masquerade.cli import main


class _Tuple(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((1, 2, 3)), x


class _Fixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    junk = bytes(range(256)) * 20
    for name in ("junk.pt2", "junk.pt", "junk.pth"):
        (d / name).write_bytes(junk)
    for name, member in (("zip.pt2", "a/data.pkl"), ("zip.pth", "archive/data.pkl")):
        with zipfile.ZipFile(d / name, "w") as z:
            z.writestr(member, b"garbage")
    with warnings.catch_warnings():  # TorchScript is deprecated; users still ship models that way
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Tuple()).save(str(d / "tuple.pt"))
        torch.jit.script(_Fixed()).save(str(d / "fixed.pt"))
    torch.save({"a": 1, "b": "text"}, d / "notensors.pth")
    torch.save([torch.zeros(3)], d / "list.pth")
    torch.save({"conv.weight": torch.zeros(2, 2)}, d / "other.pth")
    return d


@pytest.mark.parametrize(
    "model, message",
    [
        ("junk.pt2", "not a TorchScript (.pt) or torch.export (.pt2) model"),
        ("junk.pt", "not a TorchScript (.pt) or torch.export (.pt2) model"),
        ("zip.pt2", "not a TorchScript (.pt) or torch.export (.pt2) model"),
        ("tuple.pt", "must return one score per photo"),
        ("fixed.pt", "the model fails on photos"),
        ("koncept512:junk.pth", "not a PyTorch weights file"),
        ("koncept512:zip.pth", "not a PyTorch weights file"),
        ("koncept512:notensors.pth", "not a KonCept512 state dict"),
        ("koncept512:list.pth", "not a KonCept512 state dict"),
        ("koncept512:other.pth", "not a KonCept512 state dict"),
    ],
)
def test_a_broken_model_file_is_one_line(
    broken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    spec = f"koncept512:{broken / model.split(':')[1]}" if ":" in model else str(broken / model)
    rc = main(
        [
            "--quiet",
            "camouflage",
            "--in",
            "bundled:photos",
            "--out",
            str(tmp_path / "out"),
            "--model",
            spec,
            "--steps",
            "1",
            "--run-out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
