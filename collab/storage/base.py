"""The seam between rooms and storage: rooms know this protocol, not SQLite.

A store knows room names and update bytes, never rooms or pycrdt documents. Appends are
queued without waiting (fan-out never waits on the disk) and committed in groups; each
append gets a *ticket*, a number that grows by one per append, and a store reports the
highest ticket it has made durable so that callers can tell clients what is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """What a store holds for one document."""

    #: Updates in log order: a compacted row (if any) first, then the tail.
    updates: list[bytes]
    #: Bumped each time the document is deleted or restored (see ``rooms``).
    epoch: int = 0


class UpdateLog(Protocol):
    async def load(self, room: str) -> StoredDoc:
        """Read a document's updates, including every update appended before this call.

        :raises StoreError: the store cannot be read.
        """
        ...

    def append_nowait(self, room: str, update: bytes) -> int:
        """Queue an update for the next group commit and return its ticket."""
        ...

    async def flush(self) -> None:
        """Wait until every update appended before this call is durable.

        :raises StoreError: the store was closed before the updates could be written.
        """
        ...

    @property
    def durable_ticket(self) -> int:
        """The highest ticket whose update is committed."""
        ...

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(durable_ticket)`` on the event loop after each group commit."""
        ...
