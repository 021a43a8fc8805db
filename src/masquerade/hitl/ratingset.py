"""Rating sets: the folders a HitL study shows to raters, written and checked here.

Format ``masquerade-rating-set``, version 1, a folder of:

- ``images/<id>.png``: one 8-bit PNG per item; ids are opaque and the items shuffled, so neither a name nor the
  order gives a condition away;
- ``manifest.json``: what raters see: ``{"format": "masquerade-rating-set", "version": 1, "question_type":
  "choice" | "appeal", "question": ..., "choices": [...], "items": [{"id": ..., "image": "images/<id>.png"}]}``.
  ``question_type`` is ``"choice"`` when absent (sets written before it existed): raters pick one of ``choices``
  (class names) or ``unrecognisable``. ``"appeal"`` items are rated 1 (not appealing at all) to 5 (very appealing),
  the MediaEval Pixel Privacy task's appeal question; their ``choices`` are ``["1", ..., "5"]``;
- ``answers.json``: kept from raters: ``{"<id>": {"condition": ..., ...}}`` (choice sets add ``class``, the true
  answer); never served;
- ``ratings.csv`` (``masquerade hitl results --csv`` writes it): ``rater,id,choice`` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from masquerade.errors import InputError
from masquerade.fileio import parse_json, read_json

__all__ = [
    "FORMAT",
    "VERSION",
    "UNRECOGNISABLE",
    "APPEAL_CHOICES",
    "RatingSet",
    "load_rating_set",
    "read_answers",
    "write_rating_set",
    "strip_png",
]

FORMAT = "masquerade-rating-set"
VERSION = 1
UNRECOGNISABLE = "unrecognisable"
APPEAL_CHOICES = ("1", "2", "3", "4", "5")
QUESTION_TYPES = ("choice", "appeal")
MAX_IMAGE_BYTES = 32 << 20  # a PNG larger than this is not a rating item
MAX_PIXELS = 4096 * 4096
MAX_MANIFEST_BYTES = 64 << 20
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RatingSet:
    """A checked rating set: its folder, its digest (SHA-256 of the manifest and of every image) and what raters
    see."""

    folder: Path
    digest: str
    question_type: str
    question: str
    choices: tuple[str, ...]
    items: tuple[str, ...]
    images: dict[str, Path] = field(repr=False)

    @property
    def answers_allowed(self) -> tuple[str, ...]:
        """What a rater may answer: the choices, plus ``unrecognisable`` for a choice question."""
        return self.choices + ((UNRECOGNISABLE,) if self.question_type == "choice" else ())


def _png_size(path: Path, where: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _PNG or head[12:16] != b"IHDR":
        raise InputError(f"{where}: not a PNG file")
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def load_rating_set(folder: str | os.PathLike[str]) -> RatingSet:
    """Read and check a rating set: the manifest's format and version, its question, choices and items (ids unique
    and opaque-looking), every image a PNG inside ``images/`` within the size bounds. One-line errors."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (a rating set is a folder with manifest.json and images/)")
    if not path.is_file():
        raise InputError(f"{folder}: no manifest.json; not a rating set")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a rating set manifest")
    man = parse_json(raw, where=str(path))
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} manifest")
    if man.get("version") != VERSION:
        raise InputError(f"{path}: rating set version {man.get('version')!r}; this masquerade reads version {VERSION}")
    qtype = man.get("question_type", "choice")
    if qtype not in QUESTION_TYPES:
        raise InputError(f"{path}: question_type {qtype!r}; expected one of {', '.join(QUESTION_TYPES)}")
    question = man.get("question")
    if not isinstance(question, str) or not question.strip() or len(question) > 1000:
        raise InputError(f"{path}: question must be a non-empty text of at most 1000 characters")
    choices = man.get("choices", list(APPEAL_CHOICES) if qtype == "appeal" else None)
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, str) and c.strip() and len(c) <= 100 for c in choices)
    ):
        raise InputError(f"{path}: choices must be a non-empty list of short texts")
    if len(set(choices)) != len(choices):
        raise InputError(f"{path}: choices are not unique")
    if qtype == "appeal" and tuple(choices) != APPEAL_CHOICES:
        raise InputError(f"{path}: an appeal question's choices are 1 to 5, not {choices}")
    if qtype == "choice" and UNRECOGNISABLE in choices:
        raise InputError(f"{path}: {UNRECOGNISABLE!r} is offered to raters anyway; remove it from choices")
    items = man.get("items")
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: items must be a non-empty list")
    root = folder.resolve()
    digest = hashlib.sha256(raw)  # the manifest and every image: a set is its pictures, not only names
    ids: list[str] = []
    images: dict[str, Path] = {}
    for k, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("id"), str) or not isinstance(it.get("image"), str):
            raise InputError(f"{path}: item {k} must have an id and an image")
        rid, rel = it["id"], it["image"]
        if not _ID.match(rid):
            raise InputError(f"{path}: item id {rid[:80]!r} must be 1-64 letters, digits, '_' or '-'")
        if rid in images:
            raise InputError(f"{path}: item id {rid!r} appears twice")
        img = (folder / rel).resolve()
        if not rel.startswith("images/") or not rel.endswith(".png") or not img.is_relative_to(root / "images"):
            raise InputError(f"{path}: item {rid!r}: image {rel[:120]!r} must be a .png file under images/")
        where = f"{folder}/{rel}"
        if not img.is_file():
            raise InputError(f"{where}: missing (item {rid!r})")
        if img.stat().st_size > MAX_IMAGE_BYTES:
            raise InputError(f"{where}: larger than {MAX_IMAGE_BYTES >> 20} MiB")
        w, h = _png_size(img, where)
        if not (0 < w * h <= MAX_PIXELS):
            raise InputError(f"{where}: {w}×{h} pixels; a rating image has at most {MAX_PIXELS} pixels")
        ids.append(rid)
        images[rid] = img
        digest.update(hashlib.sha256(img.read_bytes()).digest())
    return RatingSet(
        folder=folder,
        digest=digest.hexdigest(),
        question_type=qtype,
        question=question.strip(),
        choices=tuple(choices),
        items=tuple(ids),
        images=images,
    )


