"""The package's layers only point down, and no module imports itself back (docs/ARCHITECTURE.md).

What counts as an import of a ``seas`` module (``read_imports``), anywhere in a file, function
bodies included:

- ``import seas.x.y``: an import of ``seas.x.y``.
- ``from seas.x import n``: an import of ``seas.x``, and of ``seas.x.n`` too where ``n`` is a
  module of the package. ``from seas import training`` imports ``seas.training``;
  ``from seas import __version__`` (an attribute, no module) imports ``seas`` alone.
- ``importlib.import_module("seas.x.y")`` and ``__import__("seas.x.y")`` (or an alias of either):
  an import of ``seas.x.y``; a literal ``fromlist`` of ``__import__`` reads like ``from ... import``.
  The module name must be a string literal: a call whose name is computed at run time fails the
  build of the graph, unless it is listed in ``COMPUTED_IMPORTS`` with the reason it cannot reach
  a ``seas`` module. An f-string whose fixed start names another top-level package
  (``f"numpy.core.{name}"``) is no ``seas`` import.
- Relative imports are refused: write ``from seas.x import y``.

Which imports make a cycle is said in ``cycles``.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import from its own layer or any layer below it.
LAYERS = (
    ("seas.errors", "seas.fields", "seas.seeds", "seas.files", "seas.weights", "seas.progress"),  # files and foundations
    ("seas.data",),
    ("seas.model",),  # backbone, prompts, attention, features, losses, mask head, schedule
    ("seas.config", "seas.profiles", "seas.run"),  # what a run is
    ("seas.training", "seas.judge"),
    ("seas.generation",),
    ("seas.evaluation", "seas.gallery"),
    ("seas.cli",),
    ("seas",),  # the package itself: its version, and seas.SeaSAugmenter re-exported on first use
)

# The package's calls to import_module/__import__ with a computed module name, keyed by
# (module, enclosing function), each with why it cannot import a seas module. The graph's build
# fails on a call missing here and on an entry that no longer matches a call.
COMPUTED_IMPORTS = {
    ("seas.evaluation.lpips_weights", "NumpyUnpickler.find_class"):
        "imports only a module named in NumpyUnpickler.ALLOWED (numpy, collections)",
}


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_seas(name: str) -> bool:
    return name == "seas" or name.startswith("seas.")


def packages_above(module: str) -> list[str]:
    """``seas.a.b`` -> ``["seas", "seas.a"]``: the packages Python runs before the module."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def from_import(package: str, names: Iterable[str], modules: Collection[str]) -> set[str]:
    """``from package import names``: the package, and each name that is a module of it."""
    return {package} | {f"{package}.{name}" for name in names if f"{package}.{name}" in modules}


def _literal(node: ast.AST):
    """The value of a literal expression; None where it is computed."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return None


def _fixed_top_level(node: ast.AST) -> str | None:
    """The top-level package a module-name expression names whatever it computes; None if open."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split(".")[0]
    if (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
            and "." in node.values[0].value):
        return node.values[0].value.split(".")[0]
    return None


