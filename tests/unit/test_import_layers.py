"""Dependencies point one way (docs/architecture.md): the notebook side never reaches the engine.

The walk is static (``ast``), so it sees imports inside functions too: a lazy import is still a dependency, and
it is exactly where a circle used to hide (``engine/daemon.py`` <-> ``rpc/client.py``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

import tradebaas

PACKAGE_ROOT = Path(tradebaas.__file__).resolve().parent
NOTEBOOK_SIDE = ("tradebaas.rpc", "tradebaas.notebook", "tradebaas.strategies", "tradebaas.analytics")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The module that ``import name`` loads (``from pkg import sub`` may name a module or an attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, *, top_level_only: bool = False) -> Iterator[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name.startswith("tradebaas") and (target := resolve(name)) is not None and target != module:
                yield target


def reachable(start: str) -> dict[str, str]:
    """Every module reachable from ``start`` -> the module that imports it (to print the path)."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in imports_of(current):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def chain(seen: dict[str, str], end: str) -> str:
    path = [end]
    while seen[path[-1]]:
        path.append(seen[path[-1]])
    return " -> ".join(reversed(path))


@pytest.mark.parametrize("package", NOTEBOOK_SIDE)
def test_notebook_side_packages_import_nothing_from_the_engine(package: str) -> None:
    starts = [m for m in MODULES if m == package or m.startswith(package + ".")]
    assert starts, f"{package} has no modules"
    for start in starts:
        seen = reachable(start)
        engine = sorted(m for m in seen if m == "tradebaas.engine" or m.startswith("tradebaas.engine."))
        assert not engine, f"{start} reaches the engine: {chain(seen, engine[0])}"


def test_the_walk_sees_lazy_imports() -> None:
    """The check above would pass vacuously if function-level imports were invisible to it."""
    seen = reachable("tradebaas.engine.process.daemon")
    assert "tradebaas.rpc.client" in seen  # imported inside start_detached/status only
    assert "tradebaas.connection" in seen


def test_no_import_circles_at_module_level() -> None:
    graph = {m: set(imports_of(m, top_level_only=True)) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                # a package's __init__ importing its own submodule is not a circle
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(cycle)):
                    pytest.fail("import circle: " + " -> ".join(cycle))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