def read_answers(rs: RatingSet) -> dict[str, dict[str, Any]]:
    """The set's ``answers.json`` (for the owner's results): every item's condition (and true class)."""
    path = rs.folder / "answers.json"
    if not path.is_file():
        raise InputError(f"{rs.folder}: no answers.json; the results need the conditions it keeps")
    answers = read_json(path, expect=dict)
    for rid in rs.items:
        a = answers.get(rid)
        if not isinstance(a, dict) or not isinstance(a.get("condition"), str):
            raise InputError(f"{path}: item {rid!r} has no condition")
        if rs.question_type == "choice" and not isinstance(a.get("class"), str):
            raise InputError(f"{path}: item {rid!r} has no true class")
    return answers


def write_rating_set(
    folder: str | os.PathLike[str],
    items: Sequence[tuple[str, np.ndarray, dict[str, Any]]],
    *,
    question_type: str = "choice",
    question: str,
    choices: Sequence[str] | None = None,
    rng: np.random.Generator | None = None,
) -> Path:
    """Write a rating set (format above) from ``(condition, uint8 H×W×C image, answer fields)`` items: shuffled
    (OS randomness unless ``rng`` is given), opaque ids, PNG files, manifest and answers written atomically."""
    from PIL import Image

    from masquerade.fileio import atomic_open, write_text

    if question_type not in QUESTION_TYPES:
        raise InputError(f"rating set: question_type {question_type!r}; expected one of {', '.join(QUESTION_TYPES)}")
    folder = Path(folder)
    if (folder / "manifest.json").exists():
        raise InputError(f"{folder}: already holds a rating set")
    if not items:
        raise InputError("rating set: no items")
    order = (
        rng.permutation(len(items)) if rng is not None else secrets.SystemRandom().sample(range(len(items)), len(items))
    )
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest, answers = [], {}
    for pos, j in enumerate(order):
        cond, arr, fields = items[int(j)]
        arr = np.asarray(arr)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise InputError(f"rating set: condition {cond!r}: expected 8-bit H×W(×C) images")
        rid = f"r{pos:04d}"
        with atomic_open(folder / "images" / f"{rid}.png", "wb") as fh:
            Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(fh, "PNG")
        manifest.append({"id": rid, "image": f"images/{rid}.png"})
        answers[rid] = {"condition": cond, **fields}
    head: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "question_type": question_type,
        "question": question,
        "choices": list(APPEAL_CHOICES) if question_type == "appeal" else [str(c) for c in choices or ()],
    }
    write_text(folder / "answers.json", json.dumps(answers, indent=1) + "\n")
    write_text(folder / "manifest.json", json.dumps({**head, "items": manifest}, indent=1) + "\n")  # last
    return folder


_KEEP = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"sRGB"}


def strip_png(data: bytes) -> bytes:
    """The PNG without its ancillary chunks but transparency and gamma: no text, time or profile chunk can carry a
    file name or a date to the rater."""
    if data[:8] != _PNG:
        raise InputError("not a PNG file")
    out = [data[:8]]
    pos = 8
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + n
        if end > len(data):
            raise InputError("truncated PNG file")
        if kind in _KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)
