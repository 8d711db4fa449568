"""The SQLite database: its schema and migrations, how it is opened, and transactions.

Schema changes are named sqlite-utils migrations, applied under the write lock so that a
server and a CLI opening an old file at the same moment do not both migrate it. A file that
holds tables but never had collab's schema is refused, never converted (a wrong ``--db``).

Writers in other processes (the admin CLI) take the write lock with ``BEGIN IMMEDIATE``
and wait for it up to ``BUSY_TIMEOUT_MS``; a read-then-write transaction started with a
plain ``BEGIN`` could fail at once with SQLITE_BUSY under WAL instead of waiting.

Durability (``PRAGMA synchronous``, see https://sqlite.org/pragma.html#pragma_synchronous):
with WAL and ``NORMAL`` (the default) a committed transaction survives a crash or kill of
the process; a power loss or OS crash may roll back the last transactions before the
WAL's next checkpoint. ``FULL`` also survives power loss at the cost of an fsync per
group commit. docs/storage.md has the measured costs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from collab.errors import StoreError

#: How long a connection waits for another process's write lock (the admin CLI, say).
BUSY_TIMEOUT_MS = 5000
#: Rows the WAL may grow to before SQLite copies it back into the database (the default).
#: A checkpoint never waits for readers; a reader that stays open blocks only the reset.
WAL_AUTOCHECKPOINT_PAGES = 1000
#: The path that keeps the database in memory (nothing survives closing it).
MEMORY = ":memory:"

migrations = Migrations("collab")


@migrations(name="0001_documents_and_updates")
def _create_tables(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            epoch INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    # One row per accepted update; a compacted row stands for ``merged`` updates and
    # keeps the seq of the last one it covers. WITHOUT ROWID: the primary key is the
    # storage order, so a document's log is one contiguous range scan.
    db.execute(
        """
        CREATE TABLE updates (
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL,
            merged INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (doc_id, seq)
        ) WITHOUT ROWID
        """
    )


@migrations(name="0002_history_checkpoints_epochs")
def _add_history(db: Database) -> None:
    # generation: bumped by appends from other processes (restore, import).
    db.execute("ALTER TABLE documents ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
    # deleted_at: set by ``collab docs delete``, cleared by the next append.
    db.execute("ALTER TABLE documents ADD COLUMN deleted_at REAL")
    # history_from: the earliest time the document can be read at; NULL = any time.
    db.execute("ALTER TABLE documents ADD COLUMN history_from REAL")
    # Raw updates moved out of the log by compaction, kept for the retention window.
    db.execute(
        """
        CREATE TABLE history (
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (doc_id, seq)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX history_by_time ON history (created_at)")
    # At most one per document: every update pruned from history, squashed. created_at is
    # the time of the newest update it covers.
    db.execute(
        """
        CREATE TABLE checkpoints (
            doc_id INTEGER PRIMARY KEY REFERENCES documents(id),
            data BLOB NOT NULL,
            created_at REAL NOT NULL,
            merged INTEGER NOT NULL
        )
        """
    )
    # The state vector each deleted or replaced epoch had reached (rooms detect stale
    # clients with it).
    db.execute(
        """
        CREATE TABLE retired_epochs (
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            epoch INTEGER NOT NULL,
            state_vector BLOB NOT NULL,
            retired_at REAL NOT NULL,
            PRIMARY KEY (doc_id, epoch)
        ) WITHOUT ROWID
        """
    )


# -- connections and transactions ---------------------------------------------------


def connect(path: Path | str, *, synchronous: str = "NORMAL", create: bool = True) -> Database:
    """Open (creating if needed) a collab database, with its pragmas set and schema current.

    :param create: if false, a missing file is an error instead of a new database.
    :raises StoreError: the file cannot be opened or is not a collab database.
    """
    path = str(path)
    if path != MEMORY:
        if not create and not Path(path).is_file():
            raise StoreError(f"no database at {path!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: no implicit transactions; every one is explicit below.
        conn = sqlite3.connect(
            path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        db = Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            _refuse_foreign(db, path)
        except StoreError:
            conn.close()
            raise
        if path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        db.execute("PRAGMA foreign_keys = ON")
        if migrations.pending(db):
            # Under the write lock, so a server and a CLI opening an old file at the same
            # moment do not both try to migrate it.
            with write_transaction(db):
                migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot open database {path!r}: {e}") from e
    return db


def _refuse_foreign(db: Database, path: str) -> None:
    """Refuse a database that holds tables but never had collab's schema: a wrong
    ``--db`` must not be switched to WAL and given collab's tables."""
    tables = db.table_names()
    if tables and not migrations.applied(db):
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{path!r} is not a collab database (it holds other tables: {shown}); pick another --db"
        )


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock first, waiting for it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextmanager
def read_transaction(db: Database) -> Iterator[Database]:
    """One consistent snapshot for several SELECTs (WAL: never blocks writers).

    Inside another transaction it just uses that one.
    """
    if db.conn.in_transaction:
        yield db
        return
    db.execute("BEGIN")
    try:
        yield db
    finally:
        if db.conn.in_transaction:
            db.execute("COMMIT")
