"""What every database backend needs around its SQL: tickets, group commit, callbacks,
durable waiters and compaction scheduling. Nothing here knows which database it is.

Theory of operation
-------------------
Rooms call :meth:`GroupCommit.append_nowait` on the event loop; it gives the update the
next *ticket*, notes the room as having queued appends, and only queues the update for the
commit thread (:class:`collab.storage.writer.CommitThread`), which waits until the oldest
queued update is ``delay`` old so that a burst of keystrokes shares one transaction (group
commit), then calls the backend's ``commit(batch)`` and reports back to the loop. The event
loop never blocks on the disk, and a busy loop does not delay commits.

Back on the loop, :meth:`GroupCommit._committed` makes the batch's last ticket the
*durable ticket*, forgets the rooms whose queued appends it covered, tells the
``on_failed`` and ``on_stale`` listeners about rooms whose updates were refused (before any
``on_commit`` listener, so no acknowledgement goes out for them), hands the rows it
counted to the compaction scheduler, wakes every waiter whose ticket is covered, and calls
the ``on_commit`` listeners. A ticket only ever becomes durable after its update is
committed or refused: a commit that fails is retried by the thread, forever, and nothing is
acknowledged until it lands. A document's load first waits for its own queued updates
(:meth:`GroupCommit.wait_for_room`), so an unload followed by a quick reload never misses
a write.

Compaction scheduling. :class:`CompactionScheduler` counts, per document, the raw rows
appended since its last compaction (an LRU of ``TRACKED_ROOMS``; a room that fell out is
recounted by the backend at its next commit, ``QueuedUpdate.recount``). Past
``compact_rows`` rows or ``compact_bytes`` bytes the room is queued for the compactor
loop (:meth:`CompactionScheduler.run`), which compacts one room at a time with the
backend's function; :func:`prune_periodically` folds history older than the retention
window into each document's base every ``interval``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio import to_thread

from collab import logs, metrics
from collab.errors import CollabError, StoreError
from collab.storage.base import LogEntry, StoredUpdates
from collab.storage.writer import CommitThread

log = logging.getLogger("collab.storage")

#: How many documents' compaction counters a log keeps in memory; others are recounted.
TRACKED_ROOMS = 10_000


@dataclass(slots=True)
class QueuedUpdate:
    """One append waiting for its group commit."""

    ticket: int
    room: str
    update: bytes
    #: ``time.time()`` when it was appended: the time history reads it at.
    received_at: float
    epoch: int | None
    recount: bool  # the log has no compaction counters for the room: count its rows


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a backend's commit of a batch did, beyond storing the rows."""

    #: ``(room, epoch)`` of updates refused because the document's epoch moved on.
    stale: list[tuple[str, int]]
    #: For the rooms asked about: raw rows and bytes since the last compaction.
    tails: dict[str, tuple[int, int]]
    #: Rooms whose updates the database refused for good (not a locked or full disk),
    #: with why.
    failed: dict[str, str] = field(default_factory=dict)
    #: Where each update of the batch went, in batch order: ``(epoch, seq)``, or None for
    #: one not stored (stale or failed).
    positions: list[tuple[int, int] | None] = field(default_factory=list)


