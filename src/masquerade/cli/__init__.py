"""The ``masquerade`` command line: one thin module per command group, each parsing options and calling a workflow
(:mod:`masquerade.workflows`).

Errors are one line on stderr naming what is wrong and where: exit code 2 for bad usage or input, 1 for other
failures, 130 when interrupted. ``--debug`` shows the traceback. Building the parser imports no torch, so ``--help``
and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from masquerade._version import __version__
from masquerade.cli import (
    attack,
    camouflage,
    challenge,
    data,
    evaluate,
    hitl,
    keys,
    listing,
    metrics,
    protect,
    tour,
    train,
)
from masquerade.cli.common import Parser
from masquerade.errors import MasqueradeError

__all__ = ["main", "build_parser"]

# in the order --help lists them
GROUPS = (tour, listing, data, metrics, keys, protect, camouflage, train, attack, challenge, evaluate, hitl)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="masquerade", description="Protect images and features, attack the protections, score privacy and utility."
    )
    parser.add_argument("--version", action="version", version=f"masquerade {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from masquerade.progress import set_quiet

    set_quiet(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("masquerade: interrupted", file=sys.stderr)
        return 130
    except MasqueradeError as exc:
        if args.debug:
            raise
        print(f"masquerade: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path that cannot be used: a file where a folder must be, no permission, a full disk
        if args.debug:
            raise
        where = exc.filename if exc.filename is not None else "a file"
        print(f"masquerade: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if args.debug:
            raise
        if "Symlink loop" in str(exc):
            print(f"masquerade: error: {exc}; a path that loops cannot be written", file=sys.stderr)
            return 2
        print(
            f"masquerade: internal error: RuntimeError: {exc} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a clean message
        if args.debug:
            raise
        print(
            f"masquerade: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
