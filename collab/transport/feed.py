"""The open event streams of ``GET /api/docs/{name}/events``, as the rooms and the store see
them: one :class:`StreamPeer` per stream, found by document and by session.

A stream peer is a :class:`collab.rooms.Peer`: it joins its document's room like a
websocket does (so it counts as a connection, keeps the room loaded, hears every awareness
change and is closed with the room's codes: 4409 when the document is deleted, 1001 on
shutdown), but it relays no update the room hands it. The updates it streams come from the
store instead (:meth:`EventStreams.on_stored`), each with its position in the log, so that
a reader can resume from the last one it saw. What it is handed waits in one outbox, in
order, bounded like a websocket peer's (frames and bytes): a reader that falls behind is
closed with 4500, never waited for.

Nothing here does I/O: ``collab.transport.sse`` drains the outbox onto the response.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable

from collab import metrics
from collab.errors import CloseCode
from collab.hooks import Identity
from collab.limits import RateLimit
from collab.protocol import AwarenessUpdate, MessageType, decode
from collab.protocol.messages import SyncType
from collab.storage.base import StoredUpdates

log = logging.getLogger("collab.transport")

SLOW_REASON = "reader fell too far behind; reconnect with Last-Event-ID to resume"


def format_event(event: str, data: str, event_id: str | None = None) -> bytes:
    """One ``text/event-stream`` event (WHATWG HTML, "Server-sent events", 9.2.5): ``data``
    must be one line (base64 or JSON, which never hold a line break)."""
    assert "\n" not in data and "\r" not in data, "an event's data is one line"
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def event_id(epoch: int, seq: int) -> str:
    """The ``id:`` of the update at ``(epoch, seq)`` of a document's log: ``3-1042``."""
    return f"{epoch}-{seq}"


class BadEventIdError(ValueError):
    """A ``Last-Event-ID`` that no event of the feed had."""


def parse_event_id(text: str) -> tuple[int, int]:
    """``(epoch, seq)`` of an :func:`event_id`: ASCII digits, a dash, ASCII digits.

    :raises BadEventIdError: it is not one.
    """
    epoch, dash, seq = text.partition("-")
    for part in (epoch, seq):
        if not (part.isascii() and part.isdigit() and len(part) <= 18):
            raise BadEventIdError(
                f"Last-Event-ID must be EPOCH-SEQ as the feed sent it (like 0-42), not {text!r}"
            )
    if not dash:
        raise BadEventIdError(f"Last-Event-ID must be EPOCH-SEQ, not {text!r}")
    return int(epoch), int(seq)


#: What waits in a stream's outbox: an encoded event, or what a commit stored.
Item = bytes | StoredUpdates


