"""``demo`` (the offline tour on bundled data) and ``report`` (HTML reports of run folders)."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import seed

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    from masquerade.workflows.demo import FULL, QUICK, run_demo

    run_demo(out=args.out, seed=args.seed, scale=QUICK if args.quick else FULL)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from masquerade.report import build_report
    from masquerade.report.scorecard import build_scorecard_report

    if len(args.runs) == 1 and (Path(args.runs[0]) / "scorecard.json").is_file():
        path = build_scorecard_report(args.runs[0], args.out)  # an evaluation folder: its scorecard's report
    else:
        path = build_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="offline tour on bundled data; writes an HTML report")
    p.add_argument("--out", help="run folder (default runs/demo/<timestamp>)")
    p.add_argument("--seed", type=seed, default=0, help="seed for a reproducible demo (default 0)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="every section, with fewer steps and a scorecard of two settings at level 1 (about 2.5 minutes)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="build an HTML report from run folders")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", help="HTML file (default: report.html in the run folder)")
    p.set_defaults(func=cmd_report)
