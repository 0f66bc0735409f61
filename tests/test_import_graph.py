"""The package's arrows point one way: read every module's imports with `ast` (module level and inside
functions alike) and check the design's rules; and `import perceiver_cli` imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perceiver_cli"
SUBPACKAGES = ("core", "weights", "io", "commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute, wherever the import statement sits."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            found.add(root)
            found.update(f"{root}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "perceiver_cli":
        return parts[1]
    return None


def reaches(module: str, imported: str, target: str) -> bool:
    """Whether `imported` (a name imported by module) is `target` or inside it."""
    return imported == target or imported.startswith(target + ".")


def test_the_graph_sees_every_module_and_known_imports():
    modules = graph()
    assert "perceiver_cli.core.loading" in modules and "perceiver_cli.load" in modules
    assert any(reaches("perceiver_cli.load", name, "perceiver_cli.weights") for name in modules["perceiver_cli.load"])
    assert any(name == "torch" for name in modules["perceiver_cli.core.layers"])


@pytest.mark.parametrize("source, forbidden", [
    ("perceiver_cli.core", "perceiver_cli.weights"),
    ("perceiver_cli.core", "perceiver_cli.commands"),
    ("perceiver_cli.core", "perceiver_cli.load"),
    ("perceiver_cli.core", "perceiver_cli.cli"),
    ("perceiver_cli.io", "torch"),
    ("perceiver_cli.io", "perceiver_cli.core"),
    ("perceiver_cli.io", "perceiver_cli.weights"),
    ("perceiver_cli.io", "perceiver_cli.commands"),
    ("perceiver_cli.weights", "perceiver_cli.commands"),
    ("perceiver_cli.weights", "perceiver_cli.load"),
    ("perceiver_cli.weights", "perceiver_cli.cli"),
])
def test_no_arrow_points_the_wrong_way(source, forbidden):
    offenders = sorted(f"{module} imports {name}" for module, names in graph().items()
                       if reaches("", module, source) for name in names if reaches("", name, forbidden))
    assert offenders == []


def test_no_cycle_among_the_subpackages():
    edges: dict[str, set[str]] = {name: set() for name in SUBPACKAGES}
    for module, names in graph().items():
        here = subpackage(module)
        if here not in SUBPACKAGES:
            continue
        for name in names:
            there = subpackage(name)
            if there in SUBPACKAGES and there != here:
                edges[here].add(there)

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(edges[node]):
            if nxt == start:
                return seen + (nxt,)
            if nxt not in seen:
                found = cycle_from(start, nxt, seen + (nxt,))
                if found:
                    return found
        return None

    cycles = [cycle_from(name, name, (name,)) for name in SUBPACKAGES]
    assert [c for c in cycles if c] == []


def _package_module(name: str, modules: set[str]) -> str | None:
    """The package module an imported name loads: itself, else the nearest enclosing module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_edges(path: Path, modules: set[str]) -> set[str]:
    """The package modules a file imports, wherever the statement sits."""
    return edges_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def edges_in(source: str, here: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules `source` (module `here`) imports: `from pkg import sub` is an edge to pkg.sub (the
    package itself runs first in any case), `from mod import name` an edge to mod."""
    package = here if is_package else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            names = [f"{root}.{alias.name}" if f"{root}.{alias.name}" in modules else root for alias in node.names]
        else:
            continue
        found.update(target for name in names if (target := _package_module(name, modules)) not in (None, here))
    return found


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, grey/black colouring)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_function_level_imports_are_edges_and_a_submodule_import_is_not_one_to_its_package():
    modules = {"perceiver_cli", "perceiver_cli.x", "perceiver_cli.y", "perceiver_cli.sub", "perceiver_cli.sub.z"}
    source = ("import numpy\nfrom perceiver_cli.y import thing\n\n"
              "def f():\n    from perceiver_cli.sub import z\n    from . import y\n    import perceiver_cli.sub.z\n")
    assert edges_in(source, "perceiver_cli.x", False, modules) == {"perceiver_cli.y", "perceiver_cli.sub.z"}
    assert edges_in("from perceiver_cli import __version__\n", "perceiver_cli.x", False, modules) == {"perceiver_cli"}


def test_no_import_cycle_between_package_modules():
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    edges = {module_name(path): module_edges(path, modules) for path in paths}
    assert find_cycle(edges) is None


def test_importing_the_package_and_its_cli_imports_no_torch():
    script = ("import sys, perceiver_cli; a = 'torch' in sys.modules; import perceiver_cli.cli; "
              "import perceiver_cli.weights, perceiver_cli.weights.registry, perceiver_cli.core.spec; "
              "print(a, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
