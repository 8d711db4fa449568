"""The seam between rooms and storage: rooms know this protocol, not SQLite.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol


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


class UpdateLog(Protocol):
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

    async def versions(self, rooms: Iterable[str]) -> dict[str, DocVersion]:
        """The current epoch and generation of each room, in one cheap query.

        A room that was never stored is ``DocVersion(0, 0)``.

        :raises StoreError: the store cannot be read.
        """
        ...
