"""The evaluation's report: ``RUN/report.html`` from ``RUN/scorecard.json`` and the cells' grids only.

It tells the comparison in sections: the threat levels, the summary (per scheme setting: utility, cost, and the
strongest attack at each level), one privacy-utility plot of all settings, then per scheme what it is, its rows, and
its grids (the target images, the encodings as an adversary sees them, and each attack's best matches).
"""

from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from masquerade.errors import InputError
from masquerade.fileio import read_json, write_text
from masquerade.report import _CSS, _img_tag, _table

__all__ = ["build_scorecard_report", "SCHEME_STORIES"]

SCHEME_STORIES = {
    "identity": "No protection: the images are released as they are. Every attack's floor and every model's "
    "ceiling: the row that says what protection costs.",
    "instahide": "InstaHide (Huang et al., ICML 2020): each released image is a random convex mix of k images "
    "(all private inside the dataset; two private and k-2 public patches across datasets) with a "
    "one-time pixel-wise sign mask, and the mixed label. Models train on the mixes and are tested on "
    "clean images. Carlini et al. (IEEE S&P 2021) recover the private images across datasets from the "
    "encodings and labels alone.",
    "disguise": "DisguisedNets (Sharma & Chen): the image is cut into blocks, the blocks are permuted, and each "
    "block goes through a secret random orthogonal matrix (RMT) or AES, under one key for the whole "
    "dataset; models train and predict on disguised images. RMT falls with the data distribution "
    "(level 2): the statistics of the disguised training set, aligned to those of clean images, give "
    "the permutation and every matrix; and to least squares with known pairs (level 3). AES in ECB "
    "mode leaks equal blocks, so known pairs give a codebook.",
    "ats": "ATS (Gao et al., CVPR 2021): in federated learning a client shares gradients, not images, and the "
    "server can invert a gradient back into the image (Inverting Gradients, Geiping et al. 2020). ATS "
    "transforms each image by a searched augmentation policy before the gradient is computed, so the "
    "inversion recovers a distorted image. Models train with the policy as augmentation and are tested on "
    "clean images; 'none' is plain federated learning.",
    "shufflebits": "ShuffleBits (Ni, Huttunen & Rahtu, 2021): deep features sent to a server are encrypted by "
    "permuting the 32 bits of every float32 number, under one fixed key (the published code) or a "
    "fresh key per vector or per number; the key holder decrypts them bit for bit, so the "
    "features lose nothing. The adversary trains a decoder from features to images on auxiliary "
    "images it sends through the feature extractor: on features in the clear (the baseline row "
    "under identity), after recovering a fixed key's bit order from the ciphertexts, or from the "
    "popcount of every number, all that one-time keys leave.",
}
_LEVEL_TEXT = {
    1: "the protected data as released (encodings, their labels, the public data a scheme names)",
    2: "also the data distribution (auxiliary clean images)",
    3: "also known pairs (some private images with their encodings)",
}


def _grid(images: list[np.ndarray], labels: list[str], scale: int = 2) -> str:
    """A small table of image strips, one row per label, as embedded PNGs."""
    from PIL import Image

    from masquerade.runs import image_grid

    rows = []
    for lab, ims in zip(labels, images):
        if ims is None or not len(ims):
            continue
        g = image_grid(ims, ncol=len(ims), scale=scale)
        buf = io.BytesIO()
        Image.fromarray(g).save(buf, format="PNG")
        rows.append(f"<tr><th>{html.escape(lab)}</th><td>{_img_tag(buf.getvalue(), lab)}</td></tr>")
    return f"<table class='grid'>{''.join(rows)}</table>" if rows else ""


