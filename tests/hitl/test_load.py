"""Load: 50 simulated raters answering at once for 15 s against ``masquerade hitl serve`` on the loopback address.
Every answer the server acknowledged must be in the database, and the median answer time must stay under 50 ms.

A simulated rater fetches its image and answers, then waits 0.1-0.3 s (people take seconds per image, so this is
a crowd several times larger than 50 real raters). ``MASQUERADE_LOAD_SECONDS`` sets the length (30 for the
longer run the HitL issue measured).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from masquerade.hitl.ratingset import write_rating_set

from .conftest import serving

RATERS = 50
SECONDS = float(os.environ.get("MASQUERADE_LOAD_SECONDS", "15"))


def _rater(
    host: str, port: int, prefix: str, stop: float, acked: list[int], times: list[float], errors: list[str], seed: int
) -> None:
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    n = 0

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, prefix + path, body=json.dumps(body) if body is not None else None, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read()

    try:
        status, body = call("POST", "/api/raters")
        rater = json.loads(body)["rater"]
        status, body = call("GET", f"/api/raters/{rater}")
        state = json.loads(body)
        while time.monotonic() < stop and state["current"] is not None:
            it = state["current"]
            status, _ = call("GET", f"/api/raters/{rater}/images/{it['id']}")
            if status != 200:
                errors.append(f"image: {status}")
                break
            t0 = time.perf_counter()
            status, body = call(
                "POST", f"/api/raters/{rater}/answers", {"item": it["id"], "choice": rnd.choice(it["choices"])}
            )
            times.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"answer: {status} {body[:80]!r}")
                break
            n += 1
            state = json.loads(body)
            time.sleep(rnd.uniform(0.1, 0.3))
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        acked.append(n)
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fifty_raters_at_once_lose_nothing(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    items = [(f"c{i % 2}", g.integers(0, 256, (16, 16, 3), dtype=np.uint8), {"class": "a"}) for i in range(400)]
    folder = write_rating_set(tmp_path / "set", items, question="Which?", choices=["a", "b", "c"], rng=g)
    db = tmp_path / "load.sqlite"
    with serving([folder], db) as (url, proc):
        rest = url.removeprefix("http://")
        hostport, path = rest.split("/", 1)
        host, port = hostport.split(":")
        acked: list[int] = []
        times: list[float] = []
        errors: list[str] = []
        stop = time.monotonic() + SECONDS
        threads = [
            threading.Thread(
                target=_rater, args=(host, int(port), "/" + path.rstrip("/"), stop, acked, times, errors, k)
            )
            for k in range(RATERS)
        ]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - t0
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM answers").fetchone()[0]
        raters = conn.execute("SELECT count(*) FROM raters").fetchone()[0]
    median, p95 = statistics.median(times) * 1000, float(np.percentile(times, 95)) * 1000
    print(
        f"\nload: {RATERS} raters, {wall:.1f} s, {sum(acked)} answers acknowledged, {stored} stored, "
        f"{sum(acked) / wall:.0f} answers/s, median {median:.1f} ms, p95 {p95:.1f} ms"
    )
    assert errors == []
    assert raters == RATERS and len(acked) == RATERS
    assert stored == sum(acked) > RATERS * SECONDS  # at least one answer per rater per second
    assert median < 50
