"""The documentation: a page for every registered scheme and attack, an API page for every public module, a short
README. The site itself is built with warnings as errors by ``make docs``, which ``make test`` runs first."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

from masquerade.catalogue import BUILTIN_ATTACKS, BUILTIN_SCHEMES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_built_in_scheme_and_attack_has_its_page() -> None:
    missing = [f"schemes/{n}.md" for n in BUILTIN_SCHEMES if not (DOCS / "schemes" / f"{n}.md").is_file()]
    missing += [f"attacks/{n}.md" for n in BUILTIN_ATTACKS if not (DOCS / "attacks" / f"{n}.md").is_file()]
    assert missing == []


def test_every_scheme_and_attack_page_is_in_the_navigation_and_names_its_plugin() -> None:
    nav = (DOCS / "nav.md").read_text()
    for kind, names in (("schemes", BUILTIN_SCHEMES), ("attacks", BUILTIN_ATTACKS)):
        for name in names:
            assert f"({kind}/{name}.md)" in nav, f"{kind}/{name}.md is not in docs/nav.md"
            assert f"`{name}`" in (DOCS / kind / f"{name}.md").read_text(), f"{kind}/{name}.md never names it"


def test_the_api_reference_covers_every_public_module() -> None:
    out = subprocess.run(
        [sys.executable, str(DOCS / "gen_reference.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed = out.stdout.split()
    on_disk = {
        ".".join(p.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "src" / "masquerade").rglob("*.py")
    }
    public = {m for m in on_disk if not any(part.startswith("_") for part in m.split("."))}
    assert set(listed) == public and "masquerade.devices" in listed
    for module in listed:
        importlib.import_module(module)  # mkdocstrings reads them statically; they must also import


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_navigation_keeps_the_api_entry_the_generator_fills() -> None:
    assert "    * Python API" in (DOCS / "nav.md").read_text().splitlines()
