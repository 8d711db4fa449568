"""The shared store: the same update log as SQLite, in PostgreSQL, for several nodes.

Theory of operation
-------------------
:class:`PostgresStore` is both seams of :mod:`collab.storage.base`, like
:class:`~collab.storage.sqlite.SQLiteLog`, and reuses :mod:`collab.storage.commit` as is:
tickets, group commit, durable waiters, callbacks and compaction scheduling. What is
PostgreSQL's:

* **The group commit** runs on the commit thread (:mod:`collab.storage.writer`), which
  owns one synchronous psycopg connection of its own (:mod:`.append`): a commit never
  waits for a busy event loop, as with SQLite. If the database is unreachable or refuses
  for now (connection lost, admin shutdown, deadlock, serialization) the thread drops the
  connection, retries the same batch with backoff, forever, reconnecting each time;
  nothing is acknowledged until it lands, and rooms keep editing and relaying in memory
  meanwhile. Any other error (a row that can never be written) is retried room by room,
  and the rooms that still fail are reported to ``on_failed``, as with SQLite.
* **Everything else** (loads, version polls, the admin calls, compaction's read and swap)
  runs on the event loop through an async psycopg-pool (:mod:`.queries`), so it never
  takes a worker thread. Squashing runs in a worker thread without holding a connection.
* **Several nodes** share the tables; every writer takes the document's row lock first
  (:mod:`.queries` explains why that is enough), so seqs are unique and gap-free, a
  compaction never drops another node's append, and an append under an epoch another
  node retired is refused.

A commit's retry may, rarely, store a batch twice: when the connection drops after the
server committed but before it answered, the retry appends the same updates again under
new seqs. A Yjs update applies once however often it is replayed, so the document is the
same; only its log has a duplicate row, which the next compaction squashes away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import anyio
import psycopg
from anyio import AsyncContextManagerMixin, from_thread, to_thread
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collab.errors import StoreError
from collab.storage.base import (
    CompactionResult,
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
from collab.storage.postgres import queries
from collab.storage.postgres.append import KnownNames, MissingDocumentError, append_batch
from collab.storage.postgres.backup import backup_to_sqlite
from collab.storage.postgres.schema import conninfo, describe, migrate
from collab.storage.sqlite.queries import DEFAULT_RETENTION, squash_prune
from collab.updates import squash

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from collab.config import Settings

log = logging.getLogger("collab.storage")
T = TypeVar("T")

#: How often a server looks for history older than the retention window, in seconds.
PRUNE_INTERVAL = 3600.0
#: Pooled connections per store, besides the commit thread's own: loads, version polls,
#: compaction and the admin calls share them. Mind ``max_connections`` (100 by default)
#: across every node and the admin CLI.
POOL_SIZE = 4
#: Seconds a caller waits for a pooled connection (all busy, or the database down) before
#: its operation fails with :class:`~collab.storage.base.DatabaseBusyError`.
POOL_TIMEOUT = 10.0
#: Errors retrying is for: the connection, or the server, refusing for now.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    MissingDocumentError,
)


@asynccontextmanager
async def _database_errors(context: str | None) -> AsyncIterator[None]:
    """Turn psycopg's errors into the backend-neutral ones, ``context: reason``."""
    try:
        yield
    except PoolTimeout as e:
        # Not DatabaseBusyError: that means another process holds a lock, and this is the
        # database being unreachable (or every connection busy) for POOL_TIMEOUT seconds.
        reason = f"no database connection within {POOL_TIMEOUT:g} s"
        message = reason if context is None else f"{context}: {reason}"
        raise DatabaseError(message, reason) from e
    except psycopg.Error as e:
        reason = one_line(e)
        message = reason if context is None else f"{context}: {reason}"
        raise DatabaseError(message, reason) from e


def one_line(error: BaseException) -> str:
    """libpq's message on one line (it spreads some over several, with hints)."""
    return " ".join(str(error).split()) or type(error).__name__


