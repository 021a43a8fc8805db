"""The rating app over real HTTP (uvicorn on the loopback address): the rating flow, what the page may see,
bad requests (4xx, nothing written), resuming, the study file's checks, results and the CSV export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from masquerade.errors import InputError
from masquerade.hitl.ratingset import strip_png
from masquerade.hitl.results import study_results, write_csv
from masquerade.hitl.store import Refused, open_study

from .conftest import make_choice_set, request, running

pytest.importorskip("uvicorn")


def _rate_all(base: str, token: str, rater: str, pick: int = 0, images: dict | None = None) -> list[bytes]:
    """Answer every item (choice ``pick``); returns every body the 'page' received (images also in ``images``)."""
    seen = []
    s = request(base, "GET", f"/s/{token}/api/raters/{rater}")
    seen.append(s.body)
    state = s.json()
    while state["current"] is not None:
        it = state["current"]
        img = request(base, "GET", f"/s/{token}/api/raters/{rater}/images/{it['id']}")
        assert img.status == 200 and img.headers["content-type"] == "image/png"
        assert "last-modified" not in img.headers and "etag" not in img.headers
        seen.append(img.body)
        if images is not None:
            images[it["id"]] = img.body
        r = request(
            base,
            "POST",
            f"/s/{token}/api/raters/{rater}/answers",
            {"item": it["id"], "choice": it["choices"][pick % len(it["choices"])]},
        )
        assert r.status == 200, r.body
        seen.append(r.body)
        state = r.json()
    return seen


def test_two_raters_rate_and_nothing_received_names_a_condition(
    tmp_path: Path, choice_set: Path, appeal_set: Path
) -> None:
    study = open_study(tmp_path / "study.sqlite", [choice_set, appeal_set])
    token = study.token
    with running(study) as base:
        page = request(base, "GET", f"/s/{token}/")
        assert page.status == 200 and b"page.js" in page.body
        assert page.headers["referrer-policy"] == "no-referrer" and "no-store" in page.headers["cache-control"]
        seen = [page.body] + [request(base, "GET", f"/static/page.{x}").body for x in ("js", "css")]
        raters = [request(base, "POST", f"/s/{token}/api/raters").json()["rater"] for _ in range(2)]
        assert raters[0] != raters[1] and re.fullmatch(r"[A-Za-z0-9_-]{22}", raters[0])
        orders, images = [], {}
        for k, rater in enumerate(raters):
            got = _rate_all(base, token, rater, pick=k, images=images)
            orders.append([json.loads(b)["previous"]["id"] for b in got[2::2]])
            seen += got
    assert len(orders[0]) == 14 and sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    assert not set(orders[0]) & {f"r{i:04d}" for i in range(14)}  # opaque per-study ids, not the set's
    blob = b"\n".join(b for b in seen if not b.startswith(b"\x89PNG"))  # the images are checked below
    for secret in [
        "original",
        "blurred",
        "camouflaged",
        "condition",
        "answers.json",
        "set-a",
        "set-b",
        "r0000",
        "photo0",
        str(tmp_path),
        "images/r0",
        ".png",
    ]:
        assert secret.encode() not in blob, secret
    for item, body in images.items():  # the files' pixels, no text or time chunk
        assert body == strip_png(study.image_path(item).read_bytes())
        assert b"tEXt" not in body and b"tIME" not in body
    res = study_results(tmp_path / "study.sqlite")
    assert res["raters"] == 2 and res["ratings"] == 28
    rows = {(r["set"], r["condition"]): r for r in res["rows"]}
    assert rows[("set-a", "original")]["ratings"] == 8 and rows[("set-a", "original")]["raters"] == 2
    # rater 0 always picked "cat" (class of items 0 and 3 of 4), rater 1 always "dog" (item 1): 3 of 8
    assert rows[("set-a", "blurred")]["recognised"] == 3 and rows[("set-a", "blurred")]["rate"] == 0.375
    assert rows[("set-b", "original")]["mean_appeal"] == 1.5  # three 1s and three 2s


def test_bad_requests_are_4xx_and_write_nothing(tmp_path: Path, choice_set: Path) -> None:
    study = open_study(tmp_path / "study.sqlite", [choice_set])
    t = study.token
    with running(study) as base:
        rater = request(base, "POST", f"/s/{t}/api/raters").json()["rater"]
        api = f"/s/{t}/api/raters/{rater}"
        cur = request(base, "GET", api).json()["current"]
        ok = request(base, "POST", f"{api}/answers", {"item": cur["id"], "choice": "dog"})
        assert ok.status == 200
        nxt = ok.json()["current"]
        before = study.counts()
        bad = [
            (403, "GET", f"/s/{'x' * 32}/api/raters/{rater}", None, {}),  # wrong token
            (403, "POST", f"/s/{t[:-1]}/api/raters/{rater}/answers", {"item": nxt["id"], "choice": "dog"}, {}),
            (404, "GET", f"/api/raters/{rater}", None, {}),  # no token at all
            (404, "GET", f"/s/{t}/api/raters/nobody", None, {}),  # unknown rater
            (404, "POST", f"{api}/answers", {"item": "AAAAAAAAAAAAAAAA", "choice": "dog"}, {}),  # unknown item
            (409, "POST", f"{api}/answers", {"item": cur["id"], "choice": "dog"}, {}),  # replayed
            (409, "POST", f"{api}/answers", {"item": cur["id"], "choice": "cat"}, {}),  # duplicate
            (409, "POST", f"{api}/answers", {"item": nxt["id"], "choice": "cat", "change": True}, {}),
            (400, "POST", f"{api}/answers", {"item": nxt["id"], "choice": "horse"}, {}),  # not offered
            (400, "POST", f"{api}/answers", {"item": nxt["id"], "choice": "cat", "x": 1}, {}),
            (400, "POST", f"{api}/answers", {"item": nxt["id"], "choice": 3}, {}),
            (400, "POST", f"{api}/answers", [nxt["id"], "cat"], {}),
            (404, "GET", f"{api}/images/{'A' * 16}", None, {}),
            (404, "GET", f"{api}/images/..%2Fanswers.json", None, {}),
            (404, "GET", f"/s/{t}/answers.json", None, {}),
        ]
        for status, method, path, body, hdrs in bad:
            r = request(base, method, path, body, headers=hdrs)
            assert r.status == status, (path, body, r.status, r.body)
            assert len(r.body) < 200 and t.encode() not in r.body
        big = json.dumps({"item": nxt["id"], "choice": "cat", "pad": "x" * 5000}).encode()
        assert (
            request(base, "POST", f"{api}/answers", raw=big, headers={"Content-Type": "application/json"}).status == 413
        )
        assert (
            request(
                base, "POST", f"{api}/answers", raw=b"{not json", headers={"Content-Type": "application/json"}
            ).status
            == 400
        )
        assert (
            request(
                base,
                "POST",
                f"{api}/answers",
                raw=json.dumps({"item": nxt["id"], "choice": "cat"}).encode(),
                headers={"Content-Type": "text/plain"},
            ).status
            == 415
        )
        assert study.counts() == before
        # going back one changes the previous answer: an update, kept in the history
        back = request(base, "POST", f"{api}/answers", {"item": cur["id"], "choice": "ship", "change": True})
        assert back.status == 200 and back.json()["previous"]["answer"] == "ship"
        assert study.counts() == {**before, "submissions": before["submissions"] + 1}


def test_a_study_resumes_and_refuses_other_sets(tmp_path: Path, choice_set: Path, appeal_set: Path) -> None:
    db = tmp_path / "study.sqlite"
    study = open_study(db, [choice_set])
    rater = study.new_rater()
    first = study.state(rater)["current"]
    study.answer(rater, first, "cat")
    token, items = study.token, dict(study.items)
    study.close()
    assert db.stat().st_mode & 0o077 == 0  # the owner's only
    again = open_study(db, [choice_set])  # a restarted server
    assert again.token == token and again.items == items
    st = again.state(rater)
    assert st["position"] == 1 and st["previous"] == first and st["previous_choice"] == "cat"
    other = open_study(tmp_path / "other.sqlite", [choice_set])  # same set, another study
    r2 = other.new_rater()
    with pytest.raises(Refused) as e:  # an item of another study
        other.answer(r2, first, "cat")
    assert e.value.status == 404
    again.close()
    other.close()
    with pytest.raises(InputError, match="made for other rating sets"):
        open_study(db, [appeal_set])
    with pytest.raises(InputError, match="given twice"):
        open_study(tmp_path / "x.sqlite", [choice_set, choice_set])
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a (masquerade )?study database"):
        open_study(tmp_path / "junk.sqlite", [choice_set])


def test_csv_export_is_what_score_ratings_reads(tmp_path: Path) -> None:
    sets = [make_choice_set(tmp_path / "a", n=3)]
    study = open_study(tmp_path / "s.sqlite", sets)
    for pick in ("cat", "dog"):
        rater = study.new_rater()
        while (cur := study.state(rater)["current"]) is not None:
            study.answer(rater, cur, pick)
    study.close()
    (path,) = write_csv(tmp_path / "s.sqlite")
    assert path == sets[0] / "ratings.csv" and path.read_text().startswith("rater,id,choice\n")
    assert len(path.read_text().splitlines()) == 1 + 12
    from masquerade.ats.privacy import score_ratings

    scored = score_ratings(sets[0])
    res = {r["condition"]: r for r in study_results(tmp_path / "s.sqlite")["rows"]}
    for cond in ("original", "blurred"):
        assert scored[cond]["ratings"] == res[cond]["ratings"] == 6
        assert res[cond]["recognised"] == 2  # "cat" is the class of 1 of 3 images, "dog" of another
        assert scored[cond]["recognised"] == pytest.approx(2 / 6)


def test_score_ratings_reads_an_appeal_set(tmp_path: Path) -> None:
    from .conftest import make_appeal_set

    folder = make_appeal_set(tmp_path / "b", n=2)
    study = open_study(tmp_path / "s.sqlite", [folder])
    for pick in ("2", "5"):
        rater = study.new_rater()
        while (cur := study.state(rater)["current"]) is not None:
            study.answer(rater, cur, pick)
    study.close()
    write_csv(tmp_path / "s.sqlite")
    from masquerade.ats.privacy import score_ratings

    assert score_ratings(folder) == {
        "camouflaged": {"appeal": 3.5, "ratings": 4.0},
        "original": {"appeal": 3.5, "ratings": 4.0},
    }
    row = study_results(tmp_path / "s.sqlite")["rows"][0]
    # 2, 2, 5, 5: mean 3.5, sd sqrt(3), t(0.975, 3) = 3.182446 -> 3.5 -+ 2.7560, clipped to the 1-5 scale;
    # every item split 2 vs 5: P_i = 0, p = (.5, .5), P_e = .5 -> kappa = (0 - .5) / .5 = -1
    assert row["mean_appeal"] == 3.5 and row["ci95"] == [1.0, 5.0] and row["fleiss_kappa"] == -1.0
