"""Small rating sets made on the spot: a choice set (3 classes, 2 conditions) and an appeal set."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

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
    return write_rating_set(
        folder,
        items,
        question="Which class does this image show?",
        choices=CLASSES,
        rng=np.random.default_rng(seed + 1),
    )


def make_appeal_set(folder: Path, n: int = 3, *, seed: int = 5) -> Path:
    g = np.random.default_rng(seed)
    items = [
        (cond, g.integers(0, 256, (24, 32, 3), dtype=np.uint8), {"source": f"photo{i}.jpg"})
        for cond in ("original", "camouflaged")
        for i in range(n)
    ]
    return write_rating_set(
        folder, items, question_type="appeal", question="How appealing is this photo?", rng=np.random.default_rng(seed)
    )


@pytest.fixture
def choice_set(tmp_path: Path) -> Path:
    return make_choice_set(tmp_path / "set-a")


@pytest.fixture
def appeal_set(tmp_path: Path) -> Path:
    return make_appeal_set(tmp_path / "set-b")


# -- a real server (uvicorn on the loopback address, in a thread) and a small HTTP client --------------------------


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP request with the standard library (``body`` sent as JSON, ``raw`` as is)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = dict(headers or {})
    if body is not None and raw is None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


@contextlib.contextmanager
def running(study: Any) -> Iterator[str]:
    """Serve ``study`` on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    from masquerade.hitl.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see app.serve
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(create_app(study), log_level="warning", access_log=False, lifespan="off"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not server.started:
        assert time.monotonic() - t0 < 10, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        th.join(10)
        sock.close()


@contextlib.contextmanager
def serving(sets: list[Path], db: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``masquerade hitl serve SETS --db DB --port 0`` in a subprocess; yields the URL (its first line) and the
    process, and stops it with Ctrl-C (SIGINT) afterwards."""
    cmd = [sys.executable, "-m", "masquerade", "hitl", "serve", *map(str, sets), "--db", str(db), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
