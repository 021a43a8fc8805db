"""``hitl serve`` and ``hitl results``: a human-in-the-loop rating study of rating sets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from masquerade.cli.common import int_at_least

_port = int_at_least(0, "a port (0 for a free one)")


def port(text: str) -> int:
    v = _port(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a port (0-65535), got {text!r}")
    return v


__all__ = ["register"]


def cmd_serve(args: argparse.Namespace) -> int:
    from masquerade.extras import require

    require("starlette")
    from masquerade.hitl.app import serve

    counts = serve(args.sets, db=args.db, host=args.host, port=args.port)
    print(f"stopped; {counts['raters']} raters, {counts['answers']} answers in {args.db}", flush=True)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from masquerade.hitl.results import format_table, study_results, write_csv

    res = study_results(args.db)
    print(json.dumps(res, indent=1) if args.json else format_table(res))
    if args.csv:
        written = write_csv(args.db)
        if not args.json:
            print("wrote " + ", ".join(str(p) for p in written))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("hitl", help="human-in-the-loop rating studies: serve rating sets to raters, read results")
    hs = p.add_subparsers(dest="hitl_command", metavar="ACTION", required=True)
    s = hs.add_parser("serve", help="serve rating sets to raters in their browsers (prints their URL first)")
    s.add_argument("sets", nargs="+", metavar="SET", help="rating set folders (manifest.json, images/)")
    s.add_argument("--db", required=True, help="the study's SQLite file (created; reopened to resume)")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for your network)",
    )
    s.add_argument("--port", type=port, default=8765, help="port (default 8765; 0 takes a free one)")
    s.set_defaults(func=cmd_serve)
    r = hs.add_parser("results", help="the HitL table of a study: rates with 95%% CIs, raters, Fleiss' kappa")
    r.add_argument("--db", required=True, help="the study's SQLite file")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.add_argument(
        "--csv",
        action="store_true",
        help="also write each set's ratings.csv (rater,id,choice), which score_ratings reads",
    )
    r.set_defaults(func=cmd_results)
