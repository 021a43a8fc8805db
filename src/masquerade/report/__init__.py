"""Self-contained HTML reports built from run folders only (config.json, metrics.json, log.txt, PNG grids).

``metrics.json`` conventions the report understands:

- a number, string or boolean at the top level (or in nested dicts, shown with dotted names): the metrics table;
- a list of flat dicts: a table of its own, titled by its key;
- a dict ``{"x": [...], "y": {"series name": [...], ...}, "xlabel": ..., "ylabel": ...}``: a line plot
  (matplotlib, embedded as PNG).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

from masquerade.errors import InputError
from masquerade.fileio import read_json, write_text

__all__ = ["build_report", "read_run"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1em}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}figure{display:inline-block;margin:.5em 1em .5em 0;
vertical-align:top}figcaption{font-size:.85em;color:#555;max-width:520px}img{image-rendering:pixelated;
max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em;
max-height:300px}.muted{color:#777;font-size:.85em}details{margin:.5em 0}
div.rating img{width:96px;image-rendering:pixelated}
"""


def read_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one run folder's files (fails with a clear message if it is not one)."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a run folder (no such folder)")
    if not (p / "config.json").is_file() and not (p / "metrics.json").is_file():
        raise InputError(f"{p}: not a run folder (no config.json or metrics.json)")

    def load(name: str) -> Any:
        f = p / name
        if not f.is_file():
            return {}
        return read_json(_own_file(p, f), expect=dict)  # every file a report reads is an object

    log_file = p / "log.txt"
    log = _own_file(p, log_file).read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
    captions = {str(k): v for k, v in load("captions.json").items() if isinstance(v, str)}  # text only
    return {
        "path": p,
        "config": load("config.json"),
        "metrics": load("metrics.json"),
        "captions": captions,
        "images": [_own_file(p, f) for f in sorted(p.glob("*.png"))],
        "log": log,
        "rating": load("rating/manifest.json"),
    }


def _own_file(root: Path, f: Path) -> Path:
    """``f`` if it is a regular file of the run folder ``root`` itself: a report is meant to be shared, so a link
    (or a linked folder) leading out of the run, to an image or any other file, is refused rather than embedded."""
    if not f.resolve().is_relative_to(root.resolve()) or not f.is_file():
        raise InputError(f"{f}: leads out of the run folder {root} (a link?); a report embeds only the run's own files")
    return f


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return html.escape(str(v))


def _numbers(v: Any, most: int = 100_000) -> bool:
    """A plottable list: 1 to ``most`` numbers, each finite (|v| <= 1e100) or NaN (a gap)."""
    return (
        isinstance(v, list)
        and 0 < len(v) <= most
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) and (a != a or abs(a) <= 1e100) for a in v)
    )


def _is_series(v: Any) -> bool:
    """A line plot's data, checked in full (run folders are read from disk): anything else in its place is shown as
    the values it holds, never handed to matplotlib."""
    if not (isinstance(v, dict) and _numbers(v.get("x")) and isinstance(v.get("y"), dict) and 0 < len(v["y"]) <= 50):
        return False
    return all(_numbers(ys) and len(ys) <= len(v["x"]) for ys in v["y"].values())