class StreamPeer:
    """One event stream, as its room and the store see it.

    :param room: the document's name.
    :param awareness: stream awareness changes too (``?awareness=1``).
    :param queue_size: most items the outbox holds (``--send-queue``)...
    :param queue_bytes: ...and most bytes (``--send-queue-bytes``); past either the reader
        is closed with 4500.
    """

    wants_ack = False

    def __init__(
        self,
        room: str,
        *,
        identity: Identity,
        label: str,
        address: str,
        awareness: bool,
        queue_size: int,
        queue_bytes: int,
        rate: RateLimit,
    ) -> None:
        self.room = room
        self.identity = identity
        self.label = label
        self.address = address
        self.awareness = awareness
        #: Names this stream to ``POST /api/docs/{name}/awareness``: unguessable, since
        #: whoever holds it speaks for the stream's presence.
        self.session = secrets.token_urlsafe(18)
        #: What a session's POSTs may send (the websocket's per-connection limits).
        self.rate = rate
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._outbox: deque[Item] = deque()
        self._queued_bytes = 0
        #: Called when something was queued or the stream must close (the writer wakes).
        self.wake: Callable[[], None] = lambda: None
        #: Called by :meth:`close_nowait`: cancels whatever the writer is waiting on.
        self.interrupt: Callable[[], None] = lambda: None
        #: Updates the room relayed, and updates the store reported: the room relays what
        #: this process stores (one frame per stored row) and also what other processes
        #: stored (the bus, ``collab docs import``); more of the first than the second
        #: means the store holds updates it never reported here, which the writer reads.
        self.relayed = 0
        self.reported = 0
        #: Events and bytes written, for the close log.
        self.events_out = 0
        self.bytes_out = 0

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # -- what the room hands it (collab.rooms.Peer) -------------------------------------

    def send_nowait(self, frame: bytes) -> None:
        if self.closed or not frame:
            return
        if frame[0] == MessageType.AWARENESS:
            if self.awareness:
                message = decode(frame)  # the room's own encoding: it decodes
                assert isinstance(message, AwarenessUpdate)
                data = base64.b64encode(message.payload).decode("ascii")
                self._queue(format_event("awareness", data), len(data))
        elif frame[0] == MessageType.SYNC and len(frame) > 1 and frame[1] == SyncType.UPDATE:
            self.relayed += 1
            self.wake()
        # Sync step 1 and 2 and acknowledgements are for websocket clients: the stream's
        # reader is given the document by the store (a snapshot, then each update).

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        """End the stream with a final ``close`` event carrying ``code`` and ``reason``."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            log.debug("closing %s: %d %s", self.label, code, reason)
        self._outbox.clear()
        self._queued_bytes = 0
        self.interrupt()
        self.wake()

    # -- what the store hands it --------------------------------------------------------

    def stored_nowait(self, stored: StoredUpdates) -> None:
        if self.closed:
            return
        self.reported += len(stored.entries)
        # base64 takes 4 bytes per 3: what the reader will be written
        self._queue(stored, sum(len(e.update) for e in stored.entries) * 4 // 3)

    # -- the writer's side --------------------------------------------------------------

    def _queue(self, item: Item, size: int) -> None:
        queued = self._queued_bytes + size
        if len(self._outbox) >= self._queue_size or queued > self._queue_bytes:
            metrics.LIMIT_HITS.labels(limit="send_queue").inc()
            self.close_nowait(CloseCode.TOO_SLOW, SLOW_REASON)
            return
        self._outbox.append(item)
        self._queued_bytes = queued
        self.wake()

    def take(self) -> list[Item]:
        """Everything queued, oldest first; the outbox is empty afterwards."""
        items = list(self._outbox)
        self._outbox.clear()
        self._queued_bytes = 0
        return items


class EventStreams:
    """Every open event stream, by document (what a commit stored goes to the streams of
    its document) and by session (what ``POST .../awareness`` names)."""

    def __init__(self) -> None:
        self._by_room: dict[str, set[StreamPeer]] = {}
        self._sessions: dict[str, StreamPeer] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, peer: StreamPeer) -> None:
        self._by_room.setdefault(peer.room, set()).add(peer)
        self._sessions[peer.session] = peer

    def discard(self, peer: StreamPeer) -> None:
        self._sessions.pop(peer.session, None)
        peers = self._by_room.get(peer.room)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._by_room[peer.room]

    def session(self, session: str) -> StreamPeer | None:
        """The open stream that announced ``session``, if any."""
        peer = self._sessions.get(session)
        return peer if peer is not None and not peer.closed else None

    def on_stored(self, stored: StoredUpdates) -> None:
        """The store's :meth:`~collab.storage.base.UpdateLog.on_stored` callback."""
        for peer in self._by_room.get(stored.room, ()):
            peer.stored_nowait(stored)


def session_event(peer: StreamPeer, retry_ms: int) -> bytes:
    """The stream's first event: its session, and how soon to reconnect (``retry:``)."""
    data = json.dumps({"session": peer.session, "awareness": peer.awareness})
    return f"retry: {retry_ms}\n".encode() + format_event("session", data)
