"""The SQLite file of a rating study: its sets (by manifest digest), opaque item ids, raters with the order drawn
for each, and every answer.

Written in WAL mode, one transaction per answer: an answer the server acknowledged is in the file even when the
server is killed or the rater closes the tab (``synchronous=NORMAL``: only a power cut in the next moment could
take the last answers back). ``answers`` holds the latest answer of each rater for each item, ``history`` every
submission, changes included. The file is created readable by its owner only: it holds the study token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from masquerade.errors import InputError
from masquerade.fileio import parse_json
from masquerade.hitl.ratingset import RatingSet, load_rating_set

__all__ = ["Study", "Refused", "open_study", "SCHEMA_VERSION", "MAX_RATERS"]

STUDY_FORMAT = "masquerade-hitl-study"
SCHEMA_VERSION = 1
MAX_RATERS = 10_000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sets (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE, path TEXT NOT NULL);
CREATE TABLE items (item TEXT PRIMARY KEY, set_idx INTEGER NOT NULL REFERENCES sets(idx), rid TEXT NOT NULL,
                    UNIQUE (set_idx, rid));
CREATE TABLE raters (rater TEXT PRIMARY KEY, created REAL NOT NULL, item_order TEXT NOT NULL);
CREATE TABLE answers (rater TEXT NOT NULL REFERENCES raters(rater), item TEXT NOT NULL REFERENCES items(item),
                      choice TEXT NOT NULL, answered REAL NOT NULL, changed REAL,
                      PRIMARY KEY (rater, item));
CREATE TABLE history (n INTEGER PRIMARY KEY, rater TEXT NOT NULL, item TEXT NOT NULL, choice TEXT NOT NULL,
                      at REAL NOT NULL, change INTEGER NOT NULL);
"""


class Refused(Exception):
    """A request the study turns down: an HTTP status and a short message; nothing was written."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Corrupt(Refused):
    """A study file whose rows are not what this module wrote: a 500 with one line, never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(500, message)


