"""Run folders: every command that computes something leaves ``runs/<command>/<timestamp>/`` behind.

A run folder holds ``config.json`` (resolved settings, seed, versions, key fingerprints -- never keys),
``metrics.json``, ``log.txt`` and PNG image grids; ``masquerade report`` builds its HTML from these files alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from masquerade._version import __version__
from masquerade.data.imageset import to_uint8
from masquerade.errors import InputError
from masquerade.fileio import read_json, save_png, write_json
from masquerade.keys import Key

__all__ = ["Run", "claim_output_dir", "output_dir", "refuse_overlap", "start_run", "image_grid", "versions"]

_log = logging.getLogger("masquerade")


def versions() -> dict[str, str]:
    import numpy
    import scipy
    import skimage

    return {
        "masquerade": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,  # type: ignore[attr-defined]  # its lazy-loader stub omits it
        "platform": platform.platform(),
    }


def image_grid(
    images: np.ndarray | torch.Tensor, *, ncol: int | None = None, pad: int = 2, scale: int = 1, background: int = 255
) -> np.ndarray:
    """Tile images (uint8 N×H×W×C, or float N×C×H×W in [0, 1]) into one uint8 H×W×3 picture."""
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        if t.ndim != 4:
            raise InputError(f"image_grid: expected N×C×H×W, got {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            t = to_uint8(t)
        arr = t.permute(0, 2, 3, 1).numpy()
    else:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.dtype != np.uint8:
            raise InputError(f"image_grid: numpy images must be uint8 N×H×W×C, got {arr.dtype}")
    if arr.ndim != 4 or len(arr) == 0:
        raise InputError(f"image_grid: nothing to tile (shape {arr.shape})")
    if arr.shape[3] == 1:
        arr = np.repeat(arr, 3, axis=3)
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = arr.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), background, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = arr[i]
    return grid


def _scrub(obj: Any) -> Any:
    """Replace keys by fingerprints anywhere in a config; refuse raw key bytes by name."""
    if isinstance(obj, Key):
        return {"key_fingerprint": obj.fingerprint, "scheme": obj.scheme}
    if isinstance(obj, dict):
        return {str(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj


class Run:
    """An open run folder. Use :func:`start_run`."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.command = command
        self.metrics: dict[str, Any] = {}
        self._handler = logging.FileHandler(path / "log.txt", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.logger = logging.getLogger(f"masquerade.run.{path.name}.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self._handler)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def log(self, message: str) -> None:
        self.logger.info(message)

    def write_config(
        self, config: dict[str, Any], *, seed: int | None = None, keys: dict[str, Key] | None = None
    ) -> None:
        doc = {
            "command": self.command,
            "config": _scrub(config),
            "seed": seed,
            "keys": {name: {"fingerprint": k.fingerprint, "scheme": k.scheme} for name, k in (keys or {}).items()},
            "versions": versions(),
            "argv": sys.argv,
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        write_json(self.path / "config.json", doc)

    def add_metrics(self, **metrics: Any) -> None:
        """Merge metrics into ``metrics.json`` (rewritten atomically each time, so a crash keeps what was done)."""
        self.metrics.update(_scrub(metrics))
        write_json(self.path / "metrics.json", self.metrics)

    def save_grid(
        self,
        name: str,
        images: np.ndarray | torch.Tensor,
        *,
        ncol: int | None = None,
        scale: int = 1,
        caption: str = "",
    ) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"grid names are letters, digits, '-' and '_', not {name!r}")
        out = save_png(self.path / f"{name}.png", image_grid(images, ncol=ncol, scale=scale))
        if caption:
            captions = self._read_captions()
            captions[out.name] = caption
            write_json(self.path / "captions.json", captions)
        return out

    def _read_captions(self) -> dict[str, str]:
        p = self.path / "captions.json"
        if not p.is_file():
            return {}
        doc = read_json(p, expect=dict)
        return {str(k): v for k, v in doc.items() if isinstance(v, str)}

    def close(self) -> None:
        self.logger.removeHandler(self._handler)
        self._handler.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and exc[0] is not KeyboardInterrupt:
            self.log(f"failed: {exc[1]}")
        elif exc[0] is KeyboardInterrupt:
            self.log("interrupted")
        self.close()


OUTPUT_MARK = ".masquerade-output"


def refuse_overlap(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], flag: str = "--out"
) -> None:
    """Refuse an output folder that is one of the ``inputs`` or holds one (``bundled:`` names and None are
    skipped): writing or replacing it would overwrite or delete what the command reads."""
    path = Path(out)
    target = path.resolve()
    for given in inputs:
        if given is None or str(given).startswith("bundled:"):
            continue
        src = Path(given).resolve()
        if src == target or target in src.parents:
            raise InputError(f"{path}: the output folder would hold an input ({given}); choose another {flag}")


def claim_output_dir(
    out: str | os.PathLike[str],
    command: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    own: Callable[[Path], bool] | None = None,
) -> Path:
    """Make ``out`` the output folder of a command that resumes into it (``challenge attack``), after checking that
    writing there loses nothing: ``out`` is not an input and holds none (``inputs``: paths the command reads;
    ``bundled:`` names are skipped), and it is empty, or marked as this command's by an earlier call (``own``
    recognises folders written before the mark existed). Another command's outputs (a challenge's truth folder, a
    run folder) are refused in one line before anything is written."""
    path = Path(out)
    refuse_overlap(path, inputs)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: not a folder")
        mark = path / OUTPUT_MARK
        if any(path.iterdir()):
            try:
                owner = read_json(mark, expect=dict).get("command")
            except InputError:  # no mark, or not one we wrote: the folder is not ours
                owner = None
            if owner != command and not (owner is None and own is not None and own(path)):
                was = f" ({owner}'s output)" if isinstance(owner, str) else ""
                raise InputError(
                    f"{path}: holds other files{was}; {command} writes into an empty folder or its "
                    f"own earlier output; choose another --out"
                )
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / OUTPUT_MARK, {"command": command})
    return path


@contextlib.contextmanager
def output_dir(
    out: str | os.PathLike[str], command: str, *, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Iterator[Path]:
    """:func:`claim_output_dir` for the length of a ``with``: a folder it created is removed again when the body
    fails before writing anything into it, so a refused input leaves no empty output folder behind."""
    fresh = not Path(out).exists()
    path = claim_output_dir(out, command, inputs=inputs)
    try:
        yield path
    except BaseException:
        if fresh and {p.name for p in path.iterdir()} <= {OUTPUT_MARK}:
            shutil.rmtree(path, ignore_errors=True)
        raise


def start_run(
    command: str,
    *,
    out: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = "runs",
    name: str | None = None,
) -> Run:
    """Create ``root/<name or command>/<timestamp>/`` (or ``out`` exactly) and return the open :class:`Run`."""
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise InputError(f"{path}: the output folder exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / (name or command)
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = base / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover
            raise InputError(f"{base}: cannot create a fresh run folder")
    run = Run(path, command)
    run.log(f"run folder {path}")
    return run