def _privacy_utility_plot(summary: list[dict[str, Any]], top: int) -> str:
    from masquerade.extras import require
    from masquerade.metrics.privacy import SUCCESS_SSIM

    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.4), dpi=110)
    colours = {
        "identity": "#444444",
        "instahide": "#d62728",
        "disguise": "#1f77b4",
        "ats": "#2ca02c",
        "shufflebits": "#ff7f0e",
    }
    # points are numbered (settings often sit on top of each other) and the legend names each number
    shown = [r for r in summary if isinstance(r.get(f"_ssim{top}"), (int, float))]
    for i, r in enumerate(shown, 1):
        x, y = r["utility"], r[f"_ssim{top}"]
        ax.scatter(
            [x],
            [y],
            s=55,
            color=colours.get(r["scheme"], "#9467bd"),
            zorder=3,
            label=f"{i}  {r['scheme']} {r['setting']}",
        )
        ax.annotate(
            str(i),
            (x, y),
            textcoords="offset points",
            xytext=(5 + 7 * ((i - 1) % 3), 3 + 6 * ((i - 1) % 2)),
            fontsize=8,
        )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, handletextpad=0.3)
    ax.axhline(SUCCESS_SSIM, color="#999999", lw=0.8, ls="--")
    ax.text(
        0.01,
        SUCCESS_SSIM + 0.01,
        f"success threshold (SSIM {SUCCESS_SSIM})",
        fontsize=7,
        color="#777777",
        transform=ax.get_yaxis_transform(),
    )
    ax.set_xlabel("utility: test accuracy of a model trained on protected data")
    ax.set_ylabel(f"privacy loss: best attack's mean SSIM at level {top}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.02, 1.08)
    ax.grid(alpha=0.3)
    ax.set_title("Privacy against utility (lower right is better)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _img_tag(buf.getvalue(), "privacy-utility plot")


def _summary(rows: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    """One row per scheme setting: utility, cost, and the strongest attack at each level (by mean SSIM)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in rows:
        key = (r["scheme"], r["setting"])
        enc = r.get("utility_encoded")
        out.setdefault(
            key,
            {
                "scheme": r["scheme"],
                "setting": r["setting"],
                "utility": r["utility"],
                "utility on encodings": enc if isinstance(enc, (int, float)) else "—",
                "training time vs plain": r["train_vs_plain"],
                "encode (images/s)": "—" if r["encode_images_per_s"] is None else r["encode_images_per_s"],
            },
        )
        b = best.get((*key, r["level"]))
        if b is None or r["ssim"] > b["ssim"]:
            best[(*key, r["level"])] = r
    for (scheme, setting, lv), r in best.items():
        out[(scheme, setting)][f"level {lv}: strongest attack"] = (
            f"{r['attack']}: SSIM {r['ssim']:.2f}, {100 * r['success']:.0f} % found"
            + (f", MR {100 * r['mr']:.0f} %" if isinstance(r.get("mr"), (int, float)) else "")
        )
        out[(scheme, setting)][f"_ssim{lv}"] = r["ssim"]
    if all(v["utility on encodings"] == "—" for v in out.values()):  # no one-time-key setting: no such column
        for v in out.values():
            del v["utility on encodings"]
    return list(out.values())


def build_scorecard_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` for an evaluation folder (``scorecard.json`` and ``cells/``); returns its path."""
    from masquerade.metrics.privacy import SUCCESS_SSIM

    root = Path(run)
    if not (root / "scorecard.json").is_file():
        raise InputError(f"{root}: no scorecard.json (is this an evaluation folder?)")
    card = read_json(root / "scorecard.json", expect=dict)
    rows = card.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{root / 'scorecard.json'}: its rows are not a list of objects")
    levels = sorted({int(r["level"]) for r in rows})
    summary = _summary(rows, levels)
    parts = [
        "<h1>masquerade evaluate: privacy, utility and cost</h1>",
        f"<p class='muted'>{len(rows)} scorecard rows, seed {html.escape(str(card.get('seed')))}; "
        "every number below comes from <code>scorecard.json</code> in this folder.</p>",
        "<h2>What the adversary holds</h2><ul>"
        + "".join(f"<li><b>Level {lv}</b>: {html.escape(_LEVEL_TEXT[lv])}.</li>" for lv in levels)
        + "</ul>"
        + (
            "<p>A setting that shares gradients (ATS) releases no data: at every level its adversary is the "
            "server, which holds the model and each client's gradient and label.</p>"
            if any(r["scheme"] == "ats" for r in rows)
            else ""
        )
        + (
            "<p>A setting that releases deep features (ShuffleBits, and the features in the clear) gives no "
            "image attack anything at level 1; from level 2 the adversary also queries the feature extractor "
            "as a black box.</p>"
            if any(r["scheme"] == "shufflebits" for r in rows)
            else ""
        )
        + "<p>Each attack is scored on the private images it did not get as known pairs: the mean SSIM of "
        f"each image's best-matching reconstruction, and the share found with SSIM &gt; {SUCCESS_SSIM}.</p>",
        "<h2>Summary</h2>",
        _table([{k: v for k, v in r.items() if not k.startswith("_")} for r in summary]),
    ]
    raw = card.get("findings")
    notes = [f for f in raw if isinstance(f, dict) and isinstance(f.get("text"), str)] if isinstance(raw, list) else []
    if notes:
        parts.append(
            "<h2>Findings to explain</h2><p>Rows a reader should not take at face value:</p><ul>"
            + "".join(
                f"<li class='finding'><b>{html.escape(str(f.get('setting', '')))}</b>: {html.escape(f['text'])}.</li>"
                for f in notes
            )
            + "</ul>"
        )
    skipped = {k: v["skipped"] for k, v in card.get("settings", {}).items() if isinstance(v, dict) and v.get("skipped")}
    if skipped:
        parts.append(
            "<p class='muted'>Not evaluated, as the data do not fit them: "
            + "; ".join(f"{html.escape(k)} ({html.escape(str(v))})" for k, v in skipped.items())
            + ".</p>"
        )
    if levels:
        parts.append(
            f"<figure>{_privacy_utility_plot(summary, levels[-1])}<figcaption>Each point is one scheme "
            f"setting: the test accuracy of a model trained on its protected data, against the mean SSIM "
            f"of the strongest attack at level {levels[-1]}.</figcaption></figure>"
        )
    cells = root / "cells"
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        parts.append(f"<h2>{html.escape(scheme)}</h2><p>{html.escape(SCHEME_STORIES.get(scheme, ''))}</p>")
        mine = [r for r in rows if r["scheme"] == scheme]
        shown = [
            {k: r[k] for k in ("setting", "level", "attack", "ssim", "psnr", "success", "mr", "utility", "cost_s")}
            for r in mine
        ]
        parts.append(_table(shown))
        for setting in dict.fromkeys(r["setting"] for r in mine):
            strips: list[np.ndarray] = []
            names: list[str] = []
            seen: set[str] = set()
            for r in (r for r in mine if r["setting"] == setting):
                stem = r.get("cell")
                if not stem or stem in seen or not (cells / f"{stem}.npz").is_file():
                    continue
                seen.add(stem)
                with np.load(cells / f"{stem}.npz", allow_pickle=False) as z:
                    if not strips and "targets" in z.files:
                        strips += [z["targets"], z["encodings"]]
                        names += [
                            "private images",
                            "the gradient's input"
                            if scheme == "ats"
                            else "released features (top byte of each number)"
                            if "api" in r.get("uses", ())
                            else "released (as seen)",
                        ]
                    strips.append(z["matched"][:8])
                names.append(f"L{r['level']} {r['attack']} (SSIM {r['ssim']:.2f})")
            about = card.get("settings", {}).get(setting, {})
            note = f"<p>{html.escape(str(about['note']))}</p>" if isinstance(about, dict) and about.get("note") else ""
            if strips or note:
                parts.append(f"<h3>{html.escape(setting)}</h3>{note}" + _grid(strips, names))
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>masquerade evaluate</title>"
        f"<style>{_CSS} table.grid td{{padding:2px}}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return write_text(Path(out) if out else root / "report.html", page)
