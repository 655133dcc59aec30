"""The import graph of ctxrel is strictly layered and has no cycle: imports follow the data flow
(docs/design.md, 'Data flow and layers', which copies LAYERS below; this test is the authority).

Every module belongs to one layer; a module may import modules of its own layer or of a lower one, never of a
higher one. Imports are read with `ast` from the source, function-local ones included: moving an import into a
function hides it from Python's import order, not from this test. Within a layer the graph must still be
acyclic, so no function-local import can exist to dodge a cycle (there is none to dodge). Function-local
imports remain where they keep `ctxrel --help` instant (torch, transformers, and the modules that pull them in,
imported inside verbs).

A new module must be placed in LAYERS (by its own name or a package above it); the test names it otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ctxrel"

# Lowest first. Folders, not modules: a module's layer is that of its longest listed name (its folder, or a part
# named on its own where a folder spans layers: standard, synth, theory and exports hold parts of several).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("core", "theory.onelayer")),
    ("config", ("config",)),
    ("rundir", ("rundir",)),
    ("data", ("benchmarks", "standard", "synth.world", "synth.mixture")),
    ("models", ("backends", "models", "synth.model")),
    ("evaluate", ("evaluate", "standard.runner", "exports.lmeval_task", "synth.measure")),
    ("train", ("train", "curate", "synth.lab")),
    ("analysis", ("analysis", "report", "exports.every_eval")),
    # the package root is a facade: `ctxrel.load` & co. come lazily from ctxrel.api (its submodules importing the
    # root, e.g. for __version__, are a package's own __init__ and exempt below)
    ("verbs", ("ctxrel", "api", "cli", "__main__", "exports", "report.cli", "curate.cli", "train.study", "theory",
               "synth")),
]
RANK = {name: k for k, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Rank of the layer `module` (dotted, with the `ctxrel.` prefix) belongs to; None when unplaced."""
    short = module.removeprefix("ctxrel.") if module != "ctxrel" else "ctxrel"
    parts = short.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        if name in RANK:
            return RANK[name]
    return None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The ctxrel module an imported dotted name refers to (a module, or the module defining the name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported ctxrel module, line) for every import statement of `module`, at any depth of the source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]  # `from ctxrel import results`: the module itself
        else:
            continue
        for name in names:
            if name == "ctxrel" or name.startswith("ctxrel."):
                target = _target(name)
                if target and target != module:
                    found.append((target, node.lineno))
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        own = layer_of(module)
        for target, line in targets:
            if module.startswith(target + "."):  # a package's own __init__ (imported by Python anyway)
                continue
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                where = MODULES[module].relative_to(SRC) if MODULES[module].is_relative_to(SRC) else MODULES[module]
                bad.append(f"{where}:{line}: {module} ({LAYERS[own][0]}) imports "
                           f"{target} ({LAYERS[theirs][0]})")
    return bad


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), as the list of its modules."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(GRAPH)
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    found = cycles({m: [(t, line) for t, line in ts if not m.startswith(t + ".")] for m, ts in GRAPH.items()})
    assert not found, f"import cycles (function-local imports included): {found}"


@pytest.mark.parametrize("source, module, expected", [
    ("from ctxrel.evaluate.run import run_eval\n", "ctxrel.rundir.files", "ctxrel.evaluate.run"),
    ("def f():\n    from ctxrel.train import checkpoints as ckpt\n", "ctxrel.models.loading", "ctxrel.train.checkpoints"),
    ("import ctxrel.cli\n", "ctxrel.analysis.items", "ctxrel.cli"),
])
def test_the_checks_see_upward_and_local_imports(tmp_path, monkeypatch, source, module, expected):
    """The test's own reader: an upward import, top-level or inside a function, is found and named."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, module, path)
    graph = {module: imports_of(module)}
    assert [t for t, _ in graph[module]] == [expected]
    assert upward_imports(graph) and expected in upward_imports(graph)[0]


def test_cycles_are_found():
    graph = {"a": [("b", 1)], "b": [("c", 1)], "c": [("a", 1)], "d": [("a", 1)]}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_a_private_name_of_another():
    """A name with a leading underscore stays in its module: another module that needs it gets a public name."""
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctxrel"):
                bad += [f"{path.relative_to(SRC)}:{node.lineno}: {a.name} from {node.module}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_every_function_of_the_evaluation_package_is_under_sixty_lines():
    """One scoring engine (evaluate/engine.py) in short steps: no function of evaluate/ grows back into a
    skeleton of its own."""
    long = [f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((PACKAGE / "evaluate").rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 >= 60]
    assert not long, long