class PostgresStore(CommittedLog, AsyncContextManagerMixin):
    """The PostgreSQL store: :class:`~collab.storage.base.Store`, safe for several nodes.

    Use as ``async with PostgresStore(url) as store:``; leaving the block commits
    everything appended so far, even when the surrounding task is being cancelled.

    :param url: a libpq URL, ``postgresql://user@host:5432/dbname`` (query parameters such
        as ``?options=-csearch_path%3Dschema`` pass through).
    :param compact_rows: compact a document once this many raw rows follow its last
        compaction (``Settings.compact_rows``), as counted by this node.
    :param compact_bytes: ... or once they hold this many bytes.
    :param retention: seconds raw history is kept for point-in-time reads; 0 keeps none.
    :param prune_interval: how often to look for history older than ``retention``.
    :param create: create collab's tables if there are none (else that is an error; the
        database itself must exist either way).
    :param background: compact and prune in the background, as a server does.
    """

    def __init__(
        self,
        url: str,
        *,
        commit_delay: float = 0.02,
        compact_rows: int = 500,
        compact_bytes: int = 1024 * 1024,
        retention: float = DEFAULT_RETENTION,
        prune_interval: float = PRUNE_INTERVAL,
        create: bool = True,
        background: bool = True,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self.conninfo = conninfo(url)
        self.commit_delay = commit_delay
        self.compact_rows = compact_rows
        self.compact_bytes = compact_bytes
        self.retention = retention
        self.prune_interval = prune_interval
        self.create = create
        self.background = background
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        # The commit thread's own connection (None until its first commit, and after a
        # failure), and the names it knows have a documents row.
        self._commit_conn: psycopg.Connection | None = None
        self._commit_lock = threading.Lock()
        self._known = KnownNames()
        self._compaction = CompactionScheduler(
            compact_rows=compact_rows, compact_bytes=compact_bytes
        )
        self._commits = GroupCommit(
            self._commit,
            delay=commit_delay,
            describe=describe(url),
            expected_errors=TRANSIENT_ERRORS,
            compaction=self._compaction,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, create: bool = True, background: bool = True
    ) -> PostgresStore:
        """A store configured by ``settings`` (commit delay, compaction, retention), on
        the URL ``settings.db``."""
        return cls(
            settings.db_path,
            commit_delay=settings.commit_delay,
            compact_rows=settings.compact_rows,
            compact_bytes=settings.compact_bytes,
            retention=settings.retention,
            create=create,
            background=background,
        )

    # -- lifecycle -------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[PostgresStore]:
        where = describe(self.url)
        try:
            # One connection of its own first: a wrong URL fails here with libpq's words.
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            ) as conn:
                await migrate(conn, self.url, create=self.create)
        except psycopg.Error as e:
            raise StoreError(f"cannot open database {where}: {one_line(e)}") from e
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            # A connection the database dropped (a restart, an outage) is replaced before
            # anyone gets it, instead of failing that caller once.
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_TIMEOUT,
            name="collab",
            open=False,
        )
        await pool.open()
        self._pool = pool
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
            self._pool = None
            with anyio.CancelScope(shield=True):
                await pool.close()
                await to_thread.run_sync(self._close_commit_connection)

    # -- UpdateLog (appending and its reports: CommittedLog) -------------------

    async def load(self, room: str) -> StoredDoc:
        await self._commits.wait_for_room(room)
        async with self._connection(f"cannot read document {room!r}") as conn:
            read = await queries.read_log(conn, room)
        self._compaction.track(room, read.tail_rows, read.tail_bytes)
        return read.stored

    async def versions(self, rooms: Iterable[str]) -> dict[str, DocVersion]:
        names = list(rooms)
        if not names:
            return {}
        async with self._connection("cannot read document versions") as conn:
            return await queries.read_versions(conn, names)

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
        async with self._connection("cannot list documents") as conn:
            return await queries.list_docs(
                conn, limit, order, after=after, include_deleted=include_deleted
            )

    async def names(self) -> list[str]:
        async with self._connection("cannot list documents") as conn:
            return await queries.doc_names(conn)

    async def info(self, room: str) -> DocInfo:
        async with self._connection(f"cannot read document {room!r}") as conn:
            return await queries.doc_info(conn, room)

    async def read(self, room: str) -> StoredDoc:
        async with self._connection(f"cannot read document {room!r}") as conn:
            return await queries.read_existing(conn, room)

    async def read_at(self, room: str, at: float) -> list[bytes]:
        async with self._connection(f"cannot read document {room!r}") as conn:
            return await queries.read_at(conn, room, at)

    async def read_after(self, room: str, epoch: int, seq: int, *, limit: int) -> LogTail:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        async with self._connection(f"cannot read document {room!r}") as conn:
            return await queries.read_after(conn, room, epoch, seq, limit)

    async def history(self, room: str) -> HistoryRead:
        async with self._connection(f"cannot read the history of {room!r}") as conn:
            return await queries.read_history(conn, room)

    async def append(
        self, room: str, update: bytes, *, epoch: int | None = None
    ) -> ImportResult | None:
        async with self._connection(f"cannot append to {room!r}") as conn:
            return await queries.append_external(conn, room, update, epoch=epoch)

    async def replace(self, room: str, update: bytes) -> ImportResult:
        async with self._connection(f"cannot replace {room!r}") as conn:
            epoch = await queries.replace_doc(conn, room, update)
        return ImportResult(epoch, replaced=True)

    async def delete(self, room: str) -> int:
        async with self._connection(f"cannot delete {room!r}") as conn:
            return await queries.delete_doc(conn, room)

    async def compact(
        self, room: str, *, retention: float | None = None
    ) -> CompactionResult | None:
        """Compact ``room`` now: read, squash without a connection, swap under the row lock.

        Returns None if there was nothing to do or the rows changed meanwhile (another
        node compacted first). With a ``retention``, history older than it is folded into
        the base afterwards.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        keep_history = (self.retention if retention is None else retention) > 0
        context = f"cannot compact {room!r}"
        async with self._connection(context) as conn:
            job = await queries.read_compaction(conn, room)
        result = None
        if job is not None:
            # Not holding a connection: group commits (and loads) carry on meanwhile.
            squashed = await to_thread.run_sync(squash, job.updates, abandon_on_cancel=True)
            async with self._connection(context) as conn:
                result = await queries.swap_compaction(
                    conn, job, squashed, keep_history=keep_history
                )
        if retention is not None:
            await self._prune(room, time.time() - retention)
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
        async with self._connection(f"cannot read document {room!r}") as conn:
            return await queries.stored_blobs(conn, room)

    async def check_integrity(self) -> list[str]:
        async with self._connection("cannot check the database") as conn:
            return await queries.check_consistency(conn)

    async def backup(
        self,
        target: str,
        *,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """A logical copy into the SQLite file ``target`` (see :mod:`.backup`)."""

        def report(done: int, total: int) -> None:
            if progress is not None:
                from_thread.run_sync(progress, done, total)

        return await to_thread.run_sync(
            lambda: backup_to_sqlite(self.conninfo, target, force=force, progress=report)
        )

    # -- history ---------------------------------------------------------------

    async def prune(self, room: str, now: float | None = None) -> bool:
        """Fold ``room``'s history older than the retention window into its base.

        :raises StoreError: the database cannot be read or written.
        :raises InvalidUpdateError: a stored update cannot be applied.
        """
        cutoff = (time.time() if now is None else now) - self.retention
        return await self._prune(room, cutoff)

    async def _prune(self, room: str, cutoff: float) -> bool:
        context = f"cannot prune the history of {room!r}"
        async with self._connection(context) as conn:
            job = await queries.read_prune(conn, room, cutoff)
        if job is None:
            return False
        base = await to_thread.run_sync(squash_prune, job, abandon_on_cancel=True)
        async with self._connection(context) as conn:
            return await queries.swap_prune(conn, job, base)

    async def _compact_in_background(self, room: str) -> None:
        await self.compact(room)
        if self.retention > 0:
            await self.prune(room)

    async def _prune_periodically(self) -> None:
        async def rooms_with_old_history(cutoff: float) -> list[str]:
            async with self._connection(None) as conn:
                return await queries.rooms_with_old_history(conn, cutoff)

        await prune_periodically(
            rooms_with_old_history,
            self.prune,
            retention=self.retention,
            interval=self.prune_interval,
        )

    # -- connections and the writer --------------------------------------------

    @asynccontextmanager
    async def _connection(self, context: str | None) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; psycopg's errors leave as :class:`DatabaseError`."""
        if self._pool is None:
            raise StoreError("the update log is not open")
        async with _database_errors(context), self._pool.connection() as conn:
            yield conn

    def _connect_for_commits(self) -> psycopg.Connection:
        # On the commit thread: the connection it lost (or never had) is made again.
        conn = self._commit_conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._commit_conn = psycopg.Connection.connect(self.conninfo, autocommit=True)
        return conn

    def _close_commit_connection(self) -> None:
        with self._commit_lock:
            conn, self._commit_conn = self._commit_conn, None
        if conn is not None:
            conn.close()

    def _commit(self, batch: list[QueuedUpdate]) -> AppendResult:
        # On the commit thread.
        rows = [(p.room, p.update, p.received_at, p.epoch) for p in batch]
        recount = {p.room for p in batch if p.recount}
        with self._commit_lock:
            conn = self._connect_for_commits()
            try:
                return append_batch(conn, rows, count=recount, known=self._known)
            except TRANSIENT_ERRORS:
                raise  # the connection or the server, for now: the whole batch is retried
            except psycopg.Error as e:
                # Something in the batch cannot be written however often it is retried.
                # Each room is committed on its own and the ones that fail are reported
                # (the rooms close their peers; nothing else is held up).
                log.error("a group commit failed (%s); committing room by room", e)
                return self._commit_each_room(conn, rows, recount)

    def _commit_each_room(
        self,
        conn: psycopg.Connection,
        rows: list[tuple[str, bytes, float, int | None]],
        recount: set[str],
    ) -> AppendResult:
        by_room: dict[str, list[tuple[str, bytes, float, int | None]]] = {}
        for row in rows:
            by_room.setdefault(row[0], []).append(row)
        stale: list[tuple[str, int]] = []
        tails: dict[str, tuple[int, int]] = {}
        failed: dict[str, str] = {}
        positions: dict[str, Iterator[tuple[int, int] | None]] = {}
        for room, room_rows in by_room.items():
            try:
                result = append_batch(conn, room_rows, count=recount & {room}, known=self._known)
            except TRANSIENT_ERRORS:
                # The connection this time: the batch is retried whole, and the rooms
                # committed above are appended again (harmless: see the module doc).
                raise
            except psycopg.Error as e:
                failed[room] = one_line(e)
                positions[room] = iter([None] * len(room_rows))
                continue
            stale.extend(result.stale)
            tails.update(result.tails)
            positions[room] = iter(result.positions)
        return AppendResult(stale, tails, failed, [next(positions[row[0]]) for row in rows])
