"""The embedded default store: an append-only update log in one SQLite file.

Theory of operation
-------------------
Rooms call :meth:`SQLiteLog.append_nowait` on the event loop; it only appends to an
in-memory list and wakes the writer task. The writer waits ``commit_delay`` so that a
burst of keystrokes shares one transaction (group commit), cuts the list, and writes the
batch in a worker thread, so the event loop never blocks on the disk. All database work
of a server process goes through one connection, one thread at a time (a capacity
limiter of one), as datasette's single writer does.

If a commit fails the batch stays queued and is retried with backoff; nothing is
acknowledged until it is on disk. A document's load first waits for its own queued
updates, so an unload followed by a quick reload never misses a write.

Durability (``PRAGMA synchronous``, see https://sqlite.org/pragma.html#pragma_synchronous):
with WAL and ``NORMAL`` (the default) a committed transaction survives a crash or kill of
the process; a power loss or OS crash may roll back the last transactions before the
WAL's next checkpoint. ``FULL`` also survives power loss at the cost of an fsync per
group commit.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio import AsyncContextManagerMixin, CapacityLimiter, to_thread
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from collab.errors import StoreError
from collab.storage.base import StoredDoc

log = logging.getLogger("collab.storage")

#: How long a connection waits for another process's write lock (the admin CLI, say).
BUSY_TIMEOUT_MS = 5000

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


def connect(path: Path | str, *, synchronous: str = "NORMAL") -> Database:
    """Open (creating if needed) a collab database, with its pragmas set and schema current.

    :raises StoreError: the file cannot be opened or is not a collab database.
    """
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        db = Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot open database {path!r}: {e}") from e
    return db


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


def read_doc(db: Database, room: str) -> StoredDoc:
    """Read one document's log, oldest first."""
    row = db.execute("SELECT id, epoch FROM documents WHERE name = ?", [room]).fetchone()
    if row is None:
        return StoredDoc(updates=[], epoch=0)
    rows = db.execute("SELECT data FROM updates WHERE doc_id = ? ORDER BY seq", [row[0]])
    return StoredDoc(updates=[bytes(r[0]) for r in rows], epoch=int(row[1]))


def list_docs(db: Database, limit: int | None = None, order: str = "updated_at") -> list[dict[str, Any]]:
    """Documents with their size, most recently changed first."""
    orders = {
        "updated_at": "d.updated_at DESC",
        "name": "d.name",
        "bytes": "bytes DESC",
        "updates": "updates DESC",
    }
    sql = f"""
        SELECT d.name, d.updated_at, d.created_at, d.epoch,
               coalesce(sum(length(u.data)), 0) AS bytes,
               coalesce(sum(u.merged), 0) AS updates,
               count(u.seq) AS rows
        FROM documents d LEFT JOIN updates u ON u.doc_id = d.id
        GROUP BY d.id ORDER BY {orders[order]}
    """
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    columns = ["name", "updated_at", "created_at", "epoch", "bytes", "updates", "rows"]
    return [dict(zip(columns, row, strict=True)) for row in db.execute(sql, params)]


def append_updates(db: Database, batch: list[tuple[str, bytes, float]]) -> None:
    """Append ``(room, update, received_at)`` rows in one transaction."""
    by_room: dict[str, list[tuple[bytes, float]]] = defaultdict(list)
    for room, update, received_at in batch:
        by_room[room].append((update, received_at))
    with db.atomic():
        for room, rows in by_room.items():
            id_ = doc_id(db, room, create=True)
            (last,) = db.execute(
                "SELECT coalesce(max(seq), 0) FROM updates WHERE doc_id = ?", [id_]
            ).fetchone()
            db.conn.executemany(
                "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (?, ?, ?, ?)",
                [(id_, last + i, data, at) for i, (data, at) in enumerate(rows, start=1)],
            )
            db.execute(
                "UPDATE documents SET updated_at = ? WHERE id = ?", [rows[-1][1], id_]
            )


@dataclass(slots=True)
class _Pending:
    room: str
    update: bytes
    received_at: float


