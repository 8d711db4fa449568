"""The import graph of collab/ points one way: no cycles, and each layer knows its place.

Read from the source with ``ast`` (nothing is imported), every import counted, also those
inside functions and under ``TYPE_CHECKING``: a cycle hidden in a function is still a
cycle a newcomer has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "collab"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str = "collab") -> dict[str, set[str]]:
    """{module: the modules of ``package`` it imports}, for every module under root/package.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
    Importing a submodule runs its package's ``__init__`` too, but that is no edge here:
    a package re-exporting its submodules would otherwise be in a cycle with each of them.
    """
    paths = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    edges.add(full if full in paths else base)
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def imports_of(graph: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    return {m: targets for m, targets in graph.items() if m == prefix or m.startswith(prefix + ".")}


def test_collab_has_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert {"collab.transport.websocket", "collab.transport.http"} <= graph["collab.app"]
    assert find_cycle(graph) is None


def test_the_transport_never_imports_the_app() -> None:
    graph = import_graph(ROOT)
    offenders = {
        m: sorted(t for t in targets if t == "collab.app" or t == "collab.server")
        for m, targets in imports_of(graph, "collab.transport").items()
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_protocol_imports_only_errors() -> None:
    graph = import_graph(ROOT)
    for module, targets in imports_of(graph, "collab.protocol").items():
        assert {t for t in targets if not t.startswith("collab.protocol")} <= {"collab.errors"}, (
            module
        )


def test_storage_and_bus_know_bytes_and_names_not_rooms_or_sockets() -> None:
    graph = import_graph(ROOT)
    forbidden = ("collab.rooms", "collab.transport", "collab.app", "collab.hooks")
    for layer in ("collab.storage", "collab.bus"):
        for module, targets in imports_of(graph, layer).items():
            bad = {t for t in targets if t.startswith(forbidden)}
            assert not bad, (module, bad)


def test_the_walk_finds_a_cycle_and_resolves_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
