"""The seams between collab and its storage: rooms know :class:`UpdateLog`, the admin
commands (and an HTTP API) know :class:`DocumentStore`, and neither knows SQLite.

A store knows room names and update bytes, never rooms or pycrdt documents. Appends are
queued without waiting (fan-out never waits on the disk) and committed in groups; each
append gets a *ticket*, a number that grows by one per append, and a store reports the
highest ticket it has made durable so that callers can tell clients what is on disk.

Epochs and generations
----------------------
Other processes (the ``collab docs`` admin commands) change documents behind a running
server's back, so each document carries two counters, read with :meth:`UpdateLog.load`
and polled with :meth:`UpdateLog.versions`:

* ``epoch`` grows when a document's history is thrown away: ``collab docs delete`` and
  ``collab docs import --replace``. Clients holding the old history must not bring it
  back, so the store keeps the state vector of every retired epoch
  (:attr:`StoredDoc.retired_state_vectors`) and refuses appends made under an old epoch:
  it drops them, logs them, and reports the room to :meth:`UpdateLog.on_stale` callbacks.
* ``generation`` grows when another process appends an ordinary update on top of the
  history (``collab docs restore``, ``collab docs import``). Every client can merge it, so
  a room that sees a new generation only has to read the document again and pass the
  difference on as an ordinary update.

Backends
--------
:func:`collab.storage.open_store` picks the backend from the store URL and returns one
object that is both protocols (:class:`Store`). A backend is one module; it passes
``tests/test_storage_conformance.py`` unchanged. The results below are plain frozen
dataclasses so that every backend returns the same things.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from collab.errors import StoreError

# -- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """What a store holds for one document."""

    #: Updates in log order: a compacted row (if any) first, then the tail.
    updates: list[bytes]
    #: Bumped each time the document is deleted or replaced (see the module doc).
    epoch: int = 0
    #: Bumped each time another process appends to the document (restore, import).
    generation: int = 0
    #: The state vector (Yjs v1 encoding) each retired epoch had reached, oldest first. A
    #: client whose state includes one of these clocks holds history from a retired epoch.
    retired_state_vectors: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DocVersion:
    """A document's counters, as :meth:`UpdateLog.versions` reports them."""

    epoch: int = 0
    generation: int = 0


#: How :meth:`DocumentStore.list_docs` orders documents: ``updated_at`` newest first,
#: ``name`` A to Z, the sizes largest first; ties are broken by name.
DocOrder = Literal["updated_at", "name", "bytes", "updates", "history"]
DOC_ORDERS: tuple[DocOrder, ...] = ("updated_at", "name", "bytes", "updates", "history")


@dataclass(frozen=True, slots=True)
class DocInfo:
    """One document as ``collab docs list`` and ``GET /api/docs`` show it.

    ``dataclasses.asdict`` of it is the JSON both print, keys in this order.
    """

    name: str
    #: When the document last changed (an append, a delete), in Unix seconds.
    updated_at: float
    created_at: float
    epoch: int
    #: Bytes of the log a load reads.
    bytes: int
    #: Client updates that log stands for (a compacted row stands for many).
    updates: int
    #: Rows of that log.
    rows: int
    #: Bytes the retention window keeps besides (raw history and the base checkpoint).
    history_bytes: int
    #: When the document was deleted, or None.
    deleted_at: float | None

    def cursor(self, order: DocOrder) -> str:
        """The ``after`` that continues a listing in ``order`` after this document.

        The name itself when listing by name; otherwise the sort key and the name (as a
        JSON array), so the next page starts in the right place even if this document
        changed in between.
        """
        if order == "name":
            return self.name
        key = {
            "updated_at": self.updated_at,
            "bytes": self.bytes,
            "updates": self.updates,
            "history": self.history_bytes,
        }[order]
        return json.dumps([key, self.name])


def parse_cursor(order: DocOrder, after: str) -> tuple[float, str] | str:
    """The sort key and name a :meth:`DocInfo.cursor` stands for (just the name by name).

    :raises ValueError: ``after`` is not a cursor for ``order``.
    """
    if order == "name":
        return after
    try:
        key, name = json.loads(after)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{after!r} is not a cursor of a listing by {order}") from e
    if not isinstance(key, int | float) or isinstance(key, bool) or not isinstance(name, str):
        raise ValueError(f"{after!r} is not a cursor of a listing by {order}")
    return float(key), name


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`DocumentStore.append` or :meth:`DocumentStore.replace` did."""

    #: The document's epoch afterwards.
    epoch: int
    #: True if the content was replaced (a new epoch), False if the update was merged.
    replaced: bool


@dataclass(frozen=True, slots=True)
class CompactionResult:
    room: str
    rows_before: int
    bytes_before: int
    bytes_after: int
    #: Raw rows and bytes left after the squashed row (appended while it ran).
    tail_rows: int
    tail_bytes: int


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


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored update and its position in its document's log."""

    #: Position in the log of the document's current epoch: 1, 2, 3... with no gaps. A
    #: compacted row keeps the seq of the last update it covers. (epoch, seq) names one
    #: update for good: an epoch's log starts again at 1.
    seq: int
    update: bytes
    #: When the server received it, in Unix seconds.
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredUpdates:
    """What one group commit stored for one document (:meth:`UpdateLog.on_stored`)."""

    room: str
    epoch: int
    #: In log order, consecutive seqs.
    entries: list[LogEntry]


