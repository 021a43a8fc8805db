"""End to end in a real browser: headless Chromium from the system packages, driven by Playwright, against
``masquerade hitl serve`` in a subprocess. Two raters rate at once (one with keys on a desktop window, one by
tapping on a phone-sized one), one reloads mid-way and resumes, one goes back to change an answer, forged
requests are refused, and ``masquerade hitl results`` counts what the test expects.

Skipped when no Chromium is installed, except under CI (CI=true), where a missing browser fails the test."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import CLASSES, make_appeal_set, make_choice_set, serving

KEYS = "123456789abcdefghijklmnopqrstvwxyz"  # the page's key for each choice, in order
SCREENSHOTS = os.environ.get("MASQUERADE_SCREENSHOTS")  # a folder to keep the page's screenshots in


class Rater:
    """One browser tab of one rater; answers as the test decides from the (owner-side) truth of the item."""

    def __init__(self, browser: Any, url: str, truth: dict[str, dict[str, Any]], *, phone: bool) -> None:
        size = {"width": 390, "height": 844} if phone else {"width": 1100, "height": 820}
        self.ctx = browser.new_context(
            viewport=size, device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone
        )
        self.page = self.ctx.new_page()
        self.page.goto(url)
        self.truth, self.phone, self.done = truth, phone, 0
        self.wait(0)
        self.total = int(self.page.inner_text("#progress").split("/")[1])

    def wait(self, n: int) -> None:
        self.page.wait_for_function(
            "n => document.getElementById('progress').textContent.startsWith(n + ' /')", arg=n, timeout=10_000
        )
        self.page.wait_for_function(
            "() => { const i = document.getElementById('image');"
            " return document.getElementById('rate').hidden || (i.complete &&"
            " i.naturalWidth > 0); }",
            timeout=10_000,
        )

    def item(self) -> str:
        return self.page.get_attribute("#image", "src").rsplit("/", 1)[1]

    def choose(self, choice: str) -> None:
        it = json.loads(
            self.page.evaluate(
                "JSON.stringify([...document.querySelectorAll('#choices button')].map(b => b.dataset.choice))"
            )
        )
        if not self.phone:  # (phones show no key line) it offers "unrecognisable" only where the item has it
            assert self.page.is_visible("#unrec-help") == ("unrecognisable" in it)
        if self.phone:
            self.page.tap(f'#choices button[data-choice="{choice}"]')
        else:
            self.page.keyboard.press("0" if choice == "unrecognisable" else KEYS[it.index(choice)])

    def answer(self, decide: Any) -> str:
        item = self.item()
        self.choose(decide(self.truth[item]))
        self.done += 1
        self.wait(self.done)
        return item


def _truth(db: Path, sets: list[Path]) -> dict[str, dict[str, Any]]:
    """The owner's view: opaque item id -> the set's answer for it (what the test decides with)."""
    answers = [json.loads((s / "answers.json").read_text()) for s in sets]
    with sqlite3.connect(db) as conn:
        return {item: answers[idx][rid] for item, idx, rid in conn.execute("SELECT item, set_idx, rid FROM items")}


def honest(a: dict[str, Any]) -> str:
    """Rater A: names the class of originals, cannot tell blurred images; appeal 4 (original) or 2."""
    if "class" in a:
        return a["class"] if a["condition"] == "original" else "unrecognisable"
    return "4" if a["condition"] == "original" else "2"


def sharp(a: dict[str, Any]) -> str:
    """Rater B: names every class; appeal 5 (original) or 3."""
    if "class" in a:
        return a["class"]
    return "5" if a["condition"] == "original" else "3"


@pytest.mark.slow
def test_two_raters_in_chromium_then_results(tmp_path: Path, browser: Any) -> None:
    sets = [make_choice_set(tmp_path / "cifar-like", n=4, size=32), make_appeal_set(tmp_path / "camouflage", n=2)]
    db = tmp_path / "study.sqlite"
    with serving(sets, db) as (url, proc):
        truth = _truth(db, sets)
        a = Rater(browser, url, truth, phone=False)
        b = Rater(browser, url, truth, phone=True)
        assert a.total == b.total == 12
        for _ in range(5):  # both at once, one answer each in turn
            a.answer(honest)
            b.answer(sharp)
        nxt = a.item()
        a.page.reload()  # a reload mid-way resumes where A stopped
        a.wait(5)
        assert a.item() == nxt and a.page.inner_text("#progress") == "5 / 12"
        # B goes back one (Backspace), the previous answer is shown chosen; B changes it to a wrong one, then
        # goes back again and puts the right one back: the latest answer counts, the history keeps all three
        b.page.keyboard.press("Backspace")
        assert not b.page.is_hidden("#changing")
        prev = b.item()
        assert b.page.get_attribute("#choices button.chosen", "data-choice") == sharp(truth[prev])
        wrong = next(
            c
            for c in (CLASSES + ["1", "2"])
            if c != sharp(truth[prev])
            and c in b.page.evaluate("[...document.querySelectorAll('#choices button')].map(x => x.dataset.choice)")
        )
        b.page.tap(f'#choices button[data-choice="{wrong}"]')
        b.wait(5)
        b.page.tap("#back")
        assert b.item() == prev
        b.page.tap(f'#choices button[data-choice="{sharp(truth[prev])}"]')
        b.wait(5)
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            a.page.screenshot(path=str(Path(SCREENSHOTS) / "hitl-page.png"))
            b.page.screenshot(path=str(Path(SCREENSHOTS) / "hitl-page-phone.png"))
        # forged requests from the page's own origin: no token, a wrong token
        rater = a.page.evaluate("Object.entries(localStorage).find(([k]) => k.startsWith('masquerade-rater:'))[1]")
        forged = a.page.evaluate(
            """async ([rater, item]) => {
            const post = (p) => fetch(p, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify({item, choice: 'cat'})}).then(r => r.status);
            return [await post('/api/raters/' + rater + '/answers'),
                    await post('/s/not-the-token/api/raters/' + rater + '/answers'),
                    await fetch('/s/not-the-token/api/raters/' + rater).then(r => r.status)]; }""",
            [rater, a.item()],
        )
        assert forged == [404, 403, 403]
        while a.done < a.total:
            a.answer(honest)
        while b.done < b.total:
            b.answer(sharp)
        assert a.page.is_visible("#done") and b.page.is_visible("#done")
        a.ctx.close()
        b.ctx.close()
    out = proc.stdout.read() if proc.stdout else ""
    assert "stopped; 2 raters, 24 answers" in out and url.split("/s/")[1].strip("/") not in out
    table = subprocess.run(
        [sys.executable, "-m", "masquerade", "hitl", "results", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print("\n" + table)
    res = json.loads(
        subprocess.run(
            [sys.executable, "-m", "masquerade", "hitl", "results", "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    rows = {(r["set"], r["condition"]): r for r in res["rows"]}
    orig, blur = rows[("cifar-like", "original")], rows[("cifar-like", "blurred")]
    assert res["raters"] == 2 and res["ratings"] == 24 and res["submissions"] == 26
    assert orig["ratings"] == 8 and orig["recognised"] == 8 and orig["raters"] == 2
    assert blur["ratings"] == 8 and blur["recognised"] == 4 and blur["unrecognisable"] == 4 and blur["raters"] == 2
    assert orig["fleiss_kappa"] == 1.0
    assert rows[("camouflage", "original")]["mean_appeal"] == 4.5
    assert (
        rows[("camouflage", "camouflaged")]["mean_appeal"] == 2.5
        and rows[("camouflage", "camouflaged")]["ratings"] == 4
    )


@pytest.mark.slow
def test_every_choice_of_a_twelve_class_set_has_a_key(tmp_path: Path, browser: Any) -> None:
    """CIFAR-10's tenth class (and beyond) needs no mouse: 1-9, then letters, each shown on its button."""
    import numpy as np

    from masquerade.hitl.ratingset import write_rating_set

    names = [f"class{i}" for i in range(12)]
    g = np.random.default_rng(0)
    items = [
        ("original", g.integers(0, 256, (32, 32, 3), dtype=np.uint8), {"label": i, "class": names[i], "source": i})
        for i in range(12)
    ]
    rs = write_rating_set(
        tmp_path / "twelve", items, question="Which class?", choices=names, rng=np.random.default_rng(1)
    )
    db = tmp_path / "study.sqlite"
    with serving([rs], db) as (url, _proc):
        r = Rater(browser, url, _truth(db, [rs]), phone=False)
        shown = json.loads(
            r.page.evaluate(
                "JSON.stringify([...document.querySelectorAll('#choices button')]"
                ".map(b => [b.dataset.choice, b.querySelector('kbd').textContent]))"
            )
        )
        keys = dict(shown)
        assert keys["class9"] == "A" and keys["class11"] == "C" and keys["unrecognisable"] == "0"
        assert len(set(keys.values())) == len(keys)
        if SCREENSHOTS:
            r.page.screenshot(path=str(Path(SCREENSHOTS) / "hitl-page-twelve.png"))
        while r.done < r.total:  # the right class every time, by key: the last three by letter
            r.answer(lambda a: a["class"])
        r.ctx.close()
    res = json.loads(
        subprocess.run(
            [sys.executable, "-m", "masquerade", "hitl", "results", "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert res["rows"][0]["recognised"] == 12
