"""What every command group shares: argument types, ``--set key=value`` parsing, Settings fields as options.

Nothing here imports torch: ``masquerade --help`` and ``masquerade list`` stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, Sequence

from masquerade.errors import InputError

__all__ = [
    "Parser",
    "int_at_least",
    "positive_int",
    "nonnegative_int",
    "seed",
    "finite_float",
    "parse_sets",
    "parse_value",
    "add_settings_options",
    "settings_from_args",
    "missing_action",
    "add_device_option",
    "command_group",
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other error of the command line: what is wrong, and where
    to read more (``PROG --help``), exit code 2. Subcommand parsers inherit the class."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn; it exits
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, with a message naming ``what`` it is."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "a non-negative integer")
seed = int_at_least(0, "a seed (a non-negative integer)")


def finite_float(text: str) -> float:
    """An argparse type: a finite number (no nan or inf)."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def parse_sets(items: Sequence[str] | None) -> dict[str, object]:
    """``--set key=value`` pairs: ints, floats, booleans, comma-separated tuples, else strings."""
    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def parse_value(text: str) -> object:
    if "," in text:
        return tuple(parse_value(t) for t in text.split(",") if t)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            v = cast(text)
        except ValueError:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"expected a finite number, got {text!r}")
        return v
    return text


def _option_type(annotation: str) -> tuple[str, Callable[[str], Any]] | None:
    """The option of a Settings field (:func:`masquerade.contracts.field_kind`): its kind and its parser."""
    from masquerade.contracts import field_kind

    kind, optional = field_kind(annotation)
    if kind == "tuple":
        return "tuple", lambda t: tuple(v for v in (parse_value(x) for x in t.split(",")) if v is not None)
    if kind == "int":
        return "int", _optional(int) if optional else int_at_least(-(2**62), "an integer")
    if kind == "float":
        return "float", _optional(finite_float) if optional else finite_float
    if kind in ("bool", "str"):
        return kind, str
    return None


def _optional(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text.lower() in ("none", "null"):
            return None
        try:
            return cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None

    return parse


def add_settings_options(p: argparse.ArgumentParser, settings_cls: type, *, skip: Sequence[str] = ()) -> list[str]:
    """One option per simple field of a Settings dataclass (``--field-name``), default: the dataclass's own.
    Returns the field names added; ``--set`` covers the rest."""
    added = []
    group = p.add_argument_group("settings (defaults as published)")
    taken = {a for action in p._actions for a in action.option_strings}
    for f in dataclasses.fields(settings_cls):
        kind = _option_type(str(f.type))
        flag = "--" + f.name.replace("_", "-")
        if kind is None or f.name in skip or flag in taken:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if kind[0] == "bool":
            group.add_argument(
                flag,
                dest=f"setting_{f.name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default {default})",
            )
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            group.add_argument(
                flag,
                dest=f"setting_{f.name}",
                type=kind[1],
                default=None,
                metavar=f.name.upper(),
                help=f"(default {shown})",
            )
        added.append(f.name)
    return added


def settings_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The settings a user gave: explicit options, then ``--set`` pairs."""
    out = {k[len("setting_") :]: v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}
    out.update(parse_sets(getattr(args, "set", None)))
    return out


def _device_name(text: str) -> str:
    from masquerade.devices import check_device_name

    try:
        return check_device_name(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_option(p: argparse.ArgumentParser, what: str = "models and optimisation") -> None:
    """``--device auto|cpu|cuda[:N]|mps`` (checked by name here; whether this machine has it, when the command
    starts)."""
    p.add_argument(
        "--device",
        type=_device_name,
        default="cpu",
        metavar="DEVICE",
        help=f"where the {what} run: auto (a GPU when torch sees one), cpu (default), cuda, cuda:N or mps",
    )


def command_group(sub: Any, name: str, help: str) -> Any:
    """A group of actions (``masquerade NAME ACTION``): its parser under ``sub``, and the sub-parsers its actions
    are added to. ``masquerade NAME`` alone prints the group's help (exit 2)."""
    group = sub.add_parser(name, help=help)
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    group.set_defaults(func=lambda _args: missing_action(group))
    return actions


def missing_action(parser: argparse.ArgumentParser) -> int:
    import sys

    parser.print_help(sys.stderr)
    return 2
