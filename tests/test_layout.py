"""The package's layering and import graph: cli -> pipeline -> stages -> store, no cycles.

Module-level imports only (an import inside a function is a deliberate lazy one, e.g. a loader
that must not pull in stage 1 for stage 2). Any layer may read store, the shared data model; the
root modules (errors, config, progress, version) sit below every layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("cli", "pipeline", "stages", "store", "benchmarks")
# layer -> the layers its modules may import (besides itself and the root package's modules)
ALLOWED = {
    "cli": {"pipeline", "store"},
    "pipeline": {"stages", "store"},
    "stages": {"store"},
    "store": set(),
    "benchmarks": {"pipeline", "stages", "store"},
    "": {"cli"},  # the root package: only __main__ reaches the CLI
}


def module_name(path: Path) -> str:
    parts = ["vidlat", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    files = [p for p in ROOT.glob("*.py") if p.name != "setup.py"]
    for layer in LAYERS:
        files += (ROOT / layer).rglob("*.py")
    return {module_name(p): p for p in files}


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The vidlat modules a file imports at module level: `from pkg import module` is an edge to
    the module, `from module import name` one to the module."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or {node.module}
    return out


def graph() -> dict[str, set[str]]:
    mods = package_modules()
    return {n: top_level_imports(p, set(mods)) for n, p in mods.items()}


def layer_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def test_layers_import_only_downwards():
    bad = []
    for mod, deps in graph().items():
        mine = layer_of(mod)
        for dep in deps:
            theirs = layer_of(dep)
            if theirs and theirs != mine and theirs not in ALLOWED[mine]:
                bad.append(f"{mod} -> {dep}")
    rule = "imports against the layering cli -> pipeline -> stages -> store:\n"
    assert not bad, rule + "\n".join(sorted(bad))


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_real_edges():
    # the checks above are only as good as the graph: known edges must be in it
    edges = graph()
    assert "vidlat.stages.training.loop" in edges["vidlat.stages.training.train_ae"]
    assert "vidlat.store.format" in edges["vidlat.store.reader"]
    assert "vidlat.store.writer" not in edges["vidlat.store.reader"]
    assert layer_of("vidlat.stages.stage1.drnet") == "stages" and layer_of("vidlat.errors") == ""
