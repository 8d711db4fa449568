"""The embedded default store: an append-only update log in one SQLite file.

Theory of operation
-------------------
Rooms call :meth:`SQLiteLog.append_nowait` on the event loop; it only queues the update
for the commit thread (:mod:`collab.storage.writer`), which waits until the oldest queued
update is ``commit_delay`` old so that a burst of keystrokes shares one transaction (group
commit), then writes the batch and reports back to the loop. The event loop never blocks
on the disk, and a busy loop does not delay commits. All database work of a server process
goes through one connection, one thread at a time (a lock; reads and compaction run in one
worker thread at a time), as datasette's single writer does.

If a commit fails the batch is retried with backoff; nothing is acknowledged until it is
on disk. A document's load first waits for its own queued
updates, so an unload followed by a quick reload never misses a write.

Compaction. The log counts, per document, the raw rows appended since its last compaction.
Past ``compact_rows`` rows or ``compact_bytes`` bytes, a background task compacts it in
three steps: read the rows up to seq N (holding the connection, a short read), squash them into
one update in a worker thread *without* holding it (group commits go on meanwhile), then
swap in one transaction: check that the rows up to N and the epoch are what was read
(else skip: someone else compacted or deleted), move the raw rows to ``history``, delete
rows up to N and insert the squashed row with seq N. Rows appended meanwhile have seqs
above N and are untouched. A crash before COMMIT leaves the old rows, after it the new.

History. Raw rows stay in ``history`` for ``retention`` seconds; then they are squashed into
the document's one ``checkpoints`` row (its *base*: every update up to the newest one it
covers) and ``documents.history_from`` records the earliest time the document can still be
read at. The invariant that makes "the document at time T" the merge of every stored blob
created at or before T, for any T >= history_from: each update is either a raw row
(log or history) or inside a blob created no later than history_from. Compaction and
pruning keep it; see ``_swap_compaction`` and ``_swap_prune``.

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

import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio import AsyncContextManagerMixin, CapacityLimiter, to_thread
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from collab.errors import CollabError, DocumentNotFoundError, StoreError
from collab.storage.base import DocVersion, StoredDoc
from collab.storage.writer import CommitThread
from collab.updates import squash, state_vector_of

if TYPE_CHECKING:
    from collab.config import Settings

log = logging.getLogger("collab.storage")
T = TypeVar("T")

#: How long a connection waits for another process's write lock (the admin CLI, say).
BUSY_TIMEOUT_MS = 5000
#: Rows the WAL may grow to before SQLite copies it back into the database (the default).
#: A checkpoint never waits for readers; a reader that stays open blocks only the reset.
WAL_AUTOCHECKPOINT_PAGES = 1000
#: How often a server looks for history older than the retention window, in seconds.
PRUNE_INTERVAL = 3600.0
#: How many documents' compaction counters a log keeps in memory; others are recounted.
TRACKED_ROOMS = 10_000
#: Default retention of raw history, in seconds (7 days).
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: Names per ``IN (...)`` query; SQLite allows at least 999 parameters.
_NAMES_PER_QUERY = 500
#: Rows per multi-row ``INSERT``: 4 parameters each, within SQLite's oldest 999 limit.
_ROWS_PER_INSERT = 240

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
    if path != ":memory:":
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
        if path != ":memory:":
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


# -- reading ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocRow:
    id: int
    name: str
    epoch: int
    generation: int
    deleted_at: float | None
    history_from: float | None
    updated_at: float


def doc_row(db: Database, room: str) -> DocRow | None:
    row = db.execute(
        "SELECT id, name, epoch, generation, deleted_at, history_from, updated_at"
        " FROM documents WHERE name = ?",
        [room],
    ).fetchone()
    return None if row is None else DocRow(*row)


def doc_id(db: Database, room: str, *, create: bool) -> int | None:
    row = db.execute("SELECT id FROM documents WHERE name = ?", [room]).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        return None
    now = time.time()
    cursor = db.execute(
        "INSERT INTO documents (name, created_at, updated_at) VALUES (?, ?, ?)", [room, now, now]
    )
    return int(cursor.lastrowid or 0)


def existing_doc(db: Database, room: str) -> DocRow:
    """The document's row, if it exists and is not deleted.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    row = doc_row(db, room)
    if row is None:
        raise DocumentNotFoundError(f"no document named {room!r}")
    if row.deleted_at is not None:
        raise DocumentNotFoundError(f"document {room!r} was deleted at {_when(row.deleted_at)}")
    return row


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@dataclass(frozen=True, slots=True)
class _LogRead:
    stored: StoredDoc
    #: Raw rows (and their bytes) since the last compaction.
    tail_rows: int
    tail_bytes: int


