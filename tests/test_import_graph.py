"""The import graph of the project: no cycles, dependencies one way, every module importable.

``provenance`` <- ``mixers`` <- ``collapse_eval`` <- ``cli`` (DESIGN.md). The graph is read with
``ast`` from every ``import`` statement, those inside functions included: an import made lazily
still ties the two modules together.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("provenance", "mixers", "collapse_eval")
#: Each layer and what it must not import (the layers above it).
FORBIDDEN = {
    "provenance": ("mixers", "collapse_eval", "cli"),
    "mixers": ("collapse_eval", "cli"),
    "collapse_eval": ("cli",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project, by dotted name."""
    files = [ROOT / "cli.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return {_module_name(path): path for path in files}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in ``module`` names (absolute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports. ``from a import b`` is an edge to ``a.b``
    where that is a module, else to ``a``."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = _imported(node, name, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                submodules = [t for t in targets[:-1] if t in modules]
                targets = submodules if len(submodules) == len(targets) - 1 else [
                    *submodules, targets[-1]]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (the strongly
    connected components of two or more modules, Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def find_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One cycle through the first module of ``group`` (a tangle), as ``[a, b, ..., a]``."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to the start
        nxt = []
        for module in frontier:
            for target in sorted(graph[module] & members):
                if target == start:
                    return [*paths[module], start]
                if target not in paths:
                    paths[target] = [*paths[module], target]
                    nxt.append(target)
        frontier = nxt
    raise ValueError(f"{group} is not a tangle of {graph}")


def test_tangles_and_their_cycles() -> None:
    assert tangles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b", "d"}, "d": {"e"}, "e": {"d", "a"}}
    assert tangles(graph) == [["a", "b", "c", "d", "e"]]
    assert find_cycle(graph, ["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e", "a"]
    assert tangles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_a_lazy_import_inside_a_function_is_an_edge(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n    return g\n")
    graph = import_graph({"a": tmp_path / "a.py", "b": tmp_path / "b.py"})
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert tangles(graph) == [["a", "b"]]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_there_is_no_import_cycle(graph: dict[str, set[str]]) -> None:
    found = tangles(graph)
    assert not found, "import cycles (modules that import each other, lazy imports included):\n" \
        + "\n".join(" -> ".join(find_cycle(graph, group)) + f"  (tangle: {', '.join(group)})"
                     for group in found)


def test_dependencies_point_one_way(graph: dict[str, set[str]]) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        for forbidden in FORBIDDEN.get(module.split(".")[0], ())
        if target == forbidden or target.startswith(forbidden + ".")
    )
    assert not wrong, "imports against the layers (provenance <- mixers <- collapse_eval <- " \
                      "cli):\n" + "\n".join(wrong)


def _imports_ray_at_load(modules: dict[str, Path], module: str,
                         seen: set[str] | None = None) -> bool:
    """Whether importing ``module`` imports the optional ``ray``: a module-level import of it
    there or in a project module it imports at module level."""
    seen = set() if seen is None else seen
    seen.add(module)
    path = modules[module]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets = _imported(node, module, path.name == "__init__.py")
        if any(t.split(".")[0] == "ray" for t in targets):
            return True
        if any(t in modules and t not in seen and _imports_ray_at_load(modules, t, seen)
               for t in targets):
            return True
    return False


@pytest.mark.parametrize("package", ["cli", *PACKAGES])
def test_every_module_imports_in_a_fresh_interpreter(package: str) -> None:
    """One fresh interpreter per package imports each of its modules (the optional ``ray``'s
    users skipped where it is not installed) and names every module that fails."""
    modules = project_modules()
    names = sorted(m for m in modules if m.split(".")[0] == package)
    if importlib.util.find_spec("ray") is None:
        names = [m for m in names if not _imports_ray_at_load(modules, m)]
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"modules that fail to import:\n{done.stdout}{done.stderr}"
