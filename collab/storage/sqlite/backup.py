"""``collab backup`` for SQLite: the online backup API, one consistent moment."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from collab.errors import StoreError
from collab.storage.sqlite.schema import BUSY_TIMEOUT_MS


def backup_database(
    source: Path | str,
    target: Path | str,
    *,
    force: bool = False,
    pages_per_step: int = 256,
    progress: Callable[[int, int], None] | None = None,
    connection: sqlite3.Connection | None = None,
) -> int:
    """Copy the database to ``target`` with SQLite's online backup; return its size.

    The copy is one consistent snapshot even while a server writes: the source connection
    holds a single read transaction for the whole copy, so the backup never sees (or
    restarts for) later commits, and under WAL the server's writes do not wait for it. The
    copy is written to ``<target>.partial`` and renamed when complete and checked.

    :param connection: copy through this connection (an in-memory database's, whose
        owner holds it meanwhile) instead of opening the file ``source``.
    :raises StoreError: the target exists (without ``force``) or either file fails.
    """
    source, target = Path(source), Path(target)
    if connection is None and not source.is_file():
        raise StoreError(f"no database at {str(source)!r}")
    if connection is None and target.exists() and target.resolve() == source.resolve():
        raise StoreError("the backup target is the database itself")
    if target.exists() and not force:
        raise StoreError(f"{str(target)!r} exists; pass --force to overwrite it")
    if target.is_dir():
        raise StoreError(f"{str(target)!r} is a directory; give a file name")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        src = connection or sqlite3.connect(
            source, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot
            dst = sqlite3.connect(partial)
            try:

                def step(status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                src.backup(dst, pages=pages_per_step, progress=step)
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise StoreError(f"the copy failed its integrity check: {check}")
            finally:
                dst.close()
            src.execute("COMMIT")
        finally:
            if connection is None:
                src.close()
            elif src.in_transaction:
                src.execute("ROLLBACK")
        os.replace(partial, target)
    except sqlite3.DatabaseError as e:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {e}") from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size