def _read_log(db: Database, room: str) -> _LogRead:
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return _LogRead(StoredDoc(updates=[]), 0, 0)
        rows = db.execute(
            "SELECT data, merged FROM updates WHERE doc_id = ? ORDER BY seq", [row.id]
        ).fetchall()
        retired = db.execute(
            "SELECT state_vector FROM retired_epochs WHERE doc_id = ? ORDER BY epoch", [row.id]
        ).fetchall()
    updates = [bytes(r[0]) for r in rows]
    raw = [u for u, (_, merged) in zip(updates, rows, strict=True) if merged == 1]
    stored = StoredDoc(
        updates=updates,
        epoch=row.epoch,
        generation=row.generation,
        retired_state_vectors=[bytes(r[0]) for r in retired],
    )
    return _LogRead(stored, len(raw), sum(map(len, raw)))


def read_doc(db: Database, room: str) -> StoredDoc:
    """Read one document's log, oldest first, with its epoch and retired state vectors."""
    return _read_log(db, room).stored


def read_versions(db: Database, rooms: Iterable[str]) -> dict[str, DocVersion]:
    """The epoch and generation of each room (``DocVersion()`` for unknown names)."""
    names = list(dict.fromkeys(rooms))
    found: dict[str, DocVersion] = {}
    for start in range(0, len(names), _NAMES_PER_QUERY):
        chunk = names[start : start + _NAMES_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        for name, epoch, generation in db.execute(
            f"SELECT name, epoch, generation FROM documents WHERE name IN ({marks})", chunk
        ):
            found[name] = DocVersion(epoch, generation)
    return {name: found.get(name, DocVersion()) for name in names}


#: ``collab docs list --sort`` keys and their SQL.
LIST_ORDERS = {
    "updated_at": "d.updated_at DESC",
    "name": "d.name",
    "bytes": "bytes DESC",
    "updates": "updates DESC",
    "history": "history_bytes DESC",
}


def list_docs(
    db: Database,
    limit: int | None = None,
    order: str = "updated_at",
    *,
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
    """Documents with their size, most recently changed first.

    ``bytes`` and ``rows`` count the log a load reads; ``updates`` is how many updates it
    stands for; ``history_bytes`` is what the retention window keeps besides.
    """
    sql = f"""
        SELECT d.name, d.updated_at, d.created_at, d.epoch,
               coalesce(u.bytes, 0) AS bytes,
               coalesce(u.updates, 0) AS updates,
               coalesce(u.rows, 0) AS rows,
               coalesce(h.bytes, 0) + coalesce(c.bytes, 0) AS history_bytes,
               d.deleted_at
        FROM documents d
        LEFT JOIN (SELECT doc_id, sum(length(data)) AS bytes, sum(merged) AS updates,
                          count(*) AS rows
                   FROM updates GROUP BY doc_id) u ON u.doc_id = d.id
        LEFT JOIN (SELECT doc_id, sum(length(data)) AS bytes FROM history GROUP BY doc_id) h
               ON h.doc_id = d.id
        LEFT JOIN (SELECT doc_id, length(data) AS bytes FROM checkpoints) c ON c.doc_id = d.id
        {"" if include_deleted else "WHERE d.deleted_at IS NULL"}
        ORDER BY {LIST_ORDERS[order]}, d.name
    """
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    columns = [
        "name",
        "updated_at",
        "created_at",
        "epoch",
        "bytes",
        "updates",
        "rows",
        "history_bytes",
        "deleted_at",
    ]
    return [dict(zip(columns, row, strict=True)) for row in db.execute(sql, params)]


# -- appending ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppendResult:
    #: ``(room, epoch)`` of updates refused because the document's epoch moved on.
    stale: list[tuple[str, int]]
    #: For the rooms asked about: raw rows and bytes since the last compaction.
    tails: dict[str, tuple[int, int]]
    #: Rooms whose updates SQLite refused for good (not a locked or full disk), with why.
    failed: dict[str, str] = field(default_factory=dict)


def append_updates(
    db: Database,
    batch: Sequence[tuple[str, bytes, float, int | None]],
    *,
    external: bool = False,
    count: Iterable[str] = (),
) -> AppendResult:
    """Append ``(room, update, received_at, epoch)`` rows in one transaction.

    Rows whose ``epoch`` is not the document's current epoch are not written (``None``
    matches any epoch). ``external`` appends (from another process than the server) bump
    the document's generation so a running server notices them.

    A handful of statements per batch, however many rooms and rows it holds: the server
    commits from a thread, and every statement hands the GIL back and forth with a busy
    event loop (each hand-off can wait the interpreter's 5 ms switch interval).
    """
    rooms = list(dict.fromkeys(room for room, *_ in batch))
    stale: dict[tuple[str, int], None] = {}
    with write_transaction(db):
        heads = _doc_heads(db, rooms)
        for room in rooms:
            if room not in heads:
                heads[room] = (doc_id(db, room, create=True) or 0, 0, 0)
        rows: list[tuple[int, int, bytes, float]] = []
        touched: dict[int, float] = {}
        for room, update, received_at, epoch in batch:
            id_, current, last = heads[room]
            if epoch is not None and epoch != current:
                stale[room, epoch] = None
                continue
            heads[room] = (id_, current, last + 1)
            rows.append((id_, last + 1, update, received_at))
            touched[id_] = received_at
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            db.execute(
                "INSERT INTO updates (doc_id, seq, data, created_at) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        if touched:
            db.execute(
                "UPDATE documents SET updated_at = json_extract(t.value, '$[1]'),"
                " deleted_at = NULL, generation = generation + ?"
                " FROM json_each(?) AS t WHERE documents.id = json_extract(t.value, '$[0]')",
                [1 if external else 0, json.dumps(list(touched.items()))],
            )
        wanted = [heads[room][0] for room in dict.fromkeys(count) if room in heads]
        tails = _raw_tails(db, wanted) if wanted else {}
    names = {heads[room][0]: room for room in rooms}
    return AppendResult(
        list(stale), {names[id_]: tail for id_, tail in tails.items() if id_ in names}
    )


def _doc_heads(db: Database, rooms: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``room -> (doc id, epoch, last seq)`` for the rooms that have a documents row.

    One result row (a JSON array) per statement, so one step for up to
    ``_NAMES_PER_QUERY`` rooms. The names go in as bound parameters, never through
    ``json_each``: SQLite's JSON functions cut a string at a NUL, so ``"a\0b"`` would
    find the document ``"a"``.
    """
    heads: dict[str, tuple[int, int, int]] = {}
    for start in range(0, len(rooms), _NAMES_PER_QUERY):
        chunk = rooms[start : start + _NAMES_PER_QUERY]
        (found,) = db.execute(
            "SELECT json_group_array(json_array(name, id, epoch,"
            " (SELECT coalesce(max(seq), 0) FROM updates WHERE doc_id = documents.id)))"
            f" FROM documents WHERE name IN ({', '.join(['?'] * len(chunk))})",
            chunk,
        ).fetchone()
        for name, id_, epoch, last in json.loads(found):
            heads[name] = (int(id_), int(epoch), int(last))
    return heads


def _raw_tails(db: Database, doc_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``doc id -> (rows, bytes)`` appended since the document's last compaction."""
    (found,) = db.execute(
        "SELECT json_group_array(json_array(doc_id, n, size)) FROM ("
        " SELECT doc_id, count(*) AS n, coalesce(sum(length(data)), 0) AS size FROM updates"
        " WHERE merged = 1 AND doc_id IN (SELECT value FROM json_each(?)) GROUP BY doc_id)",
        [json.dumps(list(doc_ids))],
    ).fetchone()
    tails = {id_: (0, 0) for id_ in doc_ids}
    for id_, n, size in json.loads(found):
        tails[int(id_)] = (int(n), int(size))
    return tails


# -- compaction ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactionInput:
    room: str
    doc_id: int
    epoch: int
    #: The seq of the last row read; the squashed row takes it.
    last_seq: int
    rows: int
    merged: int
    newest: float
    updates: list[bytes]


@dataclass(frozen=True, slots=True)
class CompactionResult:
    room: str
    rows_before: int
    bytes_before: int
    bytes_after: int
    #: Raw rows and bytes left after the squashed row (appended while it ran).
    tail_rows: int
    tail_bytes: int


def read_compaction(db: Database, room: str) -> CompactionInput | None:
    """Read the rows a compaction of ``room`` would squash, or None if there is nothing to do."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return None
        rows = db.execute(
            "SELECT seq, data, merged, created_at FROM updates WHERE doc_id = ? ORDER BY seq",
            [row.id],
        ).fetchall()
    if len(rows) < 2:
        return None
    return CompactionInput(
        room=room,
        doc_id=row.id,
        epoch=row.epoch,
        last_seq=int(rows[-1][0]),
        rows=len(rows),
        merged=sum(int(r[2]) for r in rows),
        newest=max(float(r[3]) for r in rows),
        updates=[bytes(r[1]) for r in rows],
    )


def swap_compaction(
    db: Database, job: CompactionInput, squashed: bytes, *, keep_history: bool = True
) -> CompactionResult | None:
    """Replace the rows ``job`` read by ``squashed``, in one transaction.

    Returns None, changing nothing, if those rows or the epoch changed since they were read.
    """
    with write_transaction(db):
        row = db.execute(
            "SELECT epoch, history_from FROM documents WHERE id = ?", [job.doc_id]
        ).fetchone()
        if row is None or int(row[0]) != job.epoch:
            return None
        history_from = None if row[1] is None else float(row[1])
        n, merged = db.execute(
            "SELECT count(*), coalesce(sum(merged), 0) FROM updates WHERE doc_id = ? AND seq <= ?",
            [job.doc_id, job.last_seq],
        ).fetchone()
        if (n, merged) != (job.rows, job.merged):
            return None
        if keep_history:
            _keep_base(db, job.doc_id, history_from)
            db.execute(
                "INSERT INTO history (doc_id, seq, data, created_at)"
                " SELECT doc_id, seq, data, created_at FROM updates"
                " WHERE doc_id = ? AND seq <= ? AND merged = 1",
                [job.doc_id, job.last_seq],
            )
        else:
            # No raw rows are kept: the document can be read back from this row's time on,
            # and this row alone answers every such read (a base would only duplicate it).
            history_from = max(history_from or job.newest, job.newest)
            db.execute(
                "UPDATE documents SET history_from = ? WHERE id = ?", [history_from, job.doc_id]
            )
            db.execute("DELETE FROM checkpoints WHERE doc_id = ?", [job.doc_id])
        db.execute("DELETE FROM updates WHERE doc_id = ? AND seq <= ?", [job.doc_id, job.last_seq])
        db.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at, merged) VALUES (?, ?, ?, ?, ?)",
            [job.doc_id, job.last_seq, squashed, job.newest, job.merged],
        )
        tail_rows, tail_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM updates"
            " WHERE doc_id = ? AND merged = 1",
            [job.doc_id],
        ).fetchone()
    return CompactionResult(
        room=job.room,
        rows_before=job.rows,
        bytes_before=sum(map(len, job.updates)),
        bytes_after=len(squashed),
        tail_rows=int(tail_rows),
        tail_bytes=int(tail_bytes),
    )


def _keep_base(db: Database, doc_id_: int, history_from: float | None) -> None:
    """Before the first log row is squashed away, make it the base if history needs it.

    Updates no longer kept raw may live only in that row, and a read at history_from
    finds them only in a blob created no later than history_from. If the row qualifies
    (created no later than history_from), the new squashed row will not (it is newer),
    so the row becomes the base. It contains the old base: everything ever pruned from
    history was squashed into the first row first.
    """
    if history_from is None:
        return
    first = db.execute(
        "SELECT data, created_at, merged FROM updates WHERE doc_id = ? ORDER BY seq LIMIT 1",
        [doc_id_],
    ).fetchone()
    if first is not None and int(first[2]) > 1 and float(first[1]) <= history_from:
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (doc_id, data, created_at, merged)"
            " VALUES (?, ?, ?, ?)",
            [doc_id_, first[0], first[1], first[2]],
        )


# -- retention ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneInput:
    room: str
    doc_id: int
    epoch: int
    cutoff: float
    base: bytes | None
    base_created_at: float | None
    base_merged: int
    rows: int
    seq_sum: int
    newest: float
    updates: list[bytes]


def rooms_with_old_history(db: Database, cutoff: float) -> list[str]:
    """Documents holding history rows created before ``cutoff``."""
    return [
        str(r[0])
        for r in db.execute(
            "SELECT name FROM documents WHERE id IN"
            " (SELECT DISTINCT doc_id FROM history WHERE created_at < ?) ORDER BY name",
            [cutoff],
        )
    ]


def read_prune(db: Database, room: str, cutoff: float) -> PruneInput | None:
    """Read the history rows of ``room`` older than ``cutoff``, and its base, or None."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return None
        rows = db.execute(
            "SELECT seq, data, created_at FROM history WHERE doc_id = ? AND created_at < ?"
            " ORDER BY seq",
            [row.id, cutoff],
        ).fetchall()
        base = db.execute(
            "SELECT data, created_at, merged FROM checkpoints WHERE doc_id = ?", [row.id]
        ).fetchone()
    if not rows:
        return None
    return PruneInput(
        room=room,
        doc_id=row.id,
        epoch=row.epoch,
        cutoff=cutoff,
        base=None if base is None else bytes(base[0]),
        base_created_at=None if base is None else float(base[1]),
        base_merged=0 if base is None else int(base[2]),
        rows=len(rows),
        seq_sum=sum(int(r[0]) for r in rows),
        newest=max(float(r[2]) for r in rows),
        updates=[bytes(r[1]) for r in rows],
    )


def squash_prune(job: PruneInput) -> bytes:
    """The new base: the old one plus the pruned rows, squashed (runs without the lock)."""
    return squash(([job.base] if job.base is not None else []) + job.updates)


def swap_prune(db: Database, job: PruneInput, base: bytes) -> bool:
    """Fold the pruned rows into the base in one transaction; False if anything changed."""
    with write_transaction(db):
        row = db.execute(
            "SELECT epoch, history_from FROM documents WHERE id = ?", [job.doc_id]
        ).fetchone()
        if row is None or int(row[0]) != job.epoch:
            return False
        n, seq_sum = db.execute(
            "SELECT count(*), coalesce(sum(seq), 0) FROM history"
            " WHERE doc_id = ? AND created_at < ?",
            [job.doc_id, job.cutoff],
        ).fetchone()
        old = db.execute(
            "SELECT created_at, merged FROM checkpoints WHERE doc_id = ?", [job.doc_id]
        ).fetchone()
        old_base = (None, 0) if old is None else (float(old[0]), int(old[1]))
        if (n, seq_sum) != (job.rows, job.seq_sum):
            return False
        if old_base != (job.base_created_at, job.base_merged):
            return False
        created_at = max(job.newest, job.base_created_at or job.newest)
        history_from = max(created_at, float(row[1]) if row[1] is not None else created_at)
        db.execute(
            "DELETE FROM history WHERE doc_id = ? AND created_at < ?", [job.doc_id, job.cutoff]
        )
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (doc_id, data, created_at, merged)"
            " VALUES (?, ?, ?, ?)",
            [job.doc_id, base, created_at, job.base_merged + job.rows],
        )
        db.execute("UPDATE documents SET history_from = ? WHERE id = ?", [history_from, job.doc_id])
        # The base is redundant once the first log row covers it and is no newer: that row
        # then answers every read at or after history_from by itself.
        first = db.execute(
            "SELECT created_at, merged FROM updates WHERE doc_id = ? ORDER BY seq LIMIT 1",
            [job.doc_id],
        ).fetchone()
        if first is not None and int(first[1]) > 1 and float(first[0]) <= created_at:
            db.execute("DELETE FROM checkpoints WHERE doc_id = ?", [job.doc_id])
    return True


def compact_doc(
    db: Database, room: str, *, retention: float = DEFAULT_RETENTION, now: float | None = None
) -> CompactionResult | None:
    """Compact one document and prune its history, synchronously (the admin CLI's way).

    :raises InvalidUpdateError: a stored update cannot be applied (``collab check`` says which).
    """
    result = None
    job = read_compaction(db, room)
    if job is not None:
        result = swap_compaction(db, job, squash(job.updates), keep_history=retention > 0)
    cutoff = (time.time() if now is None else now) - retention
    prune = read_prune(db, room, cutoff)
    if prune is not None:
        swap_prune(db, prune, squash_prune(prune))
    return result


# -- reading the past -----------------------------------------------------------------


class HistoryUnavailableError(StoreError):
    """The document cannot be read at that time: it is older than the retention window."""


def read_at(db: Database, room: str, at: float) -> list[bytes]:
    """Every stored blob of ``room`` created at or before ``at``: merged, the document then.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    :raises HistoryUnavailableError: ``at`` is before the document's ``history_from``.
    """
    with read_transaction(db):
        row = existing_doc(db, room)
        if row.history_from is not None and at < row.history_from:
            raise HistoryUnavailableError(
                f"{room!r} can be read back to {_when(row.history_from)}, not {_when(at)}:"
                " older history was compacted away (the retention window)"
            )
        base = db.execute(
            "SELECT data FROM checkpoints WHERE doc_id = ? AND created_at <= ?", [row.id, at]
        ).fetchall()
        rows = db.execute(
            "SELECT data FROM (SELECT seq, data, created_at FROM history WHERE doc_id = ?"
            " UNION ALL SELECT seq, data, created_at FROM updates WHERE doc_id = ?)"
            " WHERE created_at <= ? ORDER BY seq",
            [row.id, row.id, at],
        ).fetchall()
    return [bytes(r[0]) for r in base + rows]


@dataclass(frozen=True, slots=True)
class HistoryRead:
    #: The earliest time the document can be read at (None: any time).
    history_from: float | None
    #: The base checkpoint: (time of its newest update, bytes, updates it covers).
    base: tuple[float, int, int] | None
    #: The compacted log row: (time of its newest update, bytes, updates it covers).
    compacted: tuple[float, int, int] | None
    #: Every raw update kept, as (created_at, bytes), oldest first.
    raw: list[tuple[float, int]]


def read_history(db: Database, room: str) -> HistoryRead:
    """What ``collab docs history`` lists: the base, the compacted row, the raw rows.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    with read_transaction(db):
        row = existing_doc(db, room)
        base = db.execute(
            "SELECT created_at, length(data), merged FROM checkpoints WHERE doc_id = ?", [row.id]
        ).fetchone()
        compacted = db.execute(
            "SELECT created_at, length(data), merged FROM updates WHERE doc_id = ? AND merged > 1"
            " ORDER BY seq LIMIT 1",
            [row.id],
        ).fetchone()
        raw = db.execute(
            "SELECT created_at, length(data) FROM history WHERE doc_id = ?"
            " UNION ALL SELECT created_at, length(data) FROM updates"
            " WHERE doc_id = ? AND merged = 1 ORDER BY 1",
            [row.id, row.id],
        ).fetchall()
    return HistoryRead(
        history_from=row.history_from,
        base=None if base is None else (float(base[0]), int(base[1]), int(base[2])),
        compacted=None
        if compacted is None
        else (float(compacted[0]), int(compacted[1]), int(compacted[2])),
        raw=[(float(r[0]), int(r[1])) for r in raw],
    )


# -- deleting -----------------------------------------------------------------------


def _retire_epoch(db: Database, row: DocRow, now: float) -> int:
    """Drop every stored row of the document and move it to a new epoch (in a transaction)."""
    updates = [
        bytes(r[0])
        for r in db.execute("SELECT data FROM updates WHERE doc_id = ? ORDER BY seq", [row.id])
    ]
    # What any client that saw this epoch may hold. Not a replay: that would make a
    # document with one damaged row impossible to delete or replace.
    state_vector = state_vector_of(updates)
    db.execute(
        "INSERT OR REPLACE INTO retired_epochs (doc_id, epoch, state_vector, retired_at)"
        " VALUES (?, ?, ?, ?)",
        [row.id, row.epoch, state_vector, now],
    )
    for table in ("updates", "history", "checkpoints"):
        db.execute(f"DELETE FROM {table} WHERE doc_id = ?", [row.id])
    epoch = row.epoch + 1
    db.execute(
        "UPDATE documents SET epoch = ?, deleted_at = ?, history_from = NULL, updated_at = ?"
        " WHERE id = ?",
        [epoch, now, now, row.id],
    )
    return epoch


def delete_doc(db: Database, room: str) -> int:
    """Delete a document's content and history; return its new epoch.

    The document's name stays known with a bumped epoch and the retired epoch's state
    vector, so clients that still hold the old history are detected (and refused) when
    they reconnect.

    :raises DocumentNotFoundError: no such document, or it is already deleted.
    """
    with write_transaction(db):
        row = existing_doc(db, room)
        return _retire_epoch(db, row, time.time())


def replace_doc(db: Database, room: str, update: bytes) -> int:
    """Replace a document's whole content by ``update`` under a new epoch; return it."""
    now = time.time()
    with write_transaction(db):
        row = doc_row(db, room)
        if row is None:
            epoch = 0
            id_ = doc_id(db, room, create=True)
        else:
            epoch = _retire_epoch(db, row, now)
            id_ = row.id
        db.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (?, 1, ?, ?)",
            [id_, update, now],
        )
        # The generation tells a running server to look: a document it holds but never
        # stored had epoch 0 before and has it still.
        db.execute(
            "UPDATE documents SET deleted_at = NULL, updated_at = ?,"
            " generation = generation + 1 WHERE id = ?",
            [now, id_],
        )
    return epoch


# -- the log ------------------------------------------------------------------------


@dataclass(slots=True)
class _Queued:
    ticket: int
    room: str
    update: bytes
    received_at: float
    epoch: int | None
    recount: bool  # the log has no compaction counters for the room: count its rows


class SQLiteLog(AsyncContextManagerMixin):
    """The SQLite :class:`~collab.storage.base.UpdateLog`, with background compaction.

    Use as ``async with SQLiteLog(path) as log:``; leaving the block commits everything
    appended so far, even when the surrounding task is being cancelled.

    :param compact_rows: compact a document once this many raw rows follow its last
        compaction (``Settings.compact_rows``).
    :param compact_bytes: ... or once they hold this many bytes.
    :param retention: seconds raw history is kept for point-in-time reads; 0 keeps none.
    :param prune_interval: how often to look for history older than ``retention``.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        commit_delay: float = 0.02,
        synchronous: str = "NORMAL",
        compact_rows: int = 500,
        compact_bytes: int = 1024 * 1024,
        retention: float = DEFAULT_RETENTION,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        self.path = path
        self.commit_delay = commit_delay
        self.synchronous = synchronous
        self.compact_rows = compact_rows
        self.compact_bytes = compact_bytes
        self.retention = retention
        self.prune_interval = prune_interval
        self._db: Database | None = None
        # One connection, used by one thread at a time: the commit thread or one worker.
        self._db_lock = threading.Lock()
        self._limiter = CapacityLimiter(1)
        self._committer = CommitThread(
            self._commit,
            self._committed,
            delay=commit_delay,
            describe=str(path),
            expected_errors=(sqlite3.DatabaseError,),
        )
        self._queued_rooms: dict[str, int] = {}  # room -> last ticket queued for it
        self._next_ticket = 1
        self._durable_ticket = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._listeners: list[Callable[[int, float], None]] = []
        self._stale_listeners: list[Callable[[str, int], None]] = []
        self._failed_listeners: list[Callable[[str], None]] = []
        self._closed = False
        # Compaction: raw rows and bytes since each room's last compaction (an LRU; a room
        # that fell out is recounted at its next commit), and the rooms waiting for it.
        self._tails: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._to_compact: dict[str, None] = {}
        self._compact_wakeup = anyio.Event()
        self._compacting: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteLog:
        """A log configured by ``settings`` (db, commit delay, compaction, retention)."""
        return cls(
            settings.db_path,
            commit_delay=settings.commit_delay,
            synchronous=settings.synchronous,
            compact_rows=settings.compact_rows,
            compact_bytes=settings.compact_bytes,
            retention=settings.retention,
        )

    # -- lifecycle -------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[SQLiteLog]:
        self._db = await to_thread.run_sync(
            lambda: connect(self.path, synchronous=self.synchronous)
        )
        self._committer.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._compactor)
                tg.start_soon(self._pruner)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
                    tg.cancel_scope.cancel()
        finally:
            self._closed = True
            db, self._db = self._db, None
            await self._locked(db.close)

    # -- UpdateLog -------------------------------------------------------------

    @property
    def durable_ticket(self) -> int:
        return self._durable_ticket

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        self._listeners.append(callback)

    def on_stale(self, callback: Callable[[str, int], None]) -> None:
        self._stale_listeners.append(callback)

    def on_failed(self, callback: Callable[[str], None]) -> None:
        self._failed_listeners.append(callback)

    def append_nowait(self, room: str, update: bytes, *, epoch: int | None = None) -> int:
        if self._closed:
            raise StoreError("the update log is closed")
        ticket = self._next_ticket
        self._next_ticket += 1
        recount = room not in self._tails
        self._committer.put(_Queued(ticket, room, update, time.time(), epoch, recount))
        self._queued_rooms[room] = ticket
        return ticket

    async def flush(self) -> None:
        await self._wait_for(self._next_ticket - 1)

    async def load(self, room: str) -> StoredDoc:
        if room in self._queued_rooms:
            await self._wait_for(self._queued_rooms[room])
        try:
            read = await self._locked(_read_log, self._database, room)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read document {room!r}: {e}") from e
        self._track(room, read.tail_rows, read.tail_bytes)
        return read.stored

    async def versions(self, rooms: Iterable[str]) -> dict[str, DocVersion]:
        names = list(rooms)
        if not names:
            return {}
        try:
            return await self._locked(read_versions, self._database, names)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read document versions: {e}") from e

    async def list_docs(
        self, limit: int | None = None, *, flush_timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Documents with their sizes, most recently changed first.

        Waits for what is already appended to commit first, for at most ``flush_timeout``
        seconds (None: as long as it takes); past that, the listing leaves it out.
        """
        with anyio.move_on_after(flush_timeout):
            await self.flush()
        try:
            return await self._locked(list_docs, self._database, limit)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot list documents: {e}") from e

    # -- compaction ------------------------------------------------------------

    async def compact(self, room: str) -> CompactionResult | None:
        """Compact ``room`` now: squash off the lock, swap in one short transaction.

        Returns None if there was nothing to do or the rows changed meanwhile.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        db = self._database
        try:
            job = await self._locked(read_compaction, db, room)
            if job is None:
                return None
            # Not holding the connection: group commits (and loads) carry on meanwhile.
            squashed = await to_thread.run_sync(squash, job.updates, abandon_on_cancel=True)
            result = await self._locked(
                lambda: swap_compaction(db, job, squashed, keep_history=self.retention > 0)
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot compact {room!r}: {e}") from e
        if result is None:
            log.info("compaction of %r skipped: its log changed meanwhile", room)
            return None
        self._track(room, result.tail_rows, result.tail_bytes)
        log.debug(
            "compacted %r: %d rows, %d bytes -> %d bytes",
            room,
            result.rows_before,
            result.bytes_before,
            result.bytes_after,
        )
        return result

    async def prune(self, room: str, now: float | None = None) -> bool:
        """Fold ``room``'s history older than the retention window into its base.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        db = self._database
        cutoff = (time.time() if now is None else now) - self.retention
        try:
            job = await self._locked(read_prune, db, room, cutoff)
            if job is None:
                return False
            base = await to_thread.run_sync(squash_prune, job, abandon_on_cancel=True)
            return await self._locked(swap_prune, db, job, base)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot prune the history of {room!r}: {e}") from e

    def _track(self, room: str, rows: int, size: int) -> None:
        self._tails[room] = (rows, size)
        self._tails.move_to_end(room)
        while len(self._tails) > TRACKED_ROOMS:
            self._tails.popitem(last=False)
        if rows > self.compact_rows or size > self.compact_bytes:
            if room not in self._to_compact and room != self._compacting:
                self._to_compact[room] = None
                self._compact_wakeup.set()

    async def _compactor(self) -> None:
        while True:
            await self._compact_wakeup.wait()
            self._compact_wakeup = anyio.Event()
            while self._to_compact:
                room = next(iter(self._to_compact))
                del self._to_compact[room]
                self._compacting = room
                try:
                    await self.compact(room)
                    if self.retention > 0:
                        await self.prune(room)
                except CollabError as e:
                    # Counted as compacted, so it is retried only after another
                    # compact_rows updates, not on every commit.
                    self._tails[room] = (0, 0)
                    log.error("cannot compact %r: %s (run `collab check`)", room, e)
                finally:
                    self._compacting = None

    async def _pruner(self) -> None:
        if self.retention <= 0:
            return
        delay = min(self.prune_interval, 60.0)  # a first pass soon after start
        while True:
            await anyio.sleep(delay)
            delay = self.prune_interval
            try:
                rooms = await self._locked(
                    rooms_with_old_history, self._database, time.time() - self.retention
                )
                for room in rooms:
                    await self.prune(room)
            except (CollabError, sqlite3.DatabaseError) as e:
                log.error("cannot prune history older than the retention window: %s", e)

    # -- the writer ------------------------------------------------------------

    @property
    def _database(self) -> Database:
        if self._db is None:
            raise StoreError("the update log is not open")
        return self._db

    async def _wait_for(self, ticket: int) -> None:
        if self._durable_ticket >= ticket:
            return
        if self._closed:
            raise StoreError("the update log closed before the updates were written")
        event = anyio.Event()
        self._waiters.append((ticket, event))
        await event.wait()

    async def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, holding the connection."""

        def call() -> T:
            with self._db_lock:
                return fn(*args)

        return await to_thread.run_sync(call, limiter=self._limiter)

    def _commit(self, batch: list[_Queued]) -> AppendResult:
        # On the commit thread.
        rows = [(p.room, p.update, p.received_at, p.epoch) for p in batch]
        recount = {p.room for p in batch if p.recount}
        with self._db_lock:
            try:
                return append_updates(self._database, rows, count=recount)
            except sqlite3.OperationalError:
                raise  # a locked, full or failing disk: the whole batch is retried
            except sqlite3.DatabaseError as e:
                # Something in the batch cannot be written however often it is retried
                # (a constraint). Retrying it whole would hold back every document behind
                # it, so each room is committed on its own and the ones that fail are
                # reported (the rooms close their peers; nothing else is held up).
                log.error("a group commit failed (%s); committing room by room", e)
                return self._commit_each_room(rows, recount)

    def _commit_each_room(
        self, rows: list[tuple[str, bytes, float, int | None]], recount: set[str]
    ) -> AppendResult:
        by_room: dict[str, list[tuple[str, bytes, float, int | None]]] = {}
        for row in rows:
            by_room.setdefault(row[0], []).append(row)
        stale: list[tuple[str, int]] = []
        tails: dict[str, tuple[int, int]] = {}
        failed: dict[str, str] = {}
        for room, room_rows in by_room.items():
            try:
                result = append_updates(self._database, room_rows, count=recount & {room})
            except sqlite3.OperationalError:
                # The disk this time: the batch is retried whole, and the rooms committed
                # above are appended again. Harmless: a Yjs update applies once however
                # often it is replayed.
                raise
            except sqlite3.DatabaseError as e:
                failed[room] = str(e)
                continue
            stale.extend(result.stale)
            tails.update(result.tails)
        return AppendResult(stale, tails, failed)

    def _committed(self, batch: list[_Queued], result: AppendResult, committed_at: float) -> None:
        # On the event loop, after the commit thread made ``batch`` durable.
        last_ticket = batch[-1].ticket
        self._durable_ticket = last_ticket
        for room, ticket in list(self._queued_rooms.items()):
            if ticket <= last_ticket:
                del self._queued_rooms[room]
        stale_rooms = {room for room, _ in result.stale} | set(result.failed)
        for room, error in result.failed.items():
            dropped = sum(1 for p in batch if p.room == room)
            log.error("cannot store %d updates to %r, dropped: %s", dropped, room, error)
            for failed_callback in self._failed_listeners:
                failed_callback(room)
        for room, epoch in result.stale:
            dropped = sum(1 for p in batch if p.room == room and p.epoch == epoch)
            log.warning(
                "refused %d updates to %r made under epoch %d: the document was deleted or"
                " replaced since",
                dropped,
                room,
                epoch,
            )
            for stale_callback in self._stale_listeners:
                stale_callback(room, epoch)
        self._count_appended(batch, result.tails, stale_rooms)
        still_waiting = []
        for ticket, event in self._waiters:
            if ticket <= last_ticket:
                event.set()
            else:
                still_waiting.append((ticket, event))
        self._waiters = still_waiting
        for callback in self._listeners:
            callback(last_ticket, committed_at)

    def _count_appended(
        self, batch: list[_Queued], counted: dict[str, tuple[int, int]], stale: set[str]
    ) -> None:
        added: dict[str, tuple[int, int]] = {}
        for p in batch:
            if p.room in counted or p.room in stale:
                continue
            rows, size = added.get(p.room, (0, 0))
            added[p.room] = (rows + 1, size + len(p.update))
        for room, (rows, size) in counted.items():
            self._track(room, rows, size)
        for room, (rows, size) in added.items():
            before = self._tails.get(room)
            if before is not None:
                self._track(room, before[0] + rows, before[1] + size)

    async def _drain(self) -> None:
        # Everything put before stop() is committed before the thread ends, and its
        # call_soon_threadsafe reports run before join's own completion resumes us.
        self._committer.stop()
        await to_thread.run_sync(self._committer.join)
        for _, event in self._waiters:
            event.set()
        self._waiters = []
