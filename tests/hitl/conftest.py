"""Small rating sets made on the spot: a choice set (3 classes, 2 conditions) and an appeal set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masquerade.hitl.ratingset import write_rating_set

CLASSES = ["cat", "dog", "ship"]


def make_choice_set(folder: Path, n: int = 4, *, seed: int = 0, size: int = 16) -> Path:
    """``n`` private images × conditions original / blurred: 2n items, classes cycling through CLASSES."""
    g = np.random.default_rng(seed)
    items = []
    for cond in ("original", "blurred"):
        for i in range(n):
            img = g.integers(0, 256, (size, size, 3), dtype=np.uint8)
            items.append((cond, img, {"label": i % 3, "class": CLASSES[i % 3], "source": i}))
    return write_rating_set(folder, items, question="Which class does this image show?", choices=CLASSES,
                            rng=np.random.default_rng(seed + 1))


def make_appeal_set(folder: Path, n: int = 3, *, seed: int = 5) -> Path:
    g = np.random.default_rng(seed)
    items = [(cond, g.integers(0, 256, (24, 32, 3), dtype=np.uint8), {"source": f"photo{i}.jpg"})
             for cond in ("original", "camouflaged") for i in range(n)]
    return write_rating_set(folder, items, question_type="appeal", question="How appealing is this photo?",
                            rng=np.random.default_rng(seed))


@pytest.fixture
def choice_set(tmp_path: Path) -> Path:
    return make_choice_set(tmp_path / "set-a")


@pytest.fixture
def appeal_set(tmp_path: Path) -> Path:
    return make_appeal_set(tmp_path / "set-b")
