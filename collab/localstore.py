"""A client's copy of one document in a local SQLite file (``Client(url, local=PATH)``).

The file is an append-only log of the document's transactions, local and remote, as the
client's doc encoded them, so a program can edit offline, exit, or be killed, and start
again later with everything it had: its own changes the server never acknowledged
included (a delete too, in the update's delete set). Nothing in it is replayed to the
server as it came: after every (re)connection the client's sync step 2 sends what the
server's state vector lacks, computed from the document.

Each append is its own transaction (WAL, ``synchronous=NORMAL``), committed before the
call that made the edit returns: an edit survives a kill of the process from then on
(not a power loss, as for the server). The log is bounded: past :data:`COMPACT_ROWS` rows
it is squashed into one, in one transaction, at open and while running. The file names
the document it belongs to; opening it for another is refused, so two documents never
mix in one file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from collab.errors import CollabError, InvalidUpdateError
from collab.updates import squash

#: Rows the log may grow to before it is squashed into one.
COMPACT_ROWS = 1000
#: How long opening or writing waits for another process holding the file's write lock.
BUSY_TIMEOUT_S = 5.0

migrations = Migrations("collab-client")


@migrations(name="0001_updates_and_meta")
def _create_tables(db: Database) -> None:
    db.execute("CREATE TABLE updates (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


class LocalStoreError(CollabError):
    """The local file cannot be opened, read or written, or belongs to another document."""


class LocalStore:
    """The local log of one document. Open with :meth:`open`; not thread-safe."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._rows = 0

    @classmethod
    def open(cls, path: str | Path, document: str) -> LocalStore:
        """Open (creating if needed) the local file of ``document`` (its URL, no query).

        :raises LocalStoreError: the file is not such a file, or holds another document.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: each statement commits, unless inside BEGIN ... COMMIT.
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise LocalStoreError(f"cannot open {path}: {e}") from None
        store = cls(path, conn)
        try:
            store._prepare(document)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise LocalStoreError(f"{path} is not a collab client file: {e}") from None
        except LocalStoreError:
            conn.close()
            raise
        return store

    def _prepare(self, document: str) -> None:
        conn = self._conn
        db = Database(conn)
        tables = set(db.table_names())  # before any pragma: a foreign file stays as it was
        if tables and "meta" not in tables:
            raise LocalStoreError(f"{self.path} holds other tables: not a collab client file")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if migrations.pending(db):
                migrations.apply(db)
            row = conn.execute("SELECT value FROM meta WHERE key = 'document'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('document', ?)", (document,))
            elif row[0] != document:
                raise LocalStoreError(
                    f"{self.path} holds {row[0]}, not {document}: use one file per document"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._rows = conn.execute("SELECT count(*) FROM updates").fetchone()[0]

    def load(self) -> list[bytes]:
        """Every update in the file, oldest first (squashed first when there are many).

        :raises LocalStoreError: the file cannot be read, or holds an unreadable update.
        """
        if self._rows > 1:
            self.compact()
        try:
            return [
                bytes(r[0]) for r in self._conn.execute("SELECT data FROM updates ORDER BY seq")
            ]
        except sqlite3.Error as e:
            raise LocalStoreError(f"cannot read {self.path}: {e}") from None

    def append(self, update: bytes) -> None:
        """Add one transaction's update; committed when this returns.

        :raises LocalStoreError: the write failed (disk full, file locked for too long).
        """
        try:
            self._conn.execute("INSERT INTO updates (data) VALUES (?)", (update,))
        except sqlite3.Error as e:
            raise LocalStoreError(f"cannot write {self.path}: {e}") from None
        self._rows += 1
        if self._rows >= COMPACT_ROWS:
            self.compact()

    def compact(self) -> None:
        """Squash the log into one row, in one transaction (another process's appends wait).

        :raises LocalStoreError: the file cannot be written, or holds an unreadable update.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute("SELECT seq, data FROM updates ORDER BY seq").fetchall()
                if len(rows) > 1:
                    merged = squash([bytes(data) for _, data in rows])
                    conn.execute("DELETE FROM updates WHERE seq <= ?", (rows[-1][0],))
                    conn.execute("INSERT INTO updates (data) VALUES (?)", (merged,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise LocalStoreError(f"cannot compact {self.path}: {e}") from None
        except InvalidUpdateError as e:
            raise LocalStoreError(f"{self.path} holds an unreadable update: {e}") from None
        self._rows = min(len(rows), 1)

    def close(self) -> None:
        self._conn.close()