@dataclass
class _Rater:
    order: list[str]
    answers: dict[str, str] = field(default_factory=dict)  # item -> latest choice; always order[:len(answers)]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Study:
    """An open study file. Thread-safe (one connection, one lock): the app calls it from its event loop, tests
    from other threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path, sets: list[RatingSet]) -> None:
        self.conn = conn
        self.path = path
        self.sets = sets
        self._lock = threading.Lock()
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        token = meta.get("token")
        if not isinstance(token, str) or len(token) < 16:
            raise InputError(f"{path}: the study database has no valid token")
        self._token = token
        self.items: dict[str, tuple[int, str]] = {
            item: (idx, rid) for item, idx, rid in conn.execute("SELECT item, set_idx, rid FROM items")
        }
        self._raters: dict[str, _Rater] = {}
        self._n_raters = conn.execute("SELECT count(*) FROM raters").fetchone()[0]

    # -- the token ---------------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The study token (for the one URL line the owner is shown)."""
        return self._token

    def check_token(self, given: str) -> bool:
        return hmac.compare_digest(_digest(given), _digest(self._token))

    # -- raters ------------------------------------------------------------------------------------------------
    def new_rater(self) -> str:
        """A rater with an opaque random id and an order of every item of every set drawn with OS randomness."""
        with self._lock:
            if self._n_raters >= MAX_RATERS:
                raise Refused(403, f"this study has its {MAX_RATERS} raters")
            order = list(self.items)
            secrets.SystemRandom().shuffle(order)
            rater = secrets.token_urlsafe(16)
            with self._writing():
                self.conn.execute("INSERT INTO raters VALUES (?, ?, ?)", (rater, time.time(), json.dumps(order)))
            self._raters[rater] = _Rater(order)
            self._n_raters += 1
            return rater

    def _rater(self, rater: str) -> _Rater:
        r = self._raters.get(rater)
        if r is None:
            row = self.conn.execute("SELECT item_order FROM raters WHERE rater = ?", (rater,)).fetchone()
            if row is None:
                raise Refused(404, "unknown rater")
            order = parse_json(row[0], where="the study file's rater row", expect=list, error=_Corrupt)
            if not all(isinstance(i, str) and i in self.items for i in order):
                raise _Corrupt("the study file's rater row names items the study does not have")
            r = _Rater(order)
            rows = dict(self.conn.execute("SELECT item, choice FROM answers WHERE rater = ?", (rater,)))
            r.answers = {item: rows[item] for item in r.order if item in rows}
            self._raters[rater] = r
        return r

    def state(self, rater: str) -> dict[str, Any]:
        """Where a rater stands: answered count, total, the current item and the previous one with its answer."""
        with self._lock:
            r = self._rater(rater)
            p = len(r.answers)
            return {
                "position": p,
                "total": len(r.order),
                "current": r.order[p] if p < len(r.order) else None,
                "previous": r.order[p - 1] if p else None,
                "previous_choice": r.answers[r.order[p - 1]] if p else None,
            }

    def may_see(self, rater: str, item: str) -> bool:
        with self._lock:
            r = self._rater(rater)
            return item in self.items and item in r.order

    def set_of(self, item: str) -> RatingSet:
        return self.sets[self.items[item][0]]

    def image_path(self, item: str) -> Path:
        idx, rid = self.items[item]
        return self.sets[idx].images[rid]

    # -- answers -----------------------------------------------------------------------------------------------
    def answer(self, rater: str, item: str, choice: str, *, change: bool = False) -> None:
        """Record one answer in one transaction, or refuse it (:class:`Refused`) and write nothing: the next item
        in the rater's order is answered; with ``change`` the previous one is answered again."""
        with self._lock:
            r = self._rater(rater)
            if item not in self.items:
                raise Refused(404, "unknown item")
            if item not in r.order:
                raise Refused(403, "not one of this rater's items")
            allowed = self.set_of(item).answers_allowed
            if choice not in allowed:
                raise Refused(400, f"choice must be one of: {', '.join(allowed)}")
            p = len(r.answers)
            now = time.time()
            if change:
                if p == 0 or item != r.order[p - 1]:
                    raise Refused(409, "only the previous item can be changed")
                with self._writing():
                    self.conn.execute(
                        "UPDATE answers SET choice = ?, changed = ? WHERE rater = ? AND item = ?",
                        (choice, now, rater, item),
                    )
                    self.conn.execute(
                        "INSERT INTO history (rater, item, choice, at, change) VALUES (?, ?, ?, ?, 1)",
                        (rater, item, choice, now),
                    )
            else:
                if item in r.answers:
                    raise Refused(409, "already answered (go back to change it)")
                if item != r.order[p]:
                    raise Refused(409, "not the current item")
                with self._writing():
                    self.conn.execute("INSERT INTO answers VALUES (?, ?, ?, ?, NULL)", (rater, item, choice, now))
                    self.conn.execute(
                        "INSERT INTO history (rater, item, choice, at, change) VALUES (?, ?, ?, ?, 0)",
                        (rater, item, choice, now),
                    )
            r.answers[item] = choice

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction; a write the file refuses (disk full, made read-only, corrupted under us) is rolled back
        and answered with a 503: nothing half-written, nothing acknowledged that is not in the file."""
        try:
            with self.conn:
                yield
        except sqlite3.Error as exc:
            raise Refused(
                503, f"the study file could not be written ({' '.join(str(exc).split())[:120]}); try again"
            ) from None

    def latest_answers(self) -> list[tuple[str, int, str, str]]:
        """``(rater, set index, set item id, choice)`` for every rater × item, the latest answer."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT a.rater, i.set_idx, i.rid, a.choice FROM answers a "
                "JOIN items i ON i.item = a.item ORDER BY a.rater, a.answered"
            ).fetchall()
        return [(str(a), int(b), str(c), str(d)) for a, b, c, d in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            one = self.conn.execute
            return {
                "raters": one("SELECT count(*) FROM raters").fetchone()[0],
                "answers": one("SELECT count(*) FROM answers").fetchone()[0],
                "submissions": one("SELECT count(*) FROM history").fetchone()[0],
            }

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, check_same_thread=False)
    except sqlite3.Error as exc:
        raise InputError(f"{path}: cannot open the study database ({exc})") from None


