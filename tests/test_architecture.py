"""The package's layers only point down, and no module imports itself back (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import from its own layer or any layer below it.
LAYERS = (
    ("seas.errors", "seas.fields", "seas.seeds", "seas.files", "seas.weights"),  # files and foundations
    ("seas.data",),
    ("seas.model",),  # backbone, prompts, attention, features, losses, mask head, schedule
    ("seas.config", "seas.profiles", "seas.run"),  # what a run is
    ("seas.training", "seas.judge"),
    ("seas.generation",),
    ("seas.evaluation", "seas.gallery"),
    ("seas.cli",),
)


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def seas_imports(path: Path) -> set[str]:
    """Every ``seas.*`` module a file imports, at any depth (function-level imports too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; write 'from seas.x import y'"
            if node.module and node.module.startswith("seas"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("seas"))
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
            for source, targets in sorted(graph.items()) for target in sorted(targets)
            if target != "seas" and layer_of(target) > layer_of(source)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package and its own modules excepted)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target == node or target.startswith(node + ".") or node.startswith(target + "."):
                continue
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {module_name(p): seas_imports(p) for p in sorted((SRC / "seas").rglob("*.py"))}


def test_every_module_sits_in_a_layer(graph):
    for module in graph:
        if module != "seas":
            layer_of(module)


def test_no_module_imports_from_a_layer_above(graph):
    assert upward_imports(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_checks_catch_what_they_are_for():
    """An upward import and a cycle in a made-up graph are both reported."""
    fake = {"seas.data.split": {"seas.training.loop"}, "seas.training.loop": {"seas.seeds"},
            "seas.model.a": {"seas.model.b"}, "seas.model.b": {"seas.model.a"}}
    assert upward_imports(fake) == ["seas.data.split (layer 1) imports seas.training.loop (layer 4)"]
    assert cycles(fake) == [["seas.model.a", "seas.model.b", "seas.model.a"]]
