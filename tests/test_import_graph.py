"""The import graph of milr (issue #10, "Done when"): no circle, no import into a higher layer.

Every ``import`` statement in milr/ and critics/ (shipped as ``milr.critics``) is read with
`ast`, at module level and inside functions alike (a lazy import is still a dependency);
imports under ``if TYPE_CHECKING:`` are annotations only and are left out of the layer checks,
but not of the file-level circle check (issue #21: a type shared by two modules lives below
both). Layers, low to high:

    core (milr/*.py, milr.models)  <  milr.shapes  <  milr.critics  <  milr.bench, milr.testing  <  milr.cli

A module may import its own layer or a lower one. Plugins found by name at run time
(`importlib.import_module` over `DEFAULT_PLUGINS`) are not imports and are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, int], ...] = (
    ("milr.cli", 4),
    ("milr.__main__", 4),
    ("milr.bench", 3),
    ("milr.testing", 3),
    ("milr.critics", 2),
    ("milr.shapes", 1),
    ("milr", 0),
)

#: Known edges that break the layering and are being removed elsewhere; each has its own
#: strict xfail below, so the mark fails (and must go) as soon as the edge is gone.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for base, package in ((ROOT / "milr", "milr"), (ROOT / "critics", "milr.critics")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    node: ast.AST, module_level: bool, type_only: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements under `node`; with `module_level`, none inside a def or class; with
    `type_only`, those under ``if TYPE_CHECKING:`` too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child) and not type_only:
            children: list[ast.AST] = list(child.orelse)
        elif module_level and isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
        ):
            continue
        else:
            children = [child]
        for c in children:
            if isinstance(c, (ast.Import, ast.ImportFrom)):
                yield c
            yield from _imports(c, module_level, type_only)


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in mods else None


def import_graph(module_level: bool = False, type_only: bool = False) -> dict[str, set[str]]:
    """Module -> the milr modules it imports (anywhere in its body, or at module level; with
    `type_only`, the ``TYPE_CHECKING`` imports as well)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _imports(tree, module_level, type_only):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_package else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import sub` imports the submodule when one exists
                names = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source
                    for a in node.names
                ]
            for name in names:
                target = _resolve(name, mods)
                if target is not None and target != mod:
                    targets.add(target)
        graph[mod] = targets
    return graph


def layer(module: str) -> int:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    raise AssertionError(f"no layer for {module}")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_lazy_and_relative_imports(graph):
    """The reader itself: function-level and `from milr import sub` imports are edges."""
    assert "milr.plugins" in graph["milr.registry"]  # module level, `from milr import plugins`
    assert "milr.registry" in graph["milr.generator"]  # inside load_generator
    assert "milr.shapes.world" in graph["milr.critics.shapes"]
    assert len(graph) > 40


def test_detector_finds_a_circle_and_an_upward_edge():
    toy = {"milr.a": {"milr.b"}, "milr.b": {"milr.a"}, "milr.c": {"milr.cli.main"}}
    toy["milr.cli.main"] = set()
    assert cycles(toy) == [["milr.a", "milr.b"]]
    assert upward_edges(toy) == {("milr.c", "milr.cli.main")}


def test_no_import_circle(graph):
    assert cycles(graph) == []


def test_no_file_level_circle_even_through_type_only_imports():
    """A type or helper two modules share lives below both (issue #21): ``errors``/``critic``
    share `milr.critic_result`, ``ensemble``/``ensemble_batch`` share ``Member`` in the
    latter, ``generator``/``generator_batch``/``phases`` share `milr.generated`."""
    full = import_graph(type_only=True)
    assert "milr.critic_result" in full["milr.errors"]  # the reader sees type-only imports
    assert cycles(full) == []


def test_the_type_only_reader_would_see_the_old_circles():
    """The check can fail: a ``TYPE_CHECKING`` import back up is an edge of the full graph."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import milr.critic\n"
    )
    seen = [n for n in _imports(tree, False, type_only=True) if isinstance(n, ast.Import)]
    assert [n.names[0].name for n in seen] == ["milr.critic"]
    assert not [n for n in _imports(tree, False) if isinstance(n, ast.Import)]


def test_plugins_and_registry_do_not_import_each_other_both_ways(graph):
    assert "milr.plugins" in graph["milr.registry"]
    assert "milr.registry" not in graph["milr.plugins"]


def test_no_import_into_a_higher_layer(graph):
    assert sorted(upward_edges(graph) - KNOWN_UPWARD) == []


def test_shapes_is_registered_from_above_not_imported_from_below(graph):
    """``shapes`` is a named checkpoint that milr.shapes.model registers (issue #10.5)."""
    assert not any(b.startswith("milr.shapes") for b in graph["milr.generator"])
    assert "milr.generator" in graph["milr.shapes.model"]


def test_core_imports_no_higher_layer_at_module_level():
    """Module level only: what `import milr` and the core pull in when first imported."""
    top = import_graph(module_level=True)
    assert "milr.shapes.model" not in top["milr.generator"]  # lazy, so not at module level
    assert "milr.plugins" in top["milr.registry"]
    assert sorted((a, b) for a, b in upward_edges(top) if layer(a) == 0) == []


# --- module size (issue #10, "Done when": no module over ~450 lines but the rules engine) ---

MAX_LINES = 450
EXEMPT = {"milr/geneval_rules.py"}  # the rules engine, one restatement of one evaluator
#: Over the limit when this test was written, owned by other work in progress; each is a
#: strict xfail, so it fails (and the entry must go) once the module is split.
KNOWN_LONG: set[str] = set()


def _sources() -> list[str]:
    files = sorted((ROOT / "milr").rglob("*.py")) + sorted((ROOT / "critics").rglob("*.py"))
    return [p.relative_to(ROOT).as_posix() for p in files]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            p,
            marks=pytest.mark.xfail(strict=True, reason=f"{p} is over {MAX_LINES} lines"),
        )
        if p in KNOWN_LONG
        else p
        for p in _sources()
        if p not in EXEMPT
    ],
)
def test_module_is_at_most_450_lines(path):
    n = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path} has {n} lines; split it by responsibility"
