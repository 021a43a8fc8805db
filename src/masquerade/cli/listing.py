"""``list``: the registered schemes and attacks (built-in and other packages'), and the bundled data."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def cmd_list(args: argparse.Namespace) -> int:
    from masquerade.data.bundled import list_bundled
    from masquerade.registry import ATTACKS, SCHEMES

    print("schemes:")
    for name, desc in SCHEMES.describe().items():
        print(f"  {name:26s} {desc}")
    print("attacks (masquerade attack NAME --help):")
    for name, desc in ATTACKS.describe().items():
        print(f"  {name:26s} {desc}")
    print("bundled data (load with bundled:NAME):")
    for name, src in list_bundled().items():
        print(f"  {name:26s} {src.holds}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list schemes, attacks and bundled data")
    p.set_defaults(func=cmd_list)
