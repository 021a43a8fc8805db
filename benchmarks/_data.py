"""Shared by the benchmarks: where the data sets are.

The data folder is, in order: the ``--data DIR`` option, the environment variable ``MASQUERADE_BENCH_DATA``, and
only then ``<repo>/../shared/data`` (where a development checkout keeps it). A script adds the option with
:func:`add_data_option`, resolves it with :func:`data_dir` and checks what it reads with :meth:`DataDir.require`,
which ends the script with one line naming the folder, where that folder came from, and how to choose another::

    ap = argparse.ArgumentParser()
    add_data_option(ap, "cifar10-test.npz")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-test.npz")
    images = load_images(data / "cifar10-test.npz")

The folder's layout (``cifar10-test.npz``, ``cifar10-train-20k.npz``, ``imagenet-sample/``) is described in its own
README.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_VAR", "DEFAULT_DATA", "DataDir", "data_dir", "add_data_option"]

ENV_VAR = "MASQUERADE_BENCH_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # <repo>/../shared/data


@dataclass(frozen=True)
class DataDir:
    """The resolved data folder and where the choice came from (``--data``, the variable, or the default)."""

    path: Path
    source: str

    @property
    def explicit(self) -> bool:
        """True when the folder was chosen (``--data`` or the variable), not the fallback default."""
        return self.source != "default"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def has(self, *names: str) -> bool:
        """Whether every name exists in the folder (a file or a folder)."""
        return all((self.path / n).exists() for n in names)

    def require(self, *names: str) -> None:
        """End the script with one line when any of ``names`` is missing from the folder."""
        missing = [n for n in names if not (self.path / n).exists()]
        if missing:
            where = {"--data": "given by --data", "env": f"from ${ENV_VAR}", "default": "the default"}[self.source]
            sys.exit(
                f"{Path(sys.argv[0]).name}: {', '.join(missing)} not found in the data folder {self.path} "
                f"({where}); choose the folder with --data DIR or ${ENV_VAR}"
            )


def data_dir(option: str | os.PathLike[str] | None = None) -> DataDir:
    """The data folder: ``option`` (the ``--data`` value), else ``$MASQUERADE_BENCH_DATA``, else the default."""
    if option:
        return DataDir(Path(option).expanduser(), "--data")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return DataDir(Path(env).expanduser(), "env")
    return DataDir(DEFAULT_DATA, "default")


def add_data_option(ap: argparse.ArgumentParser, needs: str) -> None:
    """Add ``--data DIR`` to a script's parser; ``needs`` says what the script reads from the folder."""
    ap.add_argument(
        "--data", metavar="DIR", help=f"data folder with {needs} (default: ${ENV_VAR}, else <repo>/../shared/data)"
    )
