"""The study file under faults and hostile files: FIFOs, foreign and damaged SQLite files, writes the file refuses,
rows it should not hold, a second server, and chunked bodies past the size limit."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from masquerade.errors import InputError
from masquerade.hitl.app import MAX_BODY
from masquerade.hitl.store import Refused, open_study

from .conftest import request, running, serving


def _open_in_thread(db: Path, sets: list[Path]) -> BaseException | None:
    """open_study in a thread that must end within 10 s (a FIFO read would block for ever)."""
    out: list[BaseException | None] = []

    def go() -> None:
        try:
            open_study(db, sets).close()
            out.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(10)
    assert out, "open_study hung"
    return out[0]


def test_a_fifo_or_folder_is_refused_unread(tmp_path: Path, choice_set: Path) -> None:
    fifo = tmp_path / "study.sqlite"
    os.mkfifo(fifo)
    for sets in ([choice_set], []):
        exc = _open_in_thread(fifo, sets)
        assert isinstance(exc, InputError) and "not a regular file" in str(exc)
    (tmp_path / "dir.sqlite").mkdir()
    exc = _open_in_thread(tmp_path / "dir.sqlite", [choice_set])
    assert isinstance(exc, InputError)


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path, choice_set: Path) -> None:
    db = tmp_path / "other-app.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', 'someone else')")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for sets in ([choice_set], []):
        with pytest.raises(InputError, match="not a masquerade study database"):
            open_study(db, sets)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not db.with_name(db.name + "-wal").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_damaged_study_is_one_line(tmp_path: Path, choice_set: Path) -> None:
    db = tmp_path / "study.sqlite"
    with open_study(db, [choice_set]) as study:
        for _ in range(30):
            study.new_rater()
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    for page in range(1, len(data) // 4096):  # every b-tree page's header, past the file header's page
        data[page * 4096 : page * 4096 + 12] = b"\xa5" * 12
    db.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        open_study(db, [choice_set])
    assert "\n" not in str(e.value) and str(db) in str(e.value)


def test_writes_the_file_refuses_are_a_503_and_change_nothing(tmp_path: Path, choice_set: Path) -> None:
    study = open_study(tmp_path / "study.sqlite", [choice_set])
    rater = study.new_rater()
    before = study.state(rater)
    study.conn.execute("PRAGMA query_only=ON")  # every write now fails inside SQLite, as on a full disk
    with pytest.raises(Refused) as e:
        study.answer(rater, before["current"], "cat")
    assert e.value.status == 503
    assert study.state(rater) == before
    with pytest.raises(Refused) as e:
        study.new_rater()
    assert e.value.status == 503
    t = study.token
    with running(study) as base:
        r = request(base, "POST", f"/s/{t}/api/raters/{rater}/answers", {"item": before["current"], "choice": "cat"})
        assert r.status == 503 and len(r.body) < 300
    study.conn.execute("PRAGMA query_only=OFF")
    study.answer(rater, before["current"], "cat")  # the same answer goes in once the file takes writes again
    assert study.state(rater)["position"] == 1
    study.close()


def test_rows_the_app_did_not_write_are_a_500_not_a_traceback(tmp_path: Path, choice_set: Path) -> None:
    db = tmp_path / "study.sqlite"
    with open_study(db, [choice_set]) as study:
        raters = [study.new_rater() for _ in range(3)]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE raters SET item_order = ? WHERE rater = ?", ("[" * 100_000, raters[0]))
        conn.execute("UPDATE raters SET item_order = ? WHERE rater = ?", ('["nope"]', raters[1]))
        conn.execute("UPDATE raters SET item_order = ? WHERE rater = ?", ('{"a": 1}', raters[2]))
    conn.close()
    with open_study(db, [choice_set]) as study:
        for rater in raters:
            with pytest.raises(Refused) as e:
                study.state(rater)
            assert e.value.status == 500 and "\n" not in e.value.message
    with open_study(db, [choice_set]) as study:
        t = study.token
        with running(study) as base:
            for rater in raters:
                r = request(base, "GET", f"/s/{t}/api/raters/{rater}")
                assert r.status == 500 and len(r.body) < 300, r.body


def test_a_second_server_on_one_study_is_refused(tmp_path: Path, choice_set: Path) -> None:
    db = tmp_path / "study.sqlite"
    with serving([choice_set], db) as (url, proc):
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "masquerade",
                "hitl",
                "serve",
                str(choice_set),
                "--db",
                str(tmp_path / "." / "study.sqlite"),
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another masquerade server" in lines[0]
        assert second.stdout == ""
        assert proc.poll() is None  # the first one still serves
    # once the first has stopped, its lock is gone: the study can be served again (taken here in this process)
    from masquerade.hitl.app import _serving

    with _serving(db.resolve()), open_study(db, [choice_set]) as study:
        assert study.token == url.split("/s/")[1].strip("/")


def _chunked(base: str, path: str, chunks: list[bytes]) -> int:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        try:
            s.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.recv(4096)
    return int(reply.split(b" ", 2)[1])


def test_chunked_bodies_meet_the_same_limit(tmp_path: Path, choice_set: Path) -> None:
    study = open_study(tmp_path / "study.sqlite", [choice_set])
    t = study.token
    with running(study) as base:
        rater = request(base, "POST", f"/s/{t}/api/raters").json()["rater"]
        before = study.counts()
        big = [b"x" * 1024] * (MAX_BODY // 1024 + 2)
        assert _chunked(base, f"/s/{t}/api/raters", big) == 413
        assert _chunked(base, f"/s/{t}/api/raters/{rater}/answers", big) == 413
        assert _chunked(base, f"/s/{t}/api/raters", [b"{}"]) == 201
        assert study.counts()["raters"] == before["raters"] + 1
    study.close()
