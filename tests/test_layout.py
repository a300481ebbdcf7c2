"""The package's shape (issue #15): the folders are the pipeline, imports only go down it, no cycles.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import
hides a cycle at run time but not from a reader. The stage order is the one docs/design.md shows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "shrinknet"

#: bottom to top: a module may import its own stage and the ones before it, never one after it
STAGES = ("errors", "version", "util", "model", "store", "score", "repair", "choose", "ship", "data",
          "workflows", "cli")
MAX_LINES = 600


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from x import y`` counts y when y is a module)."""
    modules = {module_name(p, pkg): p for p in pkg.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_only_go_down_the_pipeline():
    up = [f"{m} -> {t}" for m, ts in import_graph().items() for t in ts
          if stage(m) is not None and stage(t) is not None and stage(t) > stage(m)]
    assert up == []


def test_every_module_is_in_a_stage():
    loose = [m for m in import_graph() if m != "shrinknet" and stage(m) is None and m != "shrinknet.__main__"]
    assert loose == []


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_source_file_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The cycle finder and the stage rule on a planted package: a cycle and an upward import."""
    pkg = tmp_path / "shrinknet"
    (pkg / "model").mkdir(parents=True)
    (pkg / "ship").mkdir()
    for f in ("__init__.py", "model/__init__.py", "ship/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "model" / "a.py").write_text("def f():\n    from ..ship import b\n")
    (pkg / "ship" / "b.py").write_text("from ..model import a\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["shrinknet.model.a", "shrinknet.ship.b"]]
    assert stage("shrinknet.model.a") < stage("shrinknet.ship.b")
