"""The layers hold: no import circles in engine/, the engine imports none of its users, and
saga definitions in workflows/ stay deterministic (no I/O modules).

Read from the source with ``ast``, so every import counts: at module level, under
``TYPE_CHECKING`` and inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a saga definition must not reach for: it runs inside the Temporal workflow.
IO_MODULES = {
    "asyncio.subprocess", "httpx", "os", "pathlib", "random", "requests", "shutil", "socket",
    "sqlalchemy", "sqlmodel", "subprocess", "time", "urllib", "uuid", "datetime.datetime",
}  # fmt: skip
USERS_OF_THE_ENGINE = ("api", "workflows", "activities", "participants", "examples")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports; ``from pkg import name`` yields ``pkg.name`` when that is
    a module of ours, else ``pkg``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                own = module_name(path).split(".")
                # A module's level 1 is its package; a package's __init__ is its own.
                keep = len(own) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join([*own[:keep], base] if base else own[:keep])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if _is_our_module(candidate) else base


def _is_our_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def engine_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "engine").glob("*.py")):
        name = module_name(path)
        graph[name] = {m for m in imports_of(path) if m == "engine" or m.startswith("engine.")}
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


class TestCycleFinder:
    """The checker itself finds what it is meant to find."""

    def test_finds_a_cycle(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        cycle = find_cycle(graph)
        assert cycle is not None
        assert cycle[0] == cycle[-1]
        assert set(cycle) == {"a", "b", "c"}

    def test_a_tree_has_none(self) -> None:
        assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None

    def test_reads_lazy_imports_and_our_submodules(self, tmp_path: Path) -> None:
        source = tmp_path / "lazy.py"
        source.write_text(
            "from engine import _metrics, Saga\n"
            "def f():\n    import json\n    from os import path\n"
        )
        assert set(imports_of(source)) == {"engine._metrics", "engine", "json", "os"}


class TestEngineLayers:
    """engine/ is the library: one direction of imports, nothing from the code that uses it."""

    def test_no_import_circles(self) -> None:
        assert find_cycle(engine_graph()) is None

    def test_engine_modules_do_not_import_the_facade(self) -> None:
        # engine/__init__ imports every tier; a module importing it back is a circle.
        offenders = [m for m, deps in engine_graph().items() if m != "engine" and "engine" in deps]
        assert offenders == []

    @pytest.mark.parametrize("user", USERS_OF_THE_ENGINE)
    def test_engine_does_not_import_its_users(self, user: str) -> None:
        offenders = [
            f"{module_name(path)} imports {imported}"
            for path in sorted((ROOT / "engine").rglob("*.py"))
            for imported in imports_of(path)
            if imported == user or imported.startswith(f"{user}.")
        ]
        assert offenders == []


class TestWorkflowsAreDeterministic:
    """Saga definitions run inside the workflow: no I/O, clocks or randomness there."""

    def test_no_io_imports_in_workflows(self) -> None:
        offenders = [
            f"{module_name(path)} imports {imported}"
            for path in sorted((ROOT / "workflows").rglob("*.py"))
            for imported in imports_of(path)
            if imported in IO_MODULES or imported.split(".")[0] in IO_MODULES
        ]
        assert offenders == []
