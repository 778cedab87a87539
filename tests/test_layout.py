"""The code's shape: folders by plane, imports one way, the README's map true.

Read from the source with `ast` (nothing is imported): `router/core` imports
nothing of the router but itself, `strategies/` only `router.core`; no import
cycle runs at import time; the README's Development section names every
module. An import under `if TYPE_CHECKING:` names a type only; such cycles
are allowed inside `router/dataplane` alone, where the exchange and the
helpers it calls name each other's types (mypyc compiles them as one group).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("router", "strategies")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """(module imported, only for type checking) for every import of ours in `path`."""

    def walk(nodes: list[ast.stmt], typing_only: bool) -> Iterator[tuple[str, bool]]:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                yield from walk(node.body, True)
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                    candidates = [sub.module] + [f"{sub.module}.{a.name}" for a in sub.names]
                elif isinstance(sub, ast.Import):
                    candidates = [a.name for a in sub.names]
                else:
                    continue
                for name in candidates:
                    if name in known:
                        yield name, typing_only

    yield from walk(ast.parse(path.read_text()).body, False)


def graph(typing_too: bool) -> dict[str, set[str]]:
    known = modules()
    return {
        name: {dep for dep, only in imports(path, known) if typing_too or not only} - {name}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_core_imports_only_core_and_strategies_only_core() -> None:
    """router.core is pure; strategies build on it alone."""
    wrong = []
    for name, deps in graph(typing_too=True).items():
        allowed: tuple[str, ...]
        if name.startswith("router.core"):
            allowed = ("router.core",)
        elif name.startswith("strategies"):
            allowed = ("router.core", "strategies")
        else:
            continue
        wrong += [f"{name} imports {d}" for d in deps if not d.startswith(allowed)]
    assert wrong == []


def test_no_import_cycle_runs_at_import_time() -> None:
    """Modules import each other one way; a type named both ways is the only exception."""
    assert cycles(graph(typing_too=False)) == []


def test_type_only_cycles_stay_inside_the_data_plane() -> None:
    """Outside router.dataplane, not even TYPE_CHECKING imports go both ways."""
    outside = [c for c in cycles(graph(typing_too=True)) if not all(
        m.startswith("router.dataplane.") for m in c
    )]  # fmt: skip
    assert outside == []


def test_the_router_folder_holds_few_modules_beside_its_planes() -> None:
    """router/ keeps at most 8 modules at its top; the rest live in their plane's folder."""
    top = [p.name for p in (ROOT / "router").glob("*.py")]
    assert len(top) <= 8, top


def test_no_module_is_longer_than_450_lines() -> None:
    """A module past 450 lines holds more than one idea: split it (STYLE.md: 100-300)."""
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: lines for n, lines in long.items() if lines > 450} == {}


def test_readme_maps_every_module() -> None:
    """The README's Development section names each folder and each module in it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Development", 1)[1].split("\n### ", 1)[0]
    missing = []
    for name, path in modules().items():
        if path.name == "__init__.py":
            folder = path.parent.name
            if f"{folder}/" not in section:
                missing.append(f"{folder}/")
            continue
        stem = path.stem
        if stem not in section:
            missing.append(name)
    assert missing == []