def _settings(conn: sqlite3.Connection) -> None:
    """WAL, one sync per transaction, checked references, waiting for a reader's lock; set only on our own files
    (a foreign SQLite file is refused before anything in it changes)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


def open_study(db: str | os.PathLike[str], sets: Sequence[str | os.PathLike[str]] | None = None) -> Study:
    """Open (or, with ``sets``, create) a study file. With ``sets``, an existing file must have been made for the
    same sets (compared by the SHA-256 of their manifests and images; folders may have moved). Without, the sets
    are those the file names. Anything but a regular file (a FIFO, a device, a folder) is refused unread; a
    SQLite file that is not a study is refused before anything in it is changed; a damaged or unwritable one
    is one line."""
    path = Path(db)
    checked = [load_rating_set(s) for s in sets or ()]
    digests = [s.digest for s in checked]
    if len(set(digests)) != len(digests):
        raise InputError("the same rating set is given twice")
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file; a study database is a file")
    exists = st is not None and st.st_size > 0
    if not exists and not checked:
        raise InputError(f"{path}: no such study database")
    if not exists:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)  # owner only: it holds the token and the answers
            os.close(fd)
        except OSError as exc:
            raise InputError(f"{path}: cannot create the study database ({exc.strerror or exc})") from None
    conn = _connect(path)
    try:
        if not exists:
            _settings(conn)
            _create(conn, checked)
        else:
            checked = _check(conn, path, checked)
        return Study(conn, path, checked)
    except sqlite3.Error as exc:
        conn.close()
        raise InputError(f"{path}: cannot use this study database ({' '.join(str(exc).split())[:160]})") from None
    except BaseException:
        conn.close()
        raise


def _create(conn: sqlite3.Connection, sets: list[RatingSet]) -> None:
    conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
    with conn:
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("format", STUDY_FORMAT),
                ("schema", str(SCHEMA_VERSION)),
                ("created", str(time.time())),
                ("token", secrets.token_urlsafe(24)),
            ],
        )
        for idx, s in enumerate(sets):
            conn.execute("INSERT INTO sets VALUES (?, ?, ?)", (idx, s.digest, str(s.folder.resolve())))
            conn.executemany(
                "INSERT INTO items VALUES (?, ?, ?)", [(secrets.token_urlsafe(12), idx, rid) for rid in s.items]
            )


def _check(conn: sqlite3.Connection, path: Path, given: list[RatingSet]) -> list[RatingSet]:
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        stored = conn.execute("SELECT idx, digest, path FROM sets ORDER BY idx").fetchall()
    except sqlite3.DatabaseError:
        raise InputError(f"{path}: not a masquerade study database") from None
    if meta.get("format") != STUDY_FORMAT:
        raise InputError(f"{path}: not a masquerade study database")
    if meta.get("schema") != str(SCHEMA_VERSION):
        raise InputError(f"{path}: study schema {meta.get('schema')}; this masquerade reads {SCHEMA_VERSION}")
    if [r[0] for r in conn.execute("PRAGMA quick_check")] != ["ok"]:
        raise InputError(f"{path}: the study database is damaged (SQLite's integrity check fails)")
    _settings(conn)
    if not given:
        return [_reload(path, digest, folder) for _, digest, folder in stored]
    by_digest = {s.digest: s for s in given}
    if set(by_digest) != {d for _, d, _ in stored}:
        raise InputError(
            f"{path}: this study was made for other rating sets "
            f"({', '.join(Path(p).name for _, _, p in stored)}); give those, or use a new --db"
        )
    out = []
    with conn:
        for idx, digest, _ in stored:
            s = by_digest[digest]
            conn.execute("UPDATE sets SET path = ? WHERE idx = ?", (str(s.folder.resolve()), idx))
            out.append(s)
    return out


def _reload(path: Path, digest: str, folder: str) -> RatingSet:
    s = load_rating_set(folder)
    if s.digest != digest:
        raise InputError(f"{folder}: its manifest or images changed since the study {path} was made")
    return s
