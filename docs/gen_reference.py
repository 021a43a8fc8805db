"""Write the generated reference pages at build time (run by the mkdocs gen-files plugin, never shipped):

- ``reference/cli.md``: every command's ``--help``, from the parsers themselves (``masquerade.cli.build_parser`` and
  ``attack NAME``'s own parser), so the page cannot drift from the code;
- ``reference/plugins.md``: every registered scheme's and attack's settings with their defaults, and each attack's
  threat model, read from the classes;
- ``reference/api/``: one page per public module, rendered by mkdocstrings from the docstrings.

``python docs/gen_reference.py --list`` prints the public modules (the tests compare it with the pages).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal width: fix it for the page


def public_modules() -> list[str]:
    """Every importable module of the package whose dotted path has no private part (``_name``)."""
    out = []
    for path in sorted((SRC / "masquerade").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__" or any(p.startswith("_") for p in parts):
            continue
        out.append(".".join(parts))
    return out


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _walk(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(prefix, parser)]
    for name, sub in _subparsers(parser):
        out += _walk(sub, f"{prefix} {name}")
    return out


def _fenced(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def cli_page() -> str:
    from masquerade.cli import build_parser
    from masquerade.cli.attack import attack_parser
    from masquerade.registry import ATTACKS

    lines = [
        "# Command line reference",
        "",
        "Generated from the parsers at build time: what `--help` prints, command by command. Errors are one "
        "line on stderr; exit code 2 means bad usage or input, 1 another failure, 130 an interrupt.",
        "",
    ]
    for prog, parser in _walk(build_parser(), "masquerade"):
        lines += [f"## `{prog}`", "", _fenced(parser.format_help()), ""]
        if prog == "masquerade attack":
            for name in ATTACKS.names():
                lines += [f"### `masquerade attack {name}`", "", _fenced(attack_parser(name).format_help()), ""]
    return "\n".join(lines)


def _settings_table(cls: type) -> list[str]:
    settings = getattr(cls, "Settings", None)
    if settings is None or not dataclasses.is_dataclass(settings) or not dataclasses.fields(settings):
        return ["No settings.", ""]
    rows = ["| setting | default |", "|---|---|"]
    for f in dataclasses.fields(settings):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append(f"| `{f.name}` | `{default}` |")
    return rows + [""]


def plugins_page() -> str:
    from masquerade.registry import ATTACKS, SCHEMES

    lines = [
        "# Settings and threat models",
        "",
        "Generated from the registered classes at build time: every scheme's and attack's settings with their "
        "defaults (the published ones unless a page says otherwise), and what each attack is given. "
        "`masquerade attack NAME --help` and `--set key=value` take the same names.",
        "",
        "## Schemes",
        "",
    ]
    for name, desc in SCHEMES.describe().items():
        cls = SCHEMES.get(name)
        lines += [f"### `{name}`", "", f"{desc}. Class: `{cls.__module__}.{cls.__qualname__}`.", ""]
        lines += _settings_table(cls)
    lines += ["## Attacks", ""]
    for name, desc in ATTACKS.describe().items():
        cls = ATTACKS.get(name)
        lines += [
            f"### `{name}`",
            "",
            f"{desc}. Class: `{cls.__module__}.{cls.__qualname__}`.",
            "",
            f"Threat model: {cls.threat_model.describe()}.",
            "",
        ]
        lines += _settings_table(cls)
    return "\n".join(lines)


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open("reference/cli.md", "w") as fh:
        fh.write(cli_page())
    with mkdocs_gen_files.open("reference/plugins.md", "w") as fh:
        fh.write(plugins_page())
    modules = public_modules()
    packages = {m for m in modules if m.count(".") == 1 and any(o.startswith(m + ".") for o in modules)}
    summary = []
    for module in modules:
        page = module.replace(".", "/") + ".md"
        with mkdocs_gen_files.open("reference/api/" + page, "w") as fh:
            fh.write(f"::: {module}\n")
        top = ".".join(module.split(".")[:2])
        link = f"[{module}](reference/api/{page})"
        if module in packages:  # a section, its own page first
            summary += [f"        * {module}", f"            * {link}"]
        elif top in packages:  # listed under its package by its own name
            summary.append(f"            * [{module[len(top) + 1 :]}](reference/api/{page})")
        else:
            summary.append(f"        * {link}")
    # the site's navigation: docs/nav.md (written by hand) with the API pages under its "Python API" entry
    nav = (ROOT / "docs" / "nav.md").read_text().splitlines()
    at = nav.index("    * Python API") + 1
    with mkdocs_gen_files.open("SUMMARY.md", "w") as fh:
        fh.write("\n".join(nav[:at] + summary + nav[at:]) + "\n")


if __name__ == "__main__" and "--list" in sys.argv:
    print("\n".join(public_modules()))
else:
    main()
