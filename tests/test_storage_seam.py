"""The storage seam holds: only collab/storage knows which database is behind it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

#: Modules that are the SQLite backend's business alone.
SQLITE_MODULES = ("sqlite3", "sqlite_utils", "collab.storage.sqlite")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from collab.storage import sqlite`` counts too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def is_sqlite(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in SQLITE_MODULES)


#: Not the server's store: the offline-first client's own file on the client's machine
#: (collab.client, ``local=``), which no backend choice could replace.
CLIENT_SIDE = {"collab/localstore.py"}


def test_nothing_outside_collab_storage_imports_sqlite() -> None:
    package = ROOT / "collab"
    offenders = {
        str(path.relative_to(ROOT)): sorted(filter(is_sqlite, imported_modules(path)))
        for path in package.rglob("*.py")
        if package / "storage" not in path.parents
        and str(path.relative_to(ROOT)) not in CLIENT_SIDE
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_check_sees_a_sqlite_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import sqlite3\nfrom collab.storage import sqlite\nfrom x import y\n")
    assert sorted(filter(is_sqlite, imported_modules(module))) == [
        "collab.storage.sqlite",
        "sqlite3",
    ]


def test_the_backend_neutral_storage_modules_import_no_database() -> None:
    storage = ROOT / "collab" / "storage"
    for name in ("base.py", "commit.py", "writer.py"):
        assert sorted(filter(is_sqlite, imported_modules(storage / name))) == [], name