@dataclass(frozen=True, slots=True)
class LogTail:
    """What :meth:`DocumentStore.read_after` found after a log position."""

    #: The document's current epoch (0 for a document never stored).
    epoch: int
    #: The seq of its newest stored update (0: none).
    last_seq: int
    #: Every update after the position, one per seq, oldest first (at most the limit
    #: asked for: read on from the last one's seq). None when the updates after it are
    #: no longer all kept one by one (compacted past the retention window, or the
    #: position belongs to another epoch or to no stored update): the caller must start
    #: again from the whole document.
    entries: list[LogEntry] | None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """One stored update of a document and where it lives, for ``collab check``."""

    #: Where, as ``collab check`` prints it: ``updates seq 12``, ``history seq 3``,
    #: ``checkpoint``.
    where: str
    data: bytes
    #: Part of the log a load reads (replayed as a whole by ``collab check``).
    in_log: bool


# -- errors -------------------------------------------------------------------------


class HistoryUnavailableError(StoreError):
    """The document cannot be read at that time: it is older than the retention window."""


class DatabaseError(StoreError):
    """The database refused an operation.

    :param reason: the database's own words, without collab's context (the CLI prints
        them after ``database error:``).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DatabaseBusyError(DatabaseError):
    """Another process held the write lock for longer than the store waits for it.

    :param timeout: how long the store waited, in seconds.
    """

    def __init__(self, message: str, reason: str, timeout: float) -> None:
        super().__init__(message, reason)
        self.timeout = timeout


class DatabaseDamagedError(DatabaseError):
    """The stored data cannot be read: the file is damaged (``collab check`` says where)."""


# -- the protocols ------------------------------------------------------------------


class UpdateLog(Protocol):
    """What a running server uses: the hot path of appends, loads and commit callbacks."""

    async def load(self, room: str) -> StoredDoc:
        """Read a document's updates, including every update appended before this call.

        :raises StoreError: the store cannot be read.
        """
        ...

    def append_nowait(self, room: str, update: bytes, *, epoch: int | None = None) -> int:
        """Queue an update for the next group commit and return its ticket.

        ``epoch`` is the epoch the caller loaded the document at. If the document's epoch
        has changed by commit time, the update is not stored and the ``on_stale``
        callbacks are told. ``None`` appends to whatever epoch is current.

        :raises StoreError: the store is closed.
        """
        ...

    async def flush(self) -> None:
        """Wait until every update appended before this call is durable.

        :raises StoreError: the store was closed before the updates could be written.
        """
        ...

    @property
    def durable_ticket(self) -> int:
        """The highest ticket whose update is committed (or refused as stale)."""
        ...

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(durable_ticket, committed_at)`` on the event loop after each
        group commit; ``committed_at`` is the ``time.monotonic()`` it became durable."""
        ...

    def on_stale(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(room, epoch)`` on the event loop when updates appended under
        ``epoch`` were refused because the document has moved to a newer epoch.

        Called for each such room once per group commit, before that commit's
        ``on_commit`` callbacks, so acknowledgements can be withheld.
        """
        ...

    def on_failed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(room)`` on the event loop when the store refused a room's updates
        for good (a constraint, not a locked or full disk): they are dropped, so the
        room's clients must not be told they are saved.

        Called before that commit's ``on_commit`` callbacks, as ``on_stale`` is.
        """
        ...

    def on_stored(self, callback: Callable[[StoredUpdates], None]) -> None:
        """Call ``callback(stored)`` on the event loop after each group commit, once per
        document it stored updates of, with their log positions (a change feed starts
        here). Called after ``on_stale`` and ``on_failed`` and before ``on_commit``."""
        ...

    async def versions(self, rooms: Iterable[str]) -> dict[str, DocVersion]:
        """The current epoch and generation of each room, in one cheap query.

        A room that was never stored is ``DocVersion(0, 0)``.

        :raises StoreError: the store cannot be read.
        """
        ...


class DocumentStore(Protocol):
    """What the admin commands (and an HTTP API) use: whole documents and their history.

    Every method is safe while a server appends to the same store, in this process or
    another. A document that was deleted counts as missing (``DocumentNotFoundError``,
    "was deleted at ...") until something is appended to it again. Methods that read or
    write the database raise :class:`DatabaseError` (or a subclass) when it refuses.
    """

    async def list_docs(
        self,
        limit: int | None = None,
        *,
        order: DocOrder = "updated_at",
        after: str | None = None,
        include_deleted: bool = False,
        flush_timeout: float | None = None,
    ) -> list[DocInfo]:
        """Documents with their sizes, in ``order`` (most recently changed first).

        ``after`` is the :meth:`DocInfo.cursor` of the last document of the previous
        page. Waits for what is already appended to commit first, for at most
        ``flush_timeout`` seconds (None: as long as it takes); past that, the listing
        leaves it out.

        :raises ValueError: ``after`` is not a cursor for ``order``.
        :raises StoreError: the store cannot be read.
        """
        ...

    async def names(self) -> list[str]:
        """Every document that is not deleted, by name, A to Z.

        :raises StoreError: the store cannot be read.
        """
        ...

    async def info(self, room: str) -> DocInfo:
        """One document's listing entry.

        :raises DocumentNotFoundError: no such document, or it was deleted.
        """
        ...

    async def read(self, room: str) -> StoredDoc:
        """The document now: its log (merged, the content), epoch and retired epochs.

        :raises DocumentNotFoundError: no such document, or it was deleted.
        """
        ...

    async def read_at(self, room: str, at: float) -> list[bytes]:
        """Every stored update of the document created at or before ``at``: merged, they
        are the document as it was then.

        :raises DocumentNotFoundError: no such document, or it was deleted.
        :raises HistoryUnavailableError: ``at`` is older than the retention window.
        """
        ...

    async def read_after(self, room: str, epoch: int, seq: int, *, limit: int) -> LogTail:
        """The stored updates after position ``(epoch, seq)``, one per seq, at most
        ``limit`` of them: what a change feed resumed at that position has missed.

        ``(e, 0)`` with the current epoch ``e`` asks for the whole log from its start. The
        answer's ``entries`` is None when they cannot be given one by one (see
        :class:`LogTail`). A document never stored, or deleted, has an empty log.

        :raises StoreError: the store cannot be read.
        """
        ...

    async def history(self, room: str) -> HistoryRead:
        """What can be read back: the earliest time, the base, the compacted row, raw rows.

        :raises DocumentNotFoundError: no such document, or it was deleted.
        """
        ...

    async def append(
        self, room: str, update: bytes, *, epoch: int | None = None
    ) -> ImportResult | None:
        """Append ``update`` now, as another writer than the server (import, restore).

        The document's generation grows, so a server holding it reads it again. With
        ``epoch``, the update is stored only if that is still the document's epoch, and
        None is returned otherwise (it was deleted or replaced meanwhile). The caller
        validates the update; the store stores bytes.

        :raises StoreError: the store cannot be written.
        """
        ...

    async def replace(self, room: str, update: bytes) -> ImportResult:
        """Replace the document's whole content by ``update`` under a new epoch.

        The old epoch is retired as :meth:`delete` retires it; a document never stored
        keeps epoch 0.

        :raises StoreError: the store cannot be written.
        """
        ...

    async def delete(self, room: str) -> int:
        """Delete the document's content and history; return its new epoch.

        The name stays known with the bumped epoch and the retired epoch's state vector
        (what any client of it may hold), so clients that still hold the old history are
        recognised and refused when they reconnect.

        :raises DocumentNotFoundError: no such document, or it is already deleted.
        """
        ...

    async def compact(
        self, room: str, *, retention: float | None = None
    ) -> CompactionResult | None:
        """Squash the document's log into one row now (editing goes on meanwhile).

        Raw updates are kept as history if ``retention`` (default: the store's own) is
        above 0. Given a ``retention``, history older than it is then folded into the
        base. Returns None if there was nothing to squash or the log changed meanwhile.

        :raises InvalidUpdateError: a stored update cannot be applied.
        :raises StoreError: the store cannot be read or written.
        """
        ...

    async def stored_blobs(self, room: str) -> list[StoredBlob]:
        """Every stored update of the document (log, history, base) and where it lives.

        Log rows come in log order.

        :raises DocumentNotFoundError: no such document, or it was deleted.
        """
        ...

    async def check_integrity(self) -> list[str]:
        """The database's own check of its storage: one line per problem, [] if none.

        :raises DatabaseError: the database cannot be read at all.
        """
        ...

    async def backup(
        self,
        target: str,
        *,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy the whole store to ``target``, consistently while others write; return
        the copy's size in bytes. ``progress(done, total)`` is called on the event loop.

        :raises StoreError: the target exists (without ``force``) or the copy failed.
        """
        ...


class Store(UpdateLog, DocumentStore, Protocol):
    """What :func:`collab.storage.open_store` returns: both protocols, opened with
    ``async with``; leaving the block commits everything appended so far."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...
