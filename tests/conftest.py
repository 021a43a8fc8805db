from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

# Real data for the checks that need it: $MASQUERADE_BENCH_DATA, else ../shared/data beside the checkout.
SHARED = Path(os.environ.get("MASQUERADE_BENCH_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write into the user's cache from tests."""
    monkeypatch.setenv("MASQUERADE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("MASQUERADE_DATA", str(tmp_path_factory.getbasetemp() / "datasets"))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``masquerade ARGS`` in this process (``main``, as ``python -m masquerade`` calls it, usage errors included):
    no interpreter and torch import per call. The entry point itself is tested in a subprocess once."""
    from masquerade.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse's usage errors; the interpreter's exit status for the others
            rc = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return CliResult(rc, out.out, out.err)

    return run


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"needs ../shared/data/{name} (present in CI and on the team's machines)")
    return p


@pytest.fixture(scope="session")
def cifar_test() -> tuple[np.ndarray, np.ndarray]:
    p = shared("cifar10-test.npz")
    with np.load(p) as z:
        return z["images"][:2000], z["labels"][:2000]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# -- the system's headless Chromium, driven by Playwright (the HitL page, the reports) ----------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("no Chromium found under CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip("no Chromium found: apt-get install chromium (the browser tests use the system's)")


@pytest.fixture(scope="module")
def browser() -> Any:
    exe = _chromium()
    if os.environ.get("CI") == "true":
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


os.environ.setdefault("MASQUERADE_QUIET", "1")
