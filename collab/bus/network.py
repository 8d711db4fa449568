"""A bus across machines: what every broker-backed bus does, whatever carries its bytes.

Theory of operation
-------------------
A :class:`NetworkBus` holds one connection to a broker (Redis, NATS: a :class:`Transport`
each, in ``redis.py`` and ``nats.py``) and runs five tasks in its task group:

* **connection**: connect, subscribe to the nodes channel and to the channel of every
  document a node has open, then read until the connection fails; then wait (0.1 s,
  doubling to 5 s) and connect again. Each time it connects, every open document is
  synced (below) and its awareness announced: whatever was missed meanwhile is healed.
* **publisher**: drains the publish queue into the connection. The queue is bounded
  (:data:`MAX_QUEUE_MESSAGES`, :data:`MAX_QUEUE_BYTES`); a full queue, or a bus that is
  down, drops the message (logged, counted in ``collab_bus_dropped_total``) and marks the
  document for a sync. A room never waits on the network.
* **heartbeat**: every ``heartbeat`` seconds a node says it is alive on the nodes
  channel. Any message from a node counts as life; a node silent for
  :data:`MISSED_HEARTBEATS` intervals (or that said goodbye) is gone, and every local node
  removes the awareness states its connections had. Its own heartbeat coming back
  through the broker is how a connection that silently stopped delivering is noticed.
* **sync**: every ``sync_interval`` seconds, and soon after a subscription, a reconnect
  or a drop, each open document's state (state vector and a digest of its deletions,
  from :meth:`BusNode.state_of`) is published. A node that holds more answers the sender
  alone with the difference; one that holds less sends its own state back at once, once.
  Applying an update twice is harmless; losing one is not, and this is what finds it.
* **poll**: the store's versions, as :class:`~collab.bus.local.LocalBus` polls them, so a
  ``collab docs delete`` on any machine closes the stale clients of every node.

Every message is an :class:`Envelope`: its kind, the origin node, an optional target
node, the document, and the payload. A node never gets its own messages (the broker
echoes them; they are dropped here), nor answers addressed to another node. What arrives
is treated as untrusted: it must decode, fit :attr:`Transport.max_payload`, and name the
document its channel is for; anything else is logged and dropped, never raised.
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import anyio
from anyio import AsyncContextManagerMixin
from anyio.abc import TaskGroup

from collab import metrics
from collab.bus.base import BusNode
from collab.errors import CollabError, StoreError
from collab.limits import LogThrottle
from collab.storage.base import UpdateLog

log = logging.getLogger("collab.bus")

#: Messages waiting to be published, at most; past it a message is dropped and its
#: document synced instead.
MAX_QUEUE_MESSAGES = 4096
#: Bytes waiting to be published, at most (the same).
MAX_QUEUE_BYTES = 128 * 1024 * 1024
#: Heartbeat intervals a node may stay silent before the others count it gone.
MISSED_HEARTBEATS = 3
#: Other nodes remembered at once; heartbeats from more are ignored (a bus is shared
#: infrastructure, but its bytes are still not trusted to size a table).
MAX_NODES = 1024
#: Waits between connection attempts: the first, and the longest.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
#: Longest a subscription waits for the broker to confirm it before a room loads anyway
#: (the sync after the load heals what a late subscription missed).
SUBSCRIBE_TIMEOUT = 2.0
#: Most documents synced at once when many are due; the rest follow a loop turn later.
SYNC_BATCH = 1000
#: Seconds before a document still loading is looked at again for its first sync.
LOADING_RETRY = 0.05

#: Largest message once reassembled: a document at the default --max-document-bytes,
#: and its envelope. Larger ones are not published (logged, counted as too_large).
MAX_MESSAGE_BYTES = 65 * 1024 * 1024
#: Bytes of fragments kept waiting for the rest of their message, from all nodes; and
#: seconds a message may take to arrive whole before its fragments are dropped.
MAX_PARTIAL_BYTES = 2 * MAX_MESSAGE_BYTES
PARTIAL_TIMEOUT = 30.0
#: A fragment's message id, its index and the number of fragments.
FRAGMENT_HEADER = struct.Struct(">QII")

VERSION = 1


@dataclass(slots=True)
class _Partial:
    """The fragments of one message received so far."""

    count: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class BusConnectionError(CollabError):
    """The connection to the broker failed or was lost."""


class BusMessageError(CollabError):
    """Bytes from the bus that are not a valid envelope."""


class Kind(IntEnum):
    """What an envelope carries."""

    #: An update the origin node accepted (and stored), or the answer to a sync.
    UPDATE = 1
    #: A y-protocols awareness update of the origin node's connections.
    AWARENESS = 2
    #: Flags (:class:`SyncFlag`) and the origin's state of the document.
    SYNC = 3
    #: The origin node is alive (no document).
    HEARTBEAT = 4
    #: The origin node is leaving (no document).
    BYE = 5
    #: A piece of a message larger than the broker takes (:data:`FRAGMENT_HEADER`, then
    #: the piece); the pieces, joined, are the message's envelope.
    FRAGMENT = 6


class SyncFlag(IntEnum):
    #: Answer with the awareness states of your connections too (the sender just opened
    #: the document, or reconnected, and has none of them).
    QUERY_AWARENESS = 1
    #: Sent because another node's state showed more: never answered by another sync.
    REPLY = 2


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: Kind
    origin: str
    document: str = ""
    payload: bytes = b""
    #: Only this node may act on it (empty: every node).
    target: str = ""


def encode_envelope(envelope: Envelope) -> bytes:
    """``version, kind, len(origin), len(target), len(document) (2 bytes), origin, target,
    document, payload``: the lengths first, so a decoder checks them before slicing."""
    origin = envelope.origin.encode()
    target = envelope.target.encode()
    document = envelope.document.encode()
    return (
        bytes([VERSION, envelope.kind, len(origin), len(target)])
        + len(document).to_bytes(2, "big")
        + origin
        + target
        + document
        + envelope.payload
    )


def decode_envelope(data: bytes) -> Envelope:
    """The envelope in ``data``.

    :raises BusMessageError: it is not one (another version, a bad kind, truncated).
    """
    if len(data) < 6:
        raise BusMessageError(f"a bus message of {len(data)} bytes is too short")
    if data[0] != VERSION:
        raise BusMessageError(f"a bus message of version {data[0]}; this node speaks {VERSION}")
    try:
        kind = Kind(data[1])
    except ValueError:
        raise BusMessageError(f"a bus message of unknown kind {data[1]}") from None
    origin_end = 6 + data[2]
    target_end = origin_end + data[3]
    document_end = target_end + int.from_bytes(data[4:6], "big")
    if document_end > len(data):
        raise BusMessageError("a truncated bus message")
    try:
        origin = data[6:origin_end].decode()
        target = data[origin_end:target_end].decode()
        document = data[target_end:document_end].decode()
    except UnicodeDecodeError:
        raise BusMessageError("a bus message with a name that is not UTF-8") from None
    if not origin:
        raise BusMessageError("a bus message without its origin")
    return Envelope(kind, origin, document, data[document_end:], target)


class Transport(Protocol):
    """One connection to a broker's publish/subscribe, as :class:`NetworkBus` drives it.

    Every method but :meth:`close` raises :class:`BusConnectionError` when the
    connection fails; the bus then closes it and connects again with a fresh one.
    """

    #: Largest message the broker accepts, in bytes (known once connected).
    max_payload: int

    async def connect(self) -> None:
        """Open the connection (``close`` is called after, even if this fails)."""
        ...

    async def close(self) -> None:
        """Close the connection; never raises."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns once the broker has the subscription."""
        ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    async def receive(self) -> tuple[str, bytes]:
        """The next message: its channel and its bytes."""
        ...


