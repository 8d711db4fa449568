"""The embedded default store: an append-only update log in one SQLite file.

Theory of operation
-------------------
:class:`SQLiteLog` is both seams of :mod:`collab.storage.base`: the server's
:class:`~collab.storage.base.UpdateLog` and the admin commands'
:class:`~collab.storage.base.DocumentStore`. Appends, tickets, group commit and the
compaction schedule are the backend-neutral :mod:`collab.storage.commit`; this class adds
what is SQLite's: the SQL (:mod:`.queries`), the schema (:mod:`.schema`), and the rule
that all database work of a process goes through **one connection, one thread at a time**
(a lock; reads and compaction run in one worker thread at a time; the commit thread takes
the same lock), as datasette's single writer does. The event loop never touches the
connection.

If a commit fails with an ``OperationalError`` (a locked, full or failing disk) the batch
is retried with backoff; nothing is acknowledged until it is on disk. Any other database
error means something in the batch can never be written (a constraint): the batch is then
committed room by room, and the rooms that still fail are reported as failed, so one
document cannot hold back the others.

Compaction runs in three steps (:mod:`.queries` has the details): read the rows (holding
the connection, a short read), squash them in a worker thread *without* holding it (group
commits go on meanwhile), swap them in one short transaction. Admin calls
(:class:`~collab.storage.base.DocumentStore`) run the same way, and translate SQLite's
errors into :class:`~collab.storage.base.DatabaseError` and its subclasses.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio import AsyncContextManagerMixin, CapacityLimiter, from_thread, to_thread
from sqlite_utils import Database

from collab.errors import StoreError
from collab.storage.base import (
    CompactionResult,
    DatabaseBusyError,
    DatabaseDamagedError,
    DatabaseError,
    DocInfo,
    DocOrder,
    DocVersion,
    HistoryRead,
    ImportResult,
    LogTail,
    StoredBlob,
    StoredDoc,
)
from collab.storage.commit import (
    AppendResult,
    CommittedLog,
    CompactionScheduler,
    GroupCommit,
    QueuedUpdate,
    prune_periodically,
)
from collab.storage.sqlite import queries
from collab.storage.sqlite.backup import backup_database
from collab.storage.sqlite.queries import DEFAULT_RETENTION, append_updates, squash_prune
from collab.storage.sqlite.schema import BUSY_TIMEOUT_MS, MEMORY, connect
from collab.updates import squash

if TYPE_CHECKING:
    from collab.config import Settings

log = logging.getLogger("collab.storage")
T = TypeVar("T")

#: How often a server looks for history older than the retention window, in seconds.
PRUNE_INTERVAL = 3600.0


@contextmanager
def _database_errors(context: str | None) -> Iterator[None]:
    """Turn SQLite's errors into the backend-neutral ones, ``context: reason``."""
    try:
        yield
    except sqlite3.OperationalError as e:
        reason = str(e)
        message = reason if context is None else f"{context}: {reason}"
        if "locked" in reason or "busy" in reason:
            raise DatabaseBusyError(message, reason, BUSY_TIMEOUT_MS / 1000) from e
        raise DatabaseError(message, reason) from e
    except sqlite3.DatabaseError as e:
        reason = str(e)
        message = reason if context is None else f"{context}: {reason}"
        raise DatabaseDamagedError(message, reason) from e