def _is_table(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if _is_series(v) or _is_table(v):
            continue
        if isinstance(v, dict):
            rows.extend(_flatten(v, name + "."))
        elif isinstance(v, list):
            rows.append((name, ", ".join(_fmt(x) for x in v[:20]) + (" …" if len(v) > 20 else "")))
        else:
            rows.append((name, v))
    return rows


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _table(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c not in cols)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)

    def cell(v: Any) -> str:
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<td{' class=num' if num else ''}>{_fmt(v)}</td>"

    body = "".join("<tr>" + "".join(cell(r.get(c, "")) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(title: str, series: dict[str, Any]) -> str:
    from masquerade.extras import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    x = series["x"]
    for name, ys in series["y"].items():
        ax.plot(x[: len(ys)], ys, marker="o", ms=3, label=str(name))
    ax.set_xlabel(str(series.get("xlabel", "")))
    ax.set_ylabel(str(series.get("ylabel", "")))
    if series.get("logx") and all(v > 0 for v in x):
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series["y"]) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _img_tag(buf.getvalue(), title)


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _rating_section(folder: Path, manifest: dict[str, Any]) -> str:
    """A HitL rating set as raters see it: the question, the choices, every item with its id (never its
    condition, which stays in answers.json)."""
    figs = []
    for item in manifest.get("items", []):
        f = folder / str(item.get("image", ""))
        if f.is_file() and _own_file(folder.parent, f).resolve().is_relative_to(folder.resolve()):
            figs.append(
                f"<figure>{_img_tag(f.read_bytes(), str(item.get('id')))}<figcaption>"
                f"{html.escape(str(item.get('id')))}</figcaption></figure>"
            )
    choices = ", ".join(html.escape(str(c)) for c in manifest.get("choices", []))
    return (
        f"<h3>Rating set ({len(figs)} images)</h3><p>{html.escape(str(manifest.get('question', '')))}"
        f"<br><span class='muted'>choices: {choices}, unrecognisable; record answers as ratings.csv "
        f"(rater,id,choice)</span></p><div class='rating'>{''.join(figs)}</div>"
    )


def _run_section(run: dict[str, Any]) -> str:
    cfg, metrics = run["config"], run["metrics"]
    title = cfg.get("command", run["path"].parent.name)
    parts = [f"<h2>{html.escape(str(title))} <span class='muted'>{html.escape(str(run['path']))}</span></h2>"]
    if cfg.get("started"):
        parts.append(
            f"<p class='muted'>started {html.escape(str(cfg['started']))}; seed {html.escape(str(cfg.get('seed')))}</p>"
        )
    scalars = _flatten(metrics)
    if scalars:
        parts.append("<h3>Metrics</h3>" + _kv_table(scalars))
    for k, v in metrics.items():
        if _is_table(v):
            parts.append(f"<h3>{html.escape(k)}</h3>" + _table(v))
    plots = [(k, v) for k, v in metrics.items() if _is_series(v)]
    if plots:
        parts.append("<div>" + "".join(f"<figure>{_plot(k, v)}</figure>" for k, v in plots) + "</div>")
    if run["images"]:
        figs = []
        for img in run["images"]:
            cap = run["captions"].get(img.name, img.stem)
            figs.append(
                f"<figure>{_img_tag(img.read_bytes(), img.stem)}<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
        parts.append("<h3>Images</h3><div>" + "".join(figs) + "</div>")
    rating = run.get("rating") or {}
    if rating.get("format") == "masquerade-rating-set":
        parts.append(_rating_section(run["path"] / "rating", rating))
    if cfg.get("config"):
        parts.append("<details><summary>Settings</summary>" + _kv_table(_flatten(cfg["config"])) + "</details>")
    if cfg.get("keys"):
        rows = [
            (name, f"{k.get('scheme', '')} · fingerprint {k.get('fingerprint', '')}") for name, k in cfg["keys"].items()
        ]
        parts.append("<details><summary>Keys (fingerprints only)</summary>" + _kv_table(rows) + "</details>")
    if cfg.get("versions"):
        parts.append("<details><summary>Versions</summary>" + _kv_table(list(cfg["versions"].items())) + "</details>")
    if run["log"]:
        tail = "\n".join(run["log"].splitlines()[-60:])
        parts.append(f"<details><summary>Log (last lines)</summary><pre>{html.escape(tail)}</pre></details>")
    return "\n".join(parts)


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    title: str = "masquerade report",
) -> Path:
    """Write one self-contained HTML page for the given run folders; returns its path.

    ``out`` defaults to ``report.html`` inside the run folder when there is one, else in the current folder.
    """
    if not run_dirs:
        raise InputError("report: give at least one run folder")
    runs = [read_run(p) for p in run_dirs]
    if out is None:
        out = Path(run_dirs[0]) / "report.html" if len(runs) == 1 else Path("report.html")
    now = _dt.datetime.now().isoformat(timespec="seconds")
    body = "\n".join(_run_section(r) for r in runs)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='muted'>generated {now} from {len(runs)} run folder(s)</p>{body}</body></html>\n"
    )
    return write_text(out, page)