class _ImportReader(ast.NodeVisitor):
    """Collects a file's ``seas`` imports and where it computes a module name (module docstring)."""

    def __init__(self, tree: ast.AST, modules: Collection[str], where: str):
        self.modules, self.where = modules, where
        self.found: set[str] = set()
        self.computed: set[tuple[str, int]] = set()  # (enclosing function or "<module>", line)
        self.scope: list[str] = []
        self.loader_names = {"import_module", "__import__"} | {  # plus local aliases of import_module
            alias.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == "importlib" for alias in node.names
            if alias.name == "import_module" and alias.asname}

    def _visit_scope(self, node) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_scope

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names if is_seas(alias.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0, f"{self.where}:{node.lineno}: relative import; write 'from seas.x import y'"
        if node.module and is_seas(node.module):
            self.found |= from_import(node.module, (alias.name for alias in node.names), self.modules)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = node.func
        if not ((isinstance(func, ast.Name) and func.id in self.loader_names)
                or (isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__"))):
            return
        given = dict(zip(("name", "globals", "locals", "fromlist"), node.args))
        given.update((keyword.arg, keyword.value) for keyword in node.keywords if keyword.arg)
        if "name" not in given:  # only *args or **kwargs: the name is computed
            self._computed(node)
            return
        name, top = _literal(given["name"]), _fixed_top_level(given["name"])
        if not isinstance(name, str):
            if top in (None, "seas"):
                self._computed(node)
            return
        assert not name.startswith("."), f"{self.where}:{node.lineno}: relative import; write 'seas.x.y'"
        if not is_seas(name):
            return
        self.found.add(name)
        if "fromlist" in given:
            names = _literal(given["fromlist"])
            if isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names):
                self.found |= from_import(name, names, self.modules)
            else:
                self._computed(node)

    def _computed(self, node: ast.Call) -> None:
        self.computed.add((".".join(self.scope) or "<module>", node.lineno))


def read_imports(source: str, modules: Collection[str] = (), where: str = "<source>"
                 ) -> tuple[set[str], set[tuple[str, int]]]:
    """The ``seas`` modules a file's source imports (module docstring), and its import calls with a
    computed module name as (enclosing function or "<module>", line). ``modules``: the package's
    modules, to tell ``from seas.x import module`` from ``from seas.x import attribute``."""
    tree = ast.parse(source)
    reader = _ImportReader(tree, modules, where)
    reader.visit(tree)
    return reader.found, reader.computed


def build_graph(src: Path, computed_ok: Mapping[tuple[str, str], str] | None = None
                ) -> dict[str, set[str]]:
    """Each module of the ``seas`` package under ``src`` -> the ``seas`` modules it imports.

    Fails on an import call whose module name is computed, unless its (module, enclosing function)
    is in ``computed_ok``, and on an entry of ``computed_ok`` that matches no such call.
    """
    computed_ok = computed_ok or {}
    paths = {module_name(path, src): path for path in sorted((src / "seas").rglob("*.py"))}
    graph, seen = {}, set()
    for module, path in paths.items():
        graph[module], computed = read_imports(path.read_text(), paths.keys(), str(path))
        for scope, line in sorted(computed):
            assert (module, scope) in computed_ok, (
                f"{path}:{line}: the module name given to import_module/__import__ is computed; "
                "write it as a string literal ('seas.x.y') so that tests/test_architecture.py "
                "sees the import (or, if it can never be a seas module, list it in COMPUTED_IMPORTS)")
            seen.add((module, scope))
    stale = sorted(set(computed_ok) - seen)
    assert not stale, f"COMPUTED_IMPORTS lists calls that are gone, remove them: {stale}"
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
            for source, targets in sorted(graph.items()) for target in sorted(targets)
            if target != "seas" and layer_of(target) > layer_of(source)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles: chains of imports that lead from a module back to itself.

    The edges follow what Python runs:

    - an import of ``p.m`` runs ``p/__init__.py`` first, so it is an edge to ``p.m`` and to every
      package above it (``p``, ..., ``seas``);
    - an edge from a module to a package above it (``p.m`` -> ``p``, written or implied by an
      import of a sibling ``p.n``) does not count: Python has started ``p`` before ``p.m``, so that
      import runs nothing. Nor does a module importing itself;
    - every other edge counts, a package importing its own module (``p`` -> ``p.m``) included: alone
      that is no cycle, but ``p`` -> ``p.m`` -> ``q.x`` -> ``p`` leaves the package and comes back.
    """
    found, state = [], {}

    def edges(node: str) -> list[str]:
        targets = {above for target in graph.get(node, ()) for above in (target, *packages_above(target))}
        return sorted(t for t in targets if t != node and t not in packages_above(node))

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in edges(node):
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
    return build_graph(SRC, COMPUTED_IMPORTS)


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


# ----------------------------------------------------------------------------- made-up packages


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Writes ``{"seas/data/split.py": source, ...}`` under ``root``, with an empty ``__init__.py``
    in every package folder not given; returns ``root`` (the ``src`` of the made-up package)."""
    for relative, source in files.items():
        path = root / relative
        for folder in path.relative_to(root).parents[:-1]:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / "__init__.py").touch()
        path.write_text(source)
    return root


MODULES = {"seas", "seas.data", "seas.training", "seas.training.loop", "seas.judge", "seas.judge.qc",
           "seas.evaluation", "seas.evaluation.downstream"}


def test_from_import_of_a_module_is_an_import_of_that_module(tmp_path):
    """``from seas import training`` imports ``seas.training``; a non-module name only its package."""
    assert read_imports("from seas import training", MODULES)[0] == {"seas", "seas.training"}
    assert read_imports("from seas import data as d, __version__", MODULES)[0] == {"seas", "seas.data"}
    assert read_imports("from seas import __version__", MODULES)[0] == {"seas"}
    assert read_imports("def f():\n    from seas.evaluation import downstream, Thing\n",
                        MODULES)[0] == {"seas.evaluation", "seas.evaluation.downstream"}

    src = write_package(tmp_path, {"seas/__init__.py": "__version__ = '0'\n",
                                   "seas/data/split.py": "from seas import training, __version__\n",
                                   "seas/training/loop.py": ""})
    assert upward_imports(build_graph(src)) == ["seas.data.split (layer 1) imports seas.training (layer 4)"]


def test_import_calls_with_a_literal_name_are_imports(tmp_path):
    """``importlib.import_module("seas.x")``, ``__import__("seas.x")`` and their aliases import ``seas.x``."""
    calls = {
        "import importlib\nimportlib.import_module('seas.training.loop')\n": {"seas.training.loop"},
        "import importlib as il\ndef f():\n    return il.import_module('seas.judge.qc')\n": {"seas.judge.qc"},
        "from importlib import import_module as load\nload(name='seas.judge')\n": {"seas.judge"},
        "__import__('seas.training')\n": {"seas.training"},
        "__import__('seas', fromlist=('training', 'x'))\n": {"seas", "seas.training"},
        "import importlib\nimportlib.import_module('numpy.core')\n": set(),
    }
    for source, imported in calls.items():
        assert read_imports(source, MODULES) == (imported, set()), source

    split = "import importlib\ndef load():\n    return importlib.import_module('seas.training.loop')\n"
    src = write_package(tmp_path, {"seas/data/split.py": split, "seas/training/loop.py": ""})
    assert upward_imports(build_graph(src)) == [
        "seas.data.split (layer 1) imports seas.training.loop (layer 4)"]


def test_an_import_call_with_a_computed_name_fails_the_graph(tmp_path):
    """A computed module name could hide any import: the graph's build asks for a literal instead."""
    computed = {
        "import importlib\ndef load(name):\n    return importlib.import_module(name)\n": {("load", 3)},
        "import importlib\nclass A:\n    def f(self, x):\n"
        "        return importlib.import_module(f'seas.{x}')\n": {("A.f", 4)},
        "__import__('seas', fromlist=NAMES)\n": {("<module>", 1)},
        "import importlib\nimportlib.import_module(f'numpy.core.{1}')\n": set(),  # never a seas module
    }
    for source, where in computed.items():
        assert read_imports(source, MODULES)[1] == where, source

    loader = "import importlib\ndef load(name):\n    return importlib.import_module(name)\n"
    src = write_package(tmp_path, {"seas/data/loader.py": loader})
    with pytest.raises(AssertionError, match=r"loader.py:3: .* computed; write it as a string literal"):
        build_graph(src)
    assert build_graph(src, {("seas.data.loader", "load"): "why"})["seas.data.loader"] == set()
    with pytest.raises(AssertionError, match="COMPUTED_IMPORTS lists calls that are gone"):
        build_graph(src, {("seas.data.loader", "load"): "why", ("seas.data.loader", "gone"): "why"})


def test_a_cycle_through_a_package_import_is_found(tmp_path):
    """A chain that leaves a package and comes back through its ``__init__`` is a cycle; a package
    and its own modules, or a chain that re-enters a package which leads nowhere back, are none."""
    through_init = {"seas.evaluation": {"seas.evaluation.a"}, "seas.evaluation.a": {"seas.generation.b"},
                    "seas.generation.b": {"seas.evaluation"}}
    assert cycles(through_init) == [["seas.evaluation", "seas.evaluation.a", "seas.generation.b",
                                     "seas.evaluation"]]
    # b imports a module of seas.evaluation, which runs seas/evaluation/__init__.py first
    implied = {**through_init, "seas.generation.b": {"seas.evaluation.downstream"}}
    assert cycles(implied) == [["seas.evaluation", "seas.evaluation.a", "seas.generation.b",
                                "seas.evaluation"]]

    own_modules = {"seas.model": {"seas.model.a"}, "seas.model.a": {"seas.model", "seas.model.b"},
                   "seas.model.b": {"seas.errors"}}
    assert cycles(own_modules) == []
    back_to_nothing = {"seas.evaluation": set(), "seas.evaluation.a": {"seas.generation.b"},
                       "seas.generation.b": {"seas.evaluation.downstream"},
                       "seas.evaluation.downstream": set()}
    assert cycles(back_to_nothing) == []

    via_init = write_package(tmp_path / "via_init", {
        "seas/evaluation/__init__.py": "from seas.evaluation.a import f\n",
        "seas/evaluation/a.py": "from seas.generation.b import g\ndef f():\n    pass\n",
        "seas/generation/b.py": "def g():\n    import seas.evaluation\n",
    })
    assert cycles(build_graph(via_init)) == [["seas.evaluation", "seas.evaluation.a", "seas.generation.b",
                                              "seas.evaluation"]]
    via_module = write_package(tmp_path / "via_module", {
        "seas/evaluation/downstream.py": "from seas.generation.b import g\n",
        "seas/generation/b.py": "from seas.evaluation import downstream\ndef g():\n    pass\n",
    })
    assert cycles(build_graph(via_module)) == [["seas.evaluation.downstream", "seas.generation.b",
                                                "seas.evaluation.downstream"]]