class SQLiteLog(CommittedLog, AsyncContextManagerMixin):
    """The SQLite store: :class:`~collab.storage.base.Store`, with background compaction.

    Use as ``async with SQLiteLog(path) as log:``; leaving the block commits everything
    appended so far, even when the surrounding task is being cancelled.

    :param compact_rows: compact a document once this many raw rows follow its last
        compaction (``Settings.compact_rows``).
    :param compact_bytes: ... or once they hold this many bytes.
    :param retention: seconds raw history is kept for point-in-time reads; 0 keeps none.
    :param prune_interval: how often to look for history older than ``retention``.
    :param create: create the database if there is none (else that is an error).
    :param background: compact and prune in the background, as a server does. The admin
        commands pass False: they never apply a retention window of their own.
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
        create: bool = True,
        background: bool = True,
    ) -> None:
        self.path = path
        self.commit_delay = commit_delay
        self.synchronous = synchronous
        self.compact_rows = compact_rows
        self.compact_bytes = compact_bytes
        self.retention = retention
        self.prune_interval = prune_interval
        self.create = create
        self.background = background
        self._db: Database | None = None
        # One connection, used by one thread at a time: the commit thread or one worker.
        self._db_lock = threading.Lock()
        self._limiter = CapacityLimiter(1)
        self._compaction = CompactionScheduler(
            compact_rows=compact_rows, compact_bytes=compact_bytes
        )
        self._commits = GroupCommit(
            self._commit,
            delay=commit_delay,
            describe=str(path),
            expected_errors=(sqlite3.DatabaseError,),
            compaction=self._compaction,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        path: str | None = None,
        *,
        create: bool = True,
        background: bool = True,
    ) -> SQLiteLog:
        """A log configured by ``settings`` (commit delay, compaction, retention), on
        ``path`` (default: ``settings.db`` as a file path; ``:memory:`` for none)."""
        return cls(
            settings.db_path if path is None else path,
            commit_delay=settings.commit_delay,
            synchronous=settings.synchronous,
            compact_rows=settings.compact_rows,
            compact_bytes=settings.compact_bytes,
            retention=settings.retention,
            create=create,
            background=background,
        )

    # -- lifecycle -------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[SQLiteLog]:
        self._db = await to_thread.run_sync(
            lambda: connect(self.path, synchronous=self.synchronous, create=self.create)
        )
        self._commits.start()
        try:
            async with AsyncExitStack() as stack:
                if self.background:
                    tg = await stack.enter_async_context(anyio.create_task_group())
                    tg.start_soon(self._compaction.run, self._compact_in_background)
                    tg.start_soon(self._prune_periodically)
                    stack.callback(tg.cancel_scope.cancel)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._commits.drain()
        finally:
            self._commits.closed = True
            db, self._db = self._db, None
            with anyio.CancelScope(shield=True):
                await self._locked(db.close)

    # -- UpdateLog (appending and its reports: CommittedLog) -------------------

    async def load(self, room: str) -> StoredDoc:
        await self._commits.wait_for_room(room)
        with _database_errors(f"cannot read document {room!r}"):
            read = await self._locked(queries.read_log, self._database, room)
        self._compaction.track(room, read.tail_rows, read.tail_bytes)
        return read.stored

    async def versions(self, rooms: Iterable[str]) -> dict[str, DocVersion]:
        names = list(rooms)
        if not names:
            return {}
        with _database_errors("cannot read document versions"):
            return await self._locked(queries.read_versions, self._database, names)

    # -- DocumentStore ---------------------------------------------------------

    async def list_docs(
        self,
        limit: int | None = None,
        *,
        order: DocOrder = "updated_at",
        after: str | None = None,
        include_deleted: bool = False,
        flush_timeout: float | None = None,
    ) -> list[DocInfo]:
        with anyio.move_on_after(flush_timeout):
            await self.flush()
        db = self._database
        with _database_errors("cannot list documents"):
            return await self._locked(
                lambda: queries.list_docs(
                    db, limit, order, after=after, include_deleted=include_deleted
                )
            )

    async def names(self) -> list[str]:
        with _database_errors("cannot list documents"):
            return await self._locked(queries.doc_names, self._database)

    async def info(self, room: str) -> DocInfo:
        with _database_errors(f"cannot read document {room!r}"):
            return await self._locked(queries.doc_info, self._database, room)

    async def read(self, room: str) -> StoredDoc:
        with _database_errors(f"cannot read document {room!r}"):
            return await self._locked(queries.read_existing, self._database, room)

    async def read_at(self, room: str, at: float) -> list[bytes]:
        with _database_errors(f"cannot read document {room!r}"):
            return await self._locked(queries.read_at, self._database, room, at)

    async def read_after(self, room: str, epoch: int, seq: int, *, limit: int) -> LogTail:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        with _database_errors(f"cannot read document {room!r}"):
            return await self._locked(queries.read_after, self._database, room, epoch, seq, limit)

    async def history(self, room: str) -> HistoryRead:
        with _database_errors(f"cannot read the history of {room!r}"):
            return await self._locked(queries.read_history, self._database, room)

    async def append(
        self, room: str, update: bytes, *, epoch: int | None = None
    ) -> ImportResult | None:
        db = self._database
        with _database_errors(f"cannot append to {room!r}"):
            return await self._locked(
                lambda: queries.append_external(db, room, update, epoch=epoch)
            )

    async def replace(self, room: str, update: bytes) -> ImportResult:
        with _database_errors(f"cannot replace {room!r}"):
            epoch = await self._locked(queries.replace_doc, self._database, room, update)
        return ImportResult(epoch, replaced=True)

    async def delete(self, room: str) -> int:
        with _database_errors(f"cannot delete {room!r}"):
            return await self._locked(queries.delete_doc, self._database, room)

    async def compact(
        self, room: str, *, retention: float | None = None
    ) -> CompactionResult | None:
        """Compact ``room`` now: squash off the lock, swap in one short transaction.

        Returns None if there was nothing to do or the rows changed meanwhile. With a
        ``retention``, history older than it is folded into the base afterwards.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        db = self._database
        keep_history = (self.retention if retention is None else retention) > 0
        try:
            job = await self._locked(queries.read_compaction, db, room)
            result = None
            if job is not None:
                # Not holding the connection: group commits (and loads) carry on meanwhile.
                squashed = await to_thread.run_sync(squash, job.updates, abandon_on_cancel=True)
                result = await self._locked(
                    lambda: queries.swap_compaction(db, job, squashed, keep_history=keep_history)
                )
            if retention is not None:
                await self._prune(room, time.time() - retention)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot compact {room!r}: {e}") from e
        if job is None:
            return None
        if result is None:
            log.info("compaction of %r skipped: its log changed meanwhile", room)
            return None
        self._compaction.track(room, result.tail_rows, result.tail_bytes)
        log.debug(
            "compacted %r: %d rows, %d bytes -> %d bytes",
            room,
            result.rows_before,
            result.bytes_before,
            result.bytes_after,
        )
        return result

    async def stored_blobs(self, room: str) -> list[StoredBlob]:
        with _database_errors(f"cannot read document {room!r}"):
            return await self._locked(queries.stored_blobs, self._database, room)

    async def check_integrity(self) -> list[str]:
        with _database_errors("cannot check the database"):
            return await self._locked(queries.quick_check, self._database)

    async def backup(
        self,
        target: str,
        *,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """SQLite's online backup to the file ``target`` (see :func:`.backup_database`)."""

        def report(done: int, total: int) -> None:
            if progress is not None:
                from_thread.run_sync(progress, done, total)

        if str(self.path) == MEMORY:
            # No file for another connection to read: copy through ours, holding it.
            conn = self._database.conn
            return await self._locked(
                lambda: backup_database(
                    MEMORY, target, force=force, progress=report, connection=conn
                )
            )
        return await to_thread.run_sync(
            lambda: backup_database(self.path, target, force=force, progress=report)
        )

    # -- history ---------------------------------------------------------------

    async def prune(self, room: str, now: float | None = None) -> bool:
        """Fold ``room``'s history older than the retention window into its base.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        cutoff = (time.time() if now is None else now) - self.retention
        try:
            return await self._prune(room, cutoff)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot prune the history of {room!r}: {e}") from e

    async def _prune(self, room: str, cutoff: float) -> bool:
        db = self._database
        job = await self._locked(queries.read_prune, db, room, cutoff)
        if job is None:
            return False
        base = await to_thread.run_sync(squash_prune, job, abandon_on_cancel=True)
        return await self._locked(queries.swap_prune, db, job, base)

    async def _compact_in_background(self, room: str) -> None:
        await self.compact(room)
        if self.retention > 0:
            await self.prune(room)

    async def _prune_periodically(self) -> None:
        async def rooms_with_old_history(cutoff: float) -> list[str]:
            with _database_errors(None):
                return await self._locked(queries.rooms_with_old_history, self._database, cutoff)

        await prune_periodically(
            rooms_with_old_history,
            self.prune,
            retention=self.retention,
            interval=self.prune_interval,
        )

    # -- the connection and the writer ------------------------------------------

    @property
    def _database(self) -> Database:
        if self._db is None:
            raise StoreError("the update log is not open")
        return self._db

    async def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, holding the connection."""

        def call() -> T:
            with self._db_lock:
                return fn(*args)

        return await to_thread.run_sync(call, limiter=self._limiter)

    def _commit(self, batch: list[QueuedUpdate]) -> AppendResult:
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
        # Each room's positions in its rows' order, handed back in the batch's order.
        positions: dict[str, Iterator[tuple[int, int] | None]] = {}
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
                positions[room] = iter([None] * len(room_rows))
                continue
            stale.extend(result.stale)
            tails.update(result.tails)
            positions[room] = iter(result.positions)
        return AppendResult(stale, tails, failed, [next(positions[row[0]]) for row in rows])
