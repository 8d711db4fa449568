"""``collab backup`` for PostgreSQL: a logical copy of every table into a SQLite file.

The copy reads one REPEATABLE READ snapshot, so it is a single moment's state while
nodes keep writing, and nobody waits for it. The result is a complete collab database in
the embedded backend's format (same ids, seqs, epochs, history and retired state
vectors): ``collab serve --db copy.db`` runs on it, ``collab docs export --db copy.db``
reads one document out of it, and ``collab docs import`` puts one back. So it doubles as
the migration from PostgreSQL to SQLite. A PostgreSQL-native dump is ``pg_dump``'s job
(docs/storage.md). The copy is written to ``<target>.partial``, checked, then renamed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg

from collab.errors import StoreError
from collab.storage.postgres.schema import describe
from collab.storage.sqlite.schema import connect, write_transaction

#: Rows fetched and inserted at a time.
ROWS_PER_STEP = 500

#: table -> the columns copied, the same names in both schemas (``last_seq`` is
#: PostgreSQL's own: SQLite reads the newest seq from the log).
COPIED: dict[str, tuple[str, ...]] = {
    "documents": (
        "id",
        "name",
        "epoch",
        "created_at",
        "updated_at",
        "generation",
        "deleted_at",
        "history_from",
    ),
    "updates": ("doc_id", "seq", "data", "created_at", "merged"),
    "history": ("doc_id", "seq", "data", "created_at"),
    "checkpoints": ("doc_id", "data", "created_at", "merged"),
    "retired_epochs": ("doc_id", "epoch", "state_vector", "retired_at"),
}


def backup_to_sqlite(
    conninfo: str,
    target: Path | str,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the PostgreSQL store at ``conninfo`` into a new SQLite file; return its size.

    ``progress(rows_copied, rows_total)`` is called after each step (on this thread).

    :raises StoreError: the target exists (without ``force``), is a folder, or the copy
        failed.
    """
    target = Path(target)
    if target.exists() and not force:
        raise StoreError(f"{str(target)!r} exists; pass --force to overwrite it")
    if target.is_dir():
        raise StoreError(f"{str(target)!r} is a directory; give a file name")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with psycopg.connect(conninfo, autocommit=True) as src:
            with src.transaction():
                src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                total = 0
                for table in COPIED:
                    row = src.execute(f"SELECT count(*) FROM {table}").fetchone()
                    total += int(row[0]) if row else 0
                dst = connect(partial)
                try:
                    done = 0
                    with write_transaction(dst):  # one SQLite transaction for the copy
                        for table, columns in COPIED.items():
                            listed = ", ".join(columns)
                            insert = (
                                f"INSERT INTO {table} ({listed})"
                                f" VALUES ({', '.join('?' * len(columns))})"
                            )
                            # A server-side cursor: the rows stream in steps, never all at once.
                            with src.cursor(name=f"collab_backup_{table}") as cur:
                                cur.execute(f"SELECT {listed} FROM {table} ORDER BY 1, 2")
                                while rows := cur.fetchmany(ROWS_PER_STEP):
                                    dst.conn.executemany(insert, rows)
                                    done += len(rows)
                                    if progress is not None:
                                        progress(done, total)
                    check = dst.execute("PRAGMA quick_check").fetchone()[0]
                    if check != "ok":
                        raise StoreError(f"the copy failed its integrity check: {check}")
                finally:
                    dst.close()
        if progress is not None:
            progress(total, total)
        os.replace(partial, target)
    except psycopg.Error as e:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup of {describe(conninfo)} failed: {e}") from e
    except sqlite3.DatabaseError as e:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed writing {str(target)!r}: {e}") from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size