class CompactionScheduler:
    """Which documents are due for compaction, and the loop that compacts them.

    :param compact_rows: compact a document once this many raw rows follow its last
        compaction (``Settings.compact_rows``).
    :param compact_bytes: ... or once they hold this many bytes.
    """

    def __init__(
        self, *, compact_rows: int, compact_bytes: int, tracked_rooms: int = TRACKED_ROOMS
    ) -> None:
        self.compact_rows = compact_rows
        self.compact_bytes = compact_bytes
        self.tracked_rooms = tracked_rooms
        # Raw rows and bytes since each room's last compaction (an LRU; a room that fell
        # out is recounted at its next commit), and the rooms waiting for compaction.
        self._tails: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._to_compact: dict[str, None] = {}
        self._wakeup = anyio.Event()
        self._compacting: str | None = None

    def tracks(self, room: str) -> bool:
        """Whether the room's counters are known (else its next commit recounts them)."""
        return room in self._tails

    def track(self, room: str, rows: int, size: int) -> None:
        """Record the room's raw tail; queue it for compaction if it is past a threshold."""
        self._tails[room] = (rows, size)
        self._tails.move_to_end(room)
        while len(self._tails) > self.tracked_rooms:
            self._tails.popitem(last=False)
        if rows > self.compact_rows or size > self.compact_bytes:
            if room not in self._to_compact and room != self._compacting:
                self._to_compact[room] = None
                self._wakeup.set()

    def count_committed(
        self, batch: list[QueuedUpdate], counted: dict[str, tuple[int, int]], refused: set[str]
    ) -> None:
        """Add a committed batch to the counters: ``counted`` rooms were recounted by the
        backend; ``refused`` rooms' updates were not stored."""
        added: dict[str, tuple[int, int]] = {}
        for p in batch:
            if p.room in counted or p.room in refused:
                continue
            rows, size = added.get(p.room, (0, 0))
            added[p.room] = (rows + 1, size + len(p.update))
        for room, (rows, size) in counted.items():
            self.track(room, rows, size)
        for room, (rows, size) in added.items():
            before = self._tails.get(room)
            if before is not None:
                self.track(room, before[0] + rows, before[1] + size)

    async def run(self, compact: Callable[[str], Awaitable[object]]) -> None:
        """Compact each room queued by :meth:`track` with ``compact(room)``, one at a time,
        until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            while self._to_compact:
                room = next(iter(self._to_compact))
                del self._to_compact[room]
                self._compacting = room
                started = time.monotonic()
                try:
                    result = await compact(room)
                    took = time.monotonic() - started
                    metrics.COMPACTIONS.inc()
                    metrics.COMPACTION_SECONDS.observe(took)
                    logs.event(
                        log,
                        logging.INFO,
                        "compaction",
                        "compacted",
                        doc=room,
                        duration=round(took, 3),
                        result=str(result) if result else None,
                    )
                except CollabError as e:
                    # Counted as compacted, so it is retried only after another
                    # compact_rows updates, not on every commit.
                    self._tails[room] = (0, 0)
                    log.error("cannot compact %r: %s (run `collab check`)", room, e)
                finally:
                    self._compacting = None


async def prune_periodically(
    rooms_with_old_history: Callable[[float], Awaitable[list[str]]],
    prune: Callable[[str], Awaitable[object]],
    *,
    retention: float,
    interval: float,
) -> None:
    """Every ``interval`` seconds (the first time within a minute), fold each document's
    history older than ``retention`` into its base, until cancelled; 0 keeps none to fold.

    ``rooms_with_old_history(cutoff)`` names the documents with history before ``cutoff``.
    """
    if retention <= 0:
        return
    delay = min(interval, 60.0)  # a first pass soon after start
    while True:
        await anyio.sleep(delay)
        delay = interval
        try:
            for room in await rooms_with_old_history(time.time() - retention):
                await prune(room)
        except CollabError as e:
            log.error("cannot prune history older than the retention window: %s", e)


class GroupCommit:
    """Tickets, the commit thread, and what happens on the loop after each commit.

    :param commit: the backend's commit, called on the commit thread with a batch, oldest
        first. It raises only for what retrying can fix (a locked or full disk); a room
        the database refuses for good goes into ``AppendResult.failed``.
    :param delay: how long the oldest update may wait for others to join its batch.
    :param describe: names where the updates go, for the retry log lines.
    :param expected_errors: the backend's errors that retrying is for (logged without a
        traceback).
    :param compaction: told about every committed row.
    """

    def __init__(
        self,
        commit: Callable[[list[QueuedUpdate]], AppendResult],
        *,
        delay: float,
        describe: str,
        expected_errors: tuple[type[Exception], ...] = (),
        compaction: CompactionScheduler,
    ) -> None:
        self._thread = CommitThread(
            commit,
            self._committed,
            delay=delay,
            describe=describe,
            expected_errors=expected_errors,
        )
        self._compaction = compaction
        self._queued_rooms: dict[str, int] = {}  # room -> last ticket queued for it
        self._next_ticket = 1
        self._durable_ticket = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._listeners: list[Callable[[int, float], None]] = []
        self._stale_listeners: list[Callable[[str, int], None]] = []
        self._failed_listeners: list[Callable[[str], None]] = []
        self._stored_listeners: list[Callable[[StoredUpdates], None]] = []
        #: Set once the store is closed: appends are refused, waits fail.
        self.closed = False

    def start(self) -> None:
        """Start the commit thread; call from the event loop the callbacks should run on."""
        self._thread.start()

    @property
    def durable_ticket(self) -> int:
        return self._durable_ticket

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        self._listeners.append(callback)

    def on_stale(self, callback: Callable[[str, int], None]) -> None:
        self._stale_listeners.append(callback)

    def on_failed(self, callback: Callable[[str], None]) -> None:
        self._failed_listeners.append(callback)

    def on_stored(self, callback: Callable[[StoredUpdates], None]) -> None:
        self._stored_listeners.append(callback)

    def append_nowait(self, room: str, update: bytes, *, epoch: int | None = None) -> int:
        """Queue ``update`` and return its ticket (see ``UpdateLog.append_nowait``).

        :raises StoreError: the store is closed.
        """
        if self.closed:
            raise StoreError("the update log is closed")
        ticket = self._next_ticket
        self._next_ticket += 1
        recount = not self._compaction.tracks(room)
        self._thread.put(QueuedUpdate(ticket, room, update, time.time(), epoch, recount))
        self._queued_rooms[room] = ticket
        return ticket

    async def flush(self) -> None:
        """Wait until every update appended before this call is durable.

        :raises StoreError: the store closed before they were written.
        """
        await self.wait_for(self._next_ticket - 1)

    async def wait_for_room(self, room: str) -> None:
        """Wait until every update appended to ``room`` before this call is durable.

        :raises StoreError: the store closed before they were written.
        """
        if room in self._queued_rooms:
            await self.wait_for(self._queued_rooms[room])

    async def wait_for(self, ticket: int) -> None:
        """Wait until ``ticket`` is durable.

        :raises StoreError: the store closed before it was written.
        """
        if self._durable_ticket >= ticket:
            return
        if self.closed:
            raise StoreError("the update log closed before the updates were written")
        event = anyio.Event()
        self._waiters.append((ticket, event))
        await event.wait()

    async def drain(self) -> None:
        """Commit everything queued without waiting for ``delay``, and stop the thread."""
        # Everything put before stop() is committed before the thread ends, and its
        # call_soon_threadsafe reports run before join's own completion resumes us.
        self._thread.stop()
        await to_thread.run_sync(self._thread.join)
        for _, event in self._waiters:
            event.set()
        self._waiters = []

    def _committed(
        self, batch: list[QueuedUpdate], result: AppendResult, committed_at: float
    ) -> None:
        # On the event loop, after the commit thread made ``batch`` durable.
        last_ticket = batch[-1].ticket
        metrics.STORE_BATCH_ROWS.observe(len(batch))
        self._durable_ticket = last_ticket
        for room, ticket in list(self._queued_rooms.items()):
            if ticket <= last_ticket:
                del self._queued_rooms[room]
        refused = {room for room, _ in result.stale} | set(result.failed)
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
        self._compaction.count_committed(batch, result.tails, refused)
        if self._stored_listeners:
            for stored in _stored_by_room(batch, result.positions):
                for stored_callback in self._stored_listeners:
                    stored_callback(stored)
        still_waiting = []
        for ticket, event in self._waiters:
            if ticket <= last_ticket:
                event.set()
            else:
                still_waiting.append((ticket, event))
        self._waiters = still_waiting
        for callback in self._listeners:
            callback(last_ticket, committed_at)


def _stored_by_room(
    batch: list[QueuedUpdate], positions: list[tuple[int, int] | None]
) -> list[StoredUpdates]:
    """The batch's stored updates, grouped by room (in the order rooms first appear)."""
    assert len(positions) == len(batch), "a backend reports every update's position"
    by_room: dict[str, StoredUpdates] = {}
    for queued, position in zip(batch, positions, strict=True):
        if position is None:
            continue
        epoch, seq = position
        entry = LogEntry(seq, queued.update, queued.received_at)
        stored = by_room.get(queued.room)
        if stored is None:
            by_room[queued.room] = StoredUpdates(queued.room, epoch, [entry])
        else:
            assert stored.epoch == epoch, "one transaction sees one epoch per document"
            stored.entries.append(entry)
    return list(by_room.values())


class CommittedLog:
    """The half of :class:`~collab.storage.base.UpdateLog` every store shares: appends,
    the durable ticket and the reports all go through the store's :class:`GroupCommit`
    (``self._commits``); a store adds loading and its own commit function."""

    _commits: GroupCommit

    @property
    def durable_ticket(self) -> int:
        return self._commits.durable_ticket

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        self._commits.on_commit(callback)

    def on_stale(self, callback: Callable[[str, int], None]) -> None:
        self._commits.on_stale(callback)

    def on_failed(self, callback: Callable[[str], None]) -> None:
        self._commits.on_failed(callback)

    def on_stored(self, callback: Callable[[StoredUpdates], None]) -> None:
        self._commits.on_stored(callback)

    def append_nowait(self, room: str, update: bytes, *, epoch: int | None = None) -> int:
        return self._commits.append_nowait(room, update, epoch=epoch)

    async def flush(self) -> None:
        await self._commits.flush()