class NetworkBus(AsyncContextManagerMixin):
    """The :class:`~collab.bus.base.Bus` of nodes on several machines, over ``transport``.

    :param prefix: of every channel, so that clusters (and test runs) can share a broker.
    :param heartbeat: seconds between heartbeats; a node silent for
        :data:`MISSED_HEARTBEATS` of them is gone.
    :param sync_interval: seconds between two state exchanges of an open document.
    :param store: polled for versions every ``poll_interval`` seconds (None: never).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        prefix: str = "collab",
        heartbeat: float = 1.0,
        sync_interval: float = 10.0,
        store: UpdateLog | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        self.transport = transport
        #: For logs and metrics: "redis" or "nats".
        self.name = name
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.sync_interval = sync_interval
        self.store = store
        self.poll_interval = poll_interval
        #: The nodes of this process on this bus, by node id.
        self.nodes: dict[str, BusNode] = {}
        self._departed: set[str] = set()  # nodes that left, to say goodbye for at the end
        self._subscribers: defaultdict[str, list[BusNode]] = defaultdict(list)
        #: True while the connection is up and subscribed.
        self.connected = False
        self._connected_event = anyio.Event()
        self._send, self._queue = anyio.create_memory_object_stream[tuple[str, bytes]](
            MAX_QUEUE_MESSAGES
        )
        self._queued_bytes = 0
        # Other nodes, with when each was last heard from (time.monotonic()).
        self._seen: dict[str, float] = {}
        self._last_received = time.monotonic()
        # Documents due a sync soon, with the flags to send.
        self._due: dict[str, int] = {}
        self._due_event = anyio.Event()
        self._throttle = LogThrottle(log)
        self._tg: TaskGroup | None = None
        # Messages too large for the broker: the last id given, and those being reassembled.
        self._message_id = 0
        self._partials: dict[tuple[str, int], _Partial] = {}
        self._partial_bytes = 0
        # The current connection's reading and publishing, and why it was dropped.
        self._serving: anyio.CancelScope | None = None
        self._dropped = ""

    # -- lifecycle -----------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[NetworkBus]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._run_connection)
            tg.start_soon(self._heartbeat_periodically)
            tg.start_soon(self._sync_periodically)
            if self.store is not None:
                tg.start_soon(self._poll_periodically)
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await self._say_goodbye()
                tg.cancel_scope.cancel()
                self._tg = None
        self._send.close()
        self._queue.close()

    async def _say_goodbye(self) -> None:
        if not self.connected:
            return
        # Again, directly: what leave() queued may not have gone out yet.
        for node_id in {*self.nodes, *self._departed}:
            data = encode_envelope(Envelope(Kind.BYE, node_id))
            try:
                await self.transport.publish(self.nodes_channel, data)
            except BusConnectionError:
                return

    # -- channels ------------------------------------------------------------------

    @property
    def nodes_channel(self) -> str:
        return f"{self.prefix}.nodes"

    def channel(self, document: str) -> str:
        """The channel of ``document``: a digest, since names may hold any character and
        NATS subjects may not (a ``.`` or a space)."""
        digest = hashlib.sha256(document.encode()).hexdigest()[:32]
        return f"{self.prefix}.doc.{digest}"

    # -- the Bus protocol ----------------------------------------------------------

    def join(self, node: BusNode) -> None:
        self.nodes[node.node_id] = node

    def leave(self, node: BusNode) -> None:
        if self.nodes.pop(node.node_id, None) is not None:
            self._departed.add(node.node_id)
            self._publish(Envelope(Kind.BYE, node.node_id))
        for document in list(self._subscribers):
            self.unsubscribe(node, document)

    async def subscribe(self, node: BusNode, document: str) -> None:
        subscribers = self._subscribers[document]
        if node in subscribers:
            return
        subscribers.append(node)
        if len(subscribers) == 1 and self.connected:
            # Waits (a little) for the broker to have it, so that what is published
            # from now on reaches this node; if the bus is down, the sync after the
            # reconnect brings what is missed.
            try:
                with anyio.move_on_after(SUBSCRIBE_TIMEOUT):
                    await self.transport.subscribe(self.channel(document))
            except BusConnectionError as e:
                self._throttle.warning("subscribe", f"{self.name} bus: cannot subscribe: {e}")
        # After the load: what the others hold that the store does not yet (queued on
        # their side), and their connections' awareness.
        self._sync_soon(document, SyncFlag.QUERY_AWARENESS)

    def unsubscribe(self, node: BusNode, document: str) -> None:
        subscribers = self._subscribers.get(document)
        if subscribers is None:
            return
        if node in subscribers:
            subscribers.remove(node)
        if subscribers:
            return
        del self._subscribers[document]
        self._due.pop(document, None)
        if self.connected and self._tg is not None:
            self._tg.start_soon(self._unsubscribe, self.channel(document))

    async def _unsubscribe(self, channel: str) -> None:
        try:
            await self.transport.unsubscribe(channel)
        except BusConnectionError as e:
            log.debug("%s bus: cannot unsubscribe %s: %s", self.name, channel, e)

    def publish_update(self, node: BusNode, document: str, update: bytes) -> None:
        for other in self._subscribers.get(document, ()):
            if other is not node:
                other.on_bus_update(document, update)
        self._publish(Envelope(Kind.UPDATE, node.node_id, document, update))

    def publish_awareness(self, node: BusNode, document: str, payload: bytes) -> None:
        for other in self._subscribers.get(document, ()):
            if other is not node:
                other.on_bus_awareness(document, payload, node.node_id)
        self._publish(Envelope(Kind.AWARENESS, node.node_id, document, payload))

    async def poll(self) -> None:
        if self.store is None:
            return
        for node in list(self.nodes.values()):
            polled = node.open_documents()
            if not polled:
                continue
            versions = await self.store.versions(list(polled))
            await node.on_stored_versions(polled, versions)

    # -- publishing ----------------------------------------------------------------

    def _publish(self, envelope: Envelope) -> None:
        """Queue ``envelope``; if it cannot be, say so and sync its document instead."""
        channel = self.channel(envelope.document) if envelope.document else self.nodes_channel
        data = encode_envelope(envelope)
        frames = [data] if len(data) <= self.transport.max_payload else self._split(envelope, data)
        reason = None
        if not self.connected:
            reason = "disconnected"  # the sync after the reconnect heals it
        elif frames is None:
            reason = "too_large"
        elif (
            self._queued_bytes + len(data) > MAX_QUEUE_BYTES
            or self._send.statistics().current_buffer_used + len(frames) > MAX_QUEUE_MESSAGES
        ):
            reason = "queue_full"
        else:
            for frame in frames:
                self._send.send_nowait((channel, frame))
                self._queued_bytes += len(frame)
            return
        metrics.BUS_DROPPED.labels(bus=self.name, reason=reason).inc()
        if reason == "too_large":
            self._throttle.warning(
                "too_large",
                f"{self.name} bus: a {envelope.kind.name.lower()} of {len(data)} bytes for"
                f" {envelope.document!r} is larger than any bus message"
                f" ({MAX_MESSAGE_BYTES}); other nodes get it from the store when they next"
                " load the document",
            )
        elif reason == "queue_full":
            self._throttle.warning(
                "queue_full",
                f"{self.name} bus: the publish queue is full; dropped a message, the"
                " document will be synced instead",
            )
        if envelope.document and envelope.kind != Kind.SYNC and reason != "too_large":
            self._sync_soon(envelope.document, 0)

    def _split(self, envelope: Envelope, data: bytes) -> list[bytes] | None:
        """``data`` (the encoded ``envelope``) as fragments that each fit the broker's
        largest message, in order; None if it is larger than any message may be."""
        if len(data) > MAX_MESSAGE_BYTES:
            return None
        header = 6 + len(envelope.origin.encode()) + len(envelope.document.encode())
        size = self.transport.max_payload - header - FRAGMENT_HEADER.size
        if size < 1024:
            return None
        count = -(-len(data) // size)
        self._message_id += 1
        return [
            encode_envelope(
                Envelope(
                    Kind.FRAGMENT,
                    envelope.origin,
                    envelope.document,
                    FRAGMENT_HEADER.pack(self._message_id, i, count)
                    + data[i * size : (i + 1) * size],
                )
            )
            for i in range(count)
        ]

    def _reassemble(self, envelope: Envelope) -> bytes | None:
        """Keep a fragment; return the whole message once its last fragment is in.

        :raises BusMessageError: the fragment is malformed, or past the bounds.
        """
        payload = envelope.payload
        if len(payload) < FRAGMENT_HEADER.size:
            raise BusMessageError("a truncated fragment")
        message_id, index, count = FRAGMENT_HEADER.unpack_from(payload)
        chunk = payload[FRAGMENT_HEADER.size :]
        if not 2 <= count <= MAX_MESSAGE_BYTES // 1024 or index >= count:
            raise BusMessageError(f"fragment {index} of {count}")
        now = time.monotonic()
        key = (envelope.origin, message_id)
        partial = self._partials.get(key)
        if partial is None:
            for old, kept in list(self._partials.items()):
                if now - kept.started > PARTIAL_TIMEOUT:  # a fragment was lost: the
                    self._forget_partial(old)  # state exchange brings the rest
            partial = self._partials[key] = _Partial(count, now)
        if partial.count != count:
            self._forget_partial(key)
            raise BusMessageError("fragments that disagree on their count")
        if index in partial.chunks:
            return None
        if (
            partial.size + len(chunk) > MAX_MESSAGE_BYTES
            or self._partial_bytes + len(chunk) > MAX_PARTIAL_BYTES
        ):
            self._forget_partial(key)
            raise BusMessageError("fragments past the bytes kept for reassembly")
        partial.chunks[index] = chunk
        partial.size += len(chunk)
        self._partial_bytes += len(chunk)
        if len(partial.chunks) < count:
            return None
        self._forget_partial(key)
        return b"".join(partial.chunks[i] for i in range(count))

    def _forget_partial(self, key: tuple[str, int]) -> None:
        partial = self._partials.pop(key, None)
        if partial is not None:
            self._partial_bytes -= partial.size

    async def _publish_queued(self) -> None:
        async for channel, data in self._queue:
            self._queued_bytes -= len(data)
            await self.transport.publish(channel, data)
            metrics.BUS_MESSAGES.labels(bus=self.name, direction="out").inc()

    def _drain_queue(self) -> None:
        """Forget what was queued for a connection that is gone (the reconnect's sync
        supersedes it)."""
        while True:
            try:
                _, data = self._queue.receive_nowait()
            except anyio.WouldBlock:
                return
            self._queued_bytes -= len(data)
            metrics.BUS_DROPPED.labels(bus=self.name, reason="disconnected").inc()

    # -- the connection ------------------------------------------------------------

    async def _run_connection(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._connect_and_serve()
            except BusConnectionError as e:
                if self.connected:
                    log.error("%s bus: connection lost: %s; reconnecting", self.name, e)
                    backoff = BACKOFF_FIRST
                else:
                    self._throttle.warning(
                        "connect", f"{self.name} bus: cannot connect: {e}; retrying"
                    )
            finally:
                was_connected = self.connected
                self.connected = False
                metrics.BUS_CONNECTED.labels(bus=self.name).set(0)
                self._drain_queue()
                with anyio.CancelScope(shield=True):
                    await self.transport.close()
                if was_connected:
                    metrics.BUS_RECONNECTS.labels(bus=self.name).inc()
            await anyio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect_and_serve(self) -> None:
        await self.transport.connect()
        await self.transport.subscribe(self.nodes_channel)
        subscribed: set[str] = set()
        # Until none is missing: a node may open a document while this subscribes.
        while missing := set(self._subscribers) - subscribed:
            for document in missing:
                await self.transport.subscribe(self.channel(document))
                subscribed.add(document)
        self._last_received = time.monotonic()
        self.connected = True
        metrics.BUS_CONNECTED.labels(bus=self.name).set(1)
        log.info("%s bus: connected, %d documents subscribed", self.name, len(self._subscribers))
        # Whatever happened while this node was away: every document is synced, and its
        # connections' awareness announced.
        for document in self._subscribers:
            self._sync_soon(document, SyncFlag.QUERY_AWARENESS)
        for node in self.nodes.values():
            for document in node.open_documents():
                self._announce_awareness(node, document)
        self._heartbeat_now()
        failures: list[BusConnectionError] = []

        async def until_it_fails(serve: Callable[[], Awaitable[None]]) -> None:
            try:
                await serve()
            except BusConnectionError as e:
                failures.append(e)
                tg.cancel_scope.cancel()

        self._dropped = ""
        async with anyio.create_task_group() as tg:
            self._serving = tg.cancel_scope
            tg.start_soon(until_it_fails, self._publish_queued)
            tg.start_soon(until_it_fails, self._read)
        self._serving = None
        raise failures[0] if failures else BusConnectionError(self._dropped or "it ended")

    def drop_connection(self, reason: str) -> None:
        """Give up the current connection as if it had failed (then connect again).

        The reader is cancelled, not raced: closing a redis-py connection under a
        blocked read makes it reconnect behind the caller's back."""
        if self._serving is not None:
            self._dropped = reason
            self._serving.cancel()

    async def _read(self) -> None:
        while True:
            channel, data = await self.transport.receive()
            self._last_received = time.monotonic()
            metrics.BUS_MESSAGES.labels(bus=self.name, direction="in").inc()
            self._receive(channel, data)

    def _announce_awareness(self, node: BusNode, document: str, target: str = "") -> None:
        payload = node.own_awareness(document)
        if payload is not None:
            self._publish(Envelope(Kind.AWARENESS, node.node_id, document, payload, target))

    # -- receiving -----------------------------------------------------------------

    def _receive(self, channel: str, data: bytes, *, whole: bool = False) -> None:
        try:
            if len(data) > (MAX_MESSAGE_BYTES if whole else self.transport.max_payload):
                raise BusMessageError(f"a bus message of {len(data)} bytes")
            envelope = decode_envelope(data)
            expected = self.channel(envelope.document) if envelope.document else self.nodes_channel
            if channel != expected:
                raise BusMessageError(f"a message for {envelope.document!r} on {channel}")
            if envelope.origin in self.nodes:
                return  # our own, echoed by the broker
            if envelope.kind == Kind.FRAGMENT:
                if whole:
                    raise BusMessageError("a fragment inside a fragmented message")
                reassembled = self._reassemble(envelope)
                if reassembled is not None:
                    self._receive(channel, reassembled, whole=True)
                return
        except BusMessageError as e:
            metrics.BUS_DROPPED.labels(bus=self.name, reason="malformed").inc()
            self._throttle.warning("malformed", f"{self.name} bus: dropped {e}")
            return
        origin = envelope.origin
        if origin in self._seen or len(self._seen) < MAX_NODES:
            self._seen[origin] = time.monotonic()
        if envelope.target and envelope.target not in self.nodes:
            return
        try:
            self._dispatch(envelope)
        except CollabError as e:
            log.error(
                "%s bus: cannot handle a %s for %r from node %s: %s",
                self.name,
                envelope.kind.name.lower(),
                envelope.document,
                origin,
                e,
            )

    def _dispatch(self, envelope: Envelope) -> None:
        kind, document, payload = envelope.kind, envelope.document, envelope.payload
        if kind == Kind.BYE:
            self._gone(envelope.origin)
            return
        if kind == Kind.HEARTBEAT:
            return
        targets = [
            node
            for node in self._subscribers.get(document, ())
            if not envelope.target or node.node_id == envelope.target
        ]
        for node in targets:
            if kind == Kind.UPDATE:
                node.on_bus_update(document, payload)
            elif kind == Kind.AWARENESS:
                node.on_bus_awareness(document, payload, envelope.origin)
            elif kind == Kind.SYNC:
                self._answer_sync(node, envelope)

    def _answer_sync(self, node: BusNode, envelope: Envelope) -> None:
        if not envelope.payload:
            raise BusMessageError("a sync without flags")
        flags, state = envelope.payload[0], envelope.payload[1:]
        document = envelope.document
        update, behind = node.on_bus_state(document, state)
        if update is not None:
            self._publish(Envelope(Kind.UPDATE, node.node_id, document, update, envelope.origin))
        if flags & SyncFlag.QUERY_AWARENESS:
            self._announce_awareness(node, document, envelope.origin)
        if behind and not flags & SyncFlag.REPLY:
            self._sync_soon(document, SyncFlag.REPLY)

    # -- heartbeats ----------------------------------------------------------------

    def _heartbeat_now(self) -> None:
        for node_id in self.nodes:
            self._publish(Envelope(Kind.HEARTBEAT, node_id))

    async def _heartbeat_periodically(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat)
            self.check_heartbeats(time.monotonic())
            if self.connected:
                self._heartbeat_now()

    def check_heartbeats(self, now: float) -> None:
        """Count as gone every node not heard from in :data:`MISSED_HEARTBEATS` intervals;
        and, if nothing at all came (not even this node's own heartbeat, which the broker
        echoes), take the connection for dead."""
        limit = self.heartbeat * MISSED_HEARTBEATS
        for origin, seen in list(self._seen.items()):
            if now - seen > limit:
                self._gone(origin)
        if self.connected and self.nodes and now - self._last_received > limit:
            log.error(
                "%s bus: nothing received for %.1f s, not even this node's heartbeat; reconnecting",
                self.name,
                now - self._last_received,
            )
            self._last_received = now
            self.drop_connection("nothing received")

    def _gone(self, origin: str) -> None:
        if self._seen.pop(origin, None) is None:
            return
        log.info("%s bus: node %s is gone; removing its connections' awareness", self.name, origin)
        for node in list(self.nodes.values()):
            node.on_node_gone(origin)

    # -- the state exchange ---------------------------------------------------------

    def _sync_soon(self, document: str, flags: int) -> None:
        self._due[document] = self._due.get(document, 0) | flags
        self._due_event.set()

    async def _sync_periodically(self) -> None:
        next_round = time.monotonic() + self.sync_interval
        while True:
            with anyio.move_on_after(max(next_round - time.monotonic(), 0)):
                await self._due_event.wait()
            self._due_event = anyio.Event()
            if time.monotonic() >= next_round:
                next_round = time.monotonic() + self.sync_interval
                for document in self._subscribers:
                    self._due.setdefault(document, 0)
            if not self.connected:
                continue  # kept due: the reconnect syncs everything anyway
            due = list(self._due.items())[:SYNC_BATCH]
            loading = {}
            for document, flags in due:
                del self._due[document]
                if not self.sync(document, flags):
                    loading[document] = flags
            if loading:
                await anyio.sleep(LOADING_RETRY)
                for document, flags in loading.items():
                    self._sync_soon(document, flags)
            elif self._due:
                self._due_event.set()
            await anyio.sleep(0)

    def sync(self, document: str, flags: int = 0) -> bool:
        """Publish each local node's state of ``document``, for the others to answer;
        False if a node is still loading it (then it is synced once loaded)."""
        loaded = True
        for node in list(self._subscribers.get(document, ())):
            try:
                state = node.state_of(document)
            except CollabError as e:
                log.error("cannot sync %r: %s", document, e)
                continue
            if state is None:
                loaded = False
            else:
                payload = bytes([flags]) + state
                self._publish(Envelope(Kind.SYNC, node.node_id, document, payload))
        return loaded

    # -- the store -----------------------------------------------------------------

    async def _poll_periodically(self) -> None:
        while True:
            await anyio.sleep(self.poll_interval)
            try:
                await self.poll()
            except StoreError as e:
                log.error("cannot poll document versions: %s", e)

    def open_documents(self) -> Mapping[str, list[BusNode]]:
        """The documents some local node is subscribed to (for tests and stats)."""
        return dict(self._subscribers)
