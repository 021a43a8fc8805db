"""Workflows: what a command does, as plain functions that Python users and the CLI share.

Each takes keyword arguments, validates them, writes its outputs (atomically) and a run folder where it computes
something, and returns a small summary; the CLI only parses options, calls one of these and prints.

- :func:`protect` / :func:`reveal` (:mod:`.protect`): protect a data set with a scheme and write the key apart;
  decode with the key.
- :func:`attack` (:mod:`.attack`): run any registered attack on files, given what its threat model names.
- :func:`train` / :func:`search` (:mod:`.train`): train on protected data, test on clean data; ATS policy search.
- :func:`compare` / :func:`patches` (:mod:`.data`): SSIM/PSNR between image sets; public patch pools.
- :mod:`.challenge`: make, attack (resumable), prepare (the attack's prior) and score an InstaHide Challenge.
- :func:`camouflage` (:mod:`.camouflage`): quality camouflage of photos.
- :func:`run_demo` (:mod:`.demo`): the offline tour.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["protect", "reveal", "attack", "train", "search", "compare", "patches", "camouflage", "run_demo"]

_HOME = {
    "protect": "protect",
    "reveal": "protect",
    "attack": "attack",
    "train": "train",
    "search": "train",
    "compare": "data",
    "patches": "data",
    "camouflage": "camouflage",
    "run_demo": "demo",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package loads no torch
    if name in _HOME:
        return getattr(importlib.import_module(f"masquerade.workflows.{_HOME[name]}"), name)
    raise AttributeError(f"module 'masquerade.workflows' has no attribute {name!r}")
