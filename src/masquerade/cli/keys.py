"""The ``key`` group: ``show`` a key file's scheme and fingerprint (never its material)."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import command_group

__all__ = ["register"]


def cmd_key_show(args: argparse.Namespace) -> int:
    from masquerade.keys import load_key

    key = load_key(args.keyfile)
    print(f"scheme      {key.scheme}")
    print(f"fingerprint {key.fingerprint}")
    print(f"key         {key!r}")
    return 0


def register(sub: Any) -> None:
    ksub = command_group(sub, "key", "inspect key files (never prints key material)")
    p = ksub.add_parser("show", help="scheme and fingerprint of a key file")
    p.add_argument("keyfile")
    p.set_defaults(func=cmd_key_show)
