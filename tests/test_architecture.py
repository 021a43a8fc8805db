"""The package's shape: no import cycles, no module over 600 lines, a command line that answers --help and list
without loading torch, optional dependencies that fail in one line, and plugins from other packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "masquerade"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("masquerade"):
                    edges[name].add(t)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_inside_the_package() -> None:
    edges = _graph()
    assert len(edges) > 50 and "masquerade.instahide.attack" in edges["masquerade.workflows.challenge"]
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_600_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["attack"]])
def test_help_and_list_do_not_load_torch(argv: list[str]) -> None:
    code = (
        "import sys\nfrom masquerade.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "inverting_gradients" in r.stdout or argv == ["--help"]


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from masquerade.extras import MissingExtra, require

    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'masquerade\[sift\]'") as e:
        require("cv2")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_plugins_of_other_packages_come_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    import masquerade.identity  # noqa: F401 - its imports (torch) read entry points too: load them before faking
    from masquerade.registry import Registry

    class Dist:  # an installed distribution as importlib.metadata shows it
        def __init__(self, *eps: md.EntryPoint) -> None:
            self.entry_points, self.metadata = list(eps), {"Name": "echo-plugin"}

    ep = md.EntryPoint(name="echo-identity", value="masquerade.identity:Identity", group="masquerade.schemes")
    other = md.EntryPoint(name="elsewhere", value="masquerade.identity:Identity", group="another.group")
    monkeypatch.setattr(md, "distributions", lambda: [Dist(ep, other)])
    reg: Registry = Registry("scheme", {}, "masquerade.schemes")
    assert reg.names() == ["echo-identity"]
    assert reg.create("echo-identity").name == "identity"
    assert reg.describe()["echo-identity"] == "(from echo-plugin)"
    bad = md.EntryPoint(name="broken", value="masquerade.nowhere:Nothing", group="masquerade.schemes")
    monkeypatch.setattr(md, "distributions", lambda: [Dist(bad)])
    from masquerade.errors import InputError

    with pytest.raises(InputError, match="cannot be loaded"):
        Registry("scheme", {}, "masquerade.schemes").get("broken")


def test_the_lazy_top_level_names_are_all_there() -> None:
    import masquerade

    assert set(masquerade.__all__) - {"__version__"} == set(masquerade._HOME)
    for name in masquerade.__all__:
        assert getattr(masquerade, name) is not None, name


def test_no_private_name_is_imported_across_packages() -> None:
    """A name that starts with ``_`` is its package's own: another package that needs it needs a public name."""

    def top(module: str) -> str:
        return module.split(".")[1] if module.count(".") else module

    found = []
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("masquerade."):
                for alias in node.names:
                    if (
                        alias.name.startswith("_")
                        and not alias.name.startswith("__")
                        and top(node.module or "") != top(name)
                    ):
                        found.append(f"{name} imports {node.module}.{alias.name}")
    assert not found, found
