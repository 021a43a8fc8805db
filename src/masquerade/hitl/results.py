"""The study owner's HitL table, from the study database and the sets' ``answers.json`` (never from the server).

Per set and condition: for a choice question the recognition rate (a rating names the true class) with its 95 %
Wilson score interval, for an appeal question the mean rating (1-5) with its 95 % t interval (clipped to 1-5); the
numbers of raters and ratings; inter-rater agreement as Fleiss' kappa over the items of that condition
(categories: the choices plus ``unrecognisable``). Each rater's latest answer per item counts once.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from masquerade.hitl.ratingset import read_answers
from masquerade.hitl.store import open_study

__all__ = ["wilson_interval", "mean_interval", "fleiss_kappa", "study_results", "format_table", "write_csv"]

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: {successes} successes out of {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student's t interval: ``(mean, low, high)``; the interval is NaN below two values."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = sum(values) / n
    if n < 2:
        return (m, math.nan, math.nan)
    from scipy.stats import t

    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (m, m - half, m + half)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of an items × categories table of rating counts (Fleiss 1971). Items may have different
    numbers of raters (each item's agreement uses its own count); items rated once are left out. NaN when there is
    nothing to compare or the chance agreement is 1."""
    rows = [list(map(int, r)) for r in counts if sum(r) >= 2]
    if not rows:
        return math.nan
    total = sum(sum(r) for r in rows)
    p_items = [(sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    p_bar = sum(p_items) / len(rows)
    k = len(rows[0])
    p_e = sum((sum(r[j] for r in rows) / total) ** 2 for j in range(k))
    if p_e >= 1:
        return math.nan
    return (p_bar - p_e) / (1 - p_e)


def study_results(db: str | os.PathLike[str]) -> dict[str, Any]:
    """The HitL table of a study: ``{"rows": [...], "raters": n, "ratings": n}``, one row per set and condition."""
    with open_study(db) as study:
        latest, counts, sets = study.latest_answers(), study.counts(), study.sets
    rows = []
    for idx, rs in enumerate(sets):
        answers = read_answers(rs)
        cats = list(rs.answers_allowed)
        per_cond: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for rater, sidx, rid, choice in latest:
            if sidx == idx:
                per_cond[answers[rid]["condition"]].append((rater, rid, choice))
        conds = sorted({a["condition"] for rid, a in answers.items() if rid in rs.images})
        for cond in conds:
            got = per_cond.get(cond, [])
            by_item: dict[str, Counter[str]] = defaultdict(Counter)
            for _, rid, choice in got:
                by_item[rid][choice] += 1
            kappa = fleiss_kappa([[c[x] for x in cats] for c in by_item.values()])
            row: dict[str, Any] = {
                "set": rs.folder.name,
                "condition": cond,
                "type": rs.question_type,
                "items": sum(1 for a in answers.values() if a.get("condition") == cond),
                "raters": len({r for r, _, _ in got}),
                "ratings": len(got),
                "fleiss_kappa": None if math.isnan(kappa) else round(kappa, 4),
            }
            if rs.question_type == "choice":
                hits = sum(choice == answers[rid]["class"] for _, rid, choice in got)
                lo, hi = wilson_interval(hits, len(got))
                row.update(
                    recognised=hits,
                    rate=round(hits / len(got), 4) if got else None,
                    ci95=[round(lo, 4), round(hi, 4)] if got else None,
                    unrecognisable=sum(choice == "unrecognisable" for _, _, choice in got),
                )
            else:
                m, lo, hi = mean_interval([float(choice) for _, _, choice in got])
                row.update(
                    mean_appeal=None if math.isnan(m) else round(m, 3),  # the interval, kept on the scale
                    ci95=None if math.isnan(lo) else [round(max(lo, 1.0), 3), round(min(hi, 5.0), 3)],
                )
            rows.append(row)
    return {
        "rows": rows,
        "raters": counts["raters"],
        "ratings": counts["answers"],
        "submissions": counts["submissions"],
    }


def _ci(row: dict[str, Any]) -> str:
    ci = row.get("ci95")
    if ci is None:
        return "-"
    return f"{ci[0] * 100:.1f}-{ci[1] * 100:.1f} %" if row["type"] == "choice" else f"{ci[0]:.2f}-{ci[1]:.2f}"


def format_table(res: dict[str, Any]) -> str:
    """The results as an aligned text table."""
    head = ["set", "condition", "question", "result", "95% CI", "raters", "ratings", "Fleiss kappa"]
    lines = [head]
    for r in res["rows"]:
        if r["type"] == "choice":
            result = "-" if r["rate"] is None else f"{r['rate'] * 100:.1f} % recognised ({r['recognised']})"
        else:
            result = "-" if r["mean_appeal"] is None else f"appeal {r['mean_appeal']:.2f} / 5"
        kappa = "-" if r["fleiss_kappa"] is None else f"{r['fleiss_kappa']:.3f}"
        lines.append([r["set"], r["condition"], r["type"], result, _ci(r), str(r["raters"]), str(r["ratings"]), kappa])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append(f"{res['raters']} raters, {res['ratings']} ratings ({res['submissions']} submissions, changes included)")
    return "\n".join(out)


def write_csv(db: str | os.PathLike[str]) -> list[Path]:
    """Write each set's ``ratings.csv`` (``rater,id,choice``, the latest answers), which
    :func:`masquerade.ats.privacy.score_ratings` reads; returns the files written."""
    from masquerade.fileio import write_text

    with open_study(db) as study:
        latest, sets = study.latest_answers(), study.sets
    written = []
    for idx, rs in enumerate(sets):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rater", "id", "choice"])
        for rater, sidx, rid, choice in latest:
            if sidx == idx:
                w.writerow([rater, rid, choice])
        written.append(write_text(rs.folder / "ratings.csv", buf.getvalue()))
    return written