class SQLiteLog(AsyncContextManagerMixin):
    """The SQLite :class:`~collab.storage.base.UpdateLog`.

    Use as ``async with SQLiteLog(path) as log:``; leaving the block commits everything
    appended so far, even when the surrounding task is being cancelled.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        commit_delay: float = 0.02,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = path
        self.commit_delay = commit_delay
        self.synchronous = synchronous
        self._db: Database | None = None
        self._limiter = CapacityLimiter(1)
        self._pending: list[_Pending] = []
        self._pending_rooms: dict[str, int] = {}  # room -> last ticket queued for it
        self._wakeup = anyio.Event()
        self._next_ticket = 1
        self._durable_ticket = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._listeners: list[Callable[[int], None]] = []
        self._closed = False
        self._commit_lock = anyio.Lock()

    # -- lifecycle -------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[SQLiteLog]:
        self._db = await to_thread.run_sync(
            lambda: connect(self.path, synchronous=self.synchronous)
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
                    tg.cancel_scope.cancel()
        finally:
            self._closed = True
            db, self._db = self._db, None
            await to_thread.run_sync(db.close, limiter=self._limiter)

    # -- UpdateLog -------------------------------------------------------------

    @property
    def durable_ticket(self) -> int:
        return self._durable_ticket

    def on_commit(self, callback: Callable[[int], None]) -> None:
        self._listeners.append(callback)

    def append_nowait(self, room: str, update: bytes) -> int:
        if self._closed:
            raise StoreError("the update log is closed")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending.append(_Pending(room, update, time.time()))
        self._pending_rooms[room] = ticket
        self._wakeup.set()
        return ticket

    async def flush(self) -> None:
        await self._wait_for(self._next_ticket - 1)

    async def load(self, room: str) -> StoredDoc:
        if room in self._pending_rooms:
            await self._wait_for(self._pending_rooms[room])
        try:
            return await to_thread.run_sync(read_doc, self._database, room, limiter=self._limiter)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read document {room!r}: {e}") from e

    async def list_docs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Documents with their sizes, most recently changed first (after a flush)."""
        await self.flush()
        return await to_thread.run_sync(list_docs, self._database, limit, limiter=self._limiter)

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

    async def _writer(self) -> None:
        while True:
            await self._wakeup.wait()
            # Let the burst gather: one transaction for everything that arrives meanwhile.
            await anyio.sleep(self.commit_delay)
            await self._commit_pending()

    async def _commit_pending(self) -> None:
        async with self._commit_lock:
            await self._commit_pending_locked()

    async def _commit_pending_locked(self) -> None:
        self._wakeup = anyio.Event()
        batch, self._pending = self._pending, []
        if not batch:
            return
        last_ticket = self._next_ticket - 1
        rows = [(p.room, p.update, p.received_at) for p in batch]
        backoff = 0.1
        while True:
            try:
                await to_thread.run_sync(append_updates, self._database, rows, limiter=self._limiter)
                break
            except sqlite3.DatabaseError as e:
                # Keep the updates: they are in the rooms' memory and stay queued here.
                log.error(
                    "cannot commit %d updates to %s, retrying in %.1fs: %s",
                    len(rows), self.path, backoff, e,
                )
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._durable_ticket = last_ticket
        for room, ticket in list(self._pending_rooms.items()):
            if ticket <= last_ticket:
                del self._pending_rooms[room]
        still_waiting = []
        for ticket, event in self._waiters:
            if ticket <= last_ticket:
                event.set()
            else:
                still_waiting.append((ticket, event))
        self._waiters = still_waiting
        for callback in self._listeners:
            callback(last_ticket)

    async def _drain(self) -> None:
        while self._pending:
            await self._commit_pending()
        for _, event in self._waiters:
            event.set()
        self._waiters = []


def open_log(path: Path | str, *, commit_delay: float, synchronous: str = "NORMAL") -> SQLiteLog:
    return SQLiteLog(path, commit_delay=commit_delay, synchronous=synchronous)
