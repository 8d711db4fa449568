"""Rooms: one shared pycrdt ``Doc`` per open document, its awareness, and its peers.

Theory of operation
-------------------
A :class:`Room` is pure state: no tasks, no I/O. A peer joins (it is sent the room's
sync step 1 and the current awareness states), then every message it sends goes through
:meth:`Room.receive`, which changes the room and returns the replies meant for that peer
alone; anything meant for the other peers is handed to their ``send_nowait`` right away,
encoded once for all of them.

An update is applied to the shared doc first, and what is stored and relayed is what the
doc integrated: the doc's own encoding of that transaction (pycrdt's transaction event),
never the client's bytes as they came. A client that re-sends structs the doc already has
with other content (to forge what later readers see) changes nothing, since the doc skips
them; content that waits for a missing dependency is held by the doc as pending and is
stored and relayed once the dependency integrates it, as part of that transaction. An
update pycrdt cannot apply never reaches the disk or another peer; one that fails midway
through integrating (yrs may keep part of it) gets its sender 1007 and has the room
reloaded from the store, so the document is exactly as before. Fan-out never waits on
the store.

Updates are coalesced: those a room accepts within one event-loop turn are merged
(pycrdt ``merge_updates``, in chunks) into one update, appended to the store as one row and sent to
each peer as one frame, encoded once for all the peers that sent none of them. A peer that
sent some of them gets the merge of the others' (or nothing): clients never get their own
edits back. Under load this turns N frames per peer into one; when idle, a batch holds one
update and nothing changes. Deliveries still count per edit: every edit reaches every
other peer. The manager's flusher task runs the flush; a room with no manager flushes at
the end of each ``receive``.

Connections carry an :class:`~collab.hooks.Identity` (from the authentication hook): a
room refuses the updates of a read-only one, telling it once with y-protocols'
"permission denied", and still sends it the document and awareness. What a room accepts
it reports to the extensions (``on_change``, and ``on_store`` once durable) and publishes
on the bus; what arrives from the bus is applied and relayed, never stored again.

The :class:`RoomManager` owns the rooms: it loads each document exactly once however many
peers arrive together (single-flight), never hands out a room before its load finished
(serving an empty doc while it loads is the data-loss bug of y-websocket#81 and
hocuspocus#821), expires stale awareness states, and unloads rooms that stayed empty for
``idle_unload`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio import AsyncContextManagerMixin
from pycrdt import Awareness, Doc, Subscription, TransactionEvent, write_var_uint

from collab import logs, metrics
from collab.auth import Access
from collab.bus import Bus, LocalBus
from collab.config import Settings
from collab.errors import (
    CloseCode,
    CollabError,
    InvalidUpdateError,
    RemoteProtocolError,
    StoreError,
)
from collab.hooks import (
    ChangePayload,
    ExtensionError,
    Hooks,
    Identity,
    LoadPayload,
    Origin,
    StorePayload,
)
from collab.protocol import (
    Ack,
    AwarenessUpdate,
    Message,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    Unknown,
    encode,
)
from collab.protocol.codec import decode_state_vector, read_awareness_update
from collab.storage.base import DocVersion, StoredDoc, StoredUpdates, UpdateLog
from collab.structs import MAX_DEPTH, NestingTracker, StructError, read_update
from collab.updates import (
    EMPTY_UPDATE,
    apply_update,
    doc_from,
    merge,
    replay,
    state_vector_overlaps,
    update_overlaps,
)

log = logging.getLogger("collab.rooms")


class Peer(Protocol):
    """One websocket connection, as a room sees it."""

    #: The peer asked for durability acknowledgements (``?ack=1``).
    wants_ack: bool
    #: Who it is and what it may do (READ: its updates are refused).
    identity: Identity
    #: For logs and hook origins: the client address and port.
    label: str
    #: The client's address (no port): a tab back on a new connection from the same one
    #: may take its awareness client id over from its old connection.
    address: str

    def send_nowait(self, frame: bytes) -> None:
        """Queue a frame; a peer whose queue is full closes itself (code 4500)."""
        ...

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        """Close the connection with ``code`` at the next checkpoint."""
        ...


#: Most structs a document may hold waiting for missing dependencies. Honest clients
#: send them rarely and few (an update that overtook another); each costs memory in yrs
#: and in the nesting tracker until its dependency arrives, which may be never.
MAX_PENDING_STRUCTS = 10_000
#: Most entries one awareness message may carry: a client sends its own (one); a relay
#: between providers may carry a few.
MAX_AWARENESS_ENTRIES = 64
#: Most awareness client ids one connection may own: one per Y.Doc it syncs (a tab).
MAX_CLIENT_IDS_PER_CONNECTION = 16


class QuotaError(RemoteProtocolError):
    """The document is at its size quota (close code 1008)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CloseCode.POLICY_VIOLATION)


class TooManyDocumentsError(CollabError):
    """Every document slot is taken by a document with connections (close code 1013)."""


class AwarenessLimitError(RemoteProtocolError):
    """An awareness message breaks a limit (close code 1008)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CloseCode.POLICY_VIOLATION)
        metrics.LIMIT_HITS.labels(limit="awareness").inc()


READ_ONLY_REASON = "this connection may read the document but not edit it"
TOO_DEEP_REASON = "this document nests shared types past the server's limit: it is read-only"
#: The origin of what arrives from other nodes over the bus.
BUS_ORIGIN = Origin("bus")
STORE_ORIGIN = Origin("store")

STALE_REASON = "this document was deleted or replaced since you loaded it; reload the page"


class StaleClientError(RemoteProtocolError):
    """The client holds history from a retired epoch of the document (close code 4409)."""

    def __init__(self) -> None:
        super().__init__(STALE_REASON, CloseCode.STALE_EPOCH)


def _awareness_payload(entries: Iterable[tuple[int, bytes]]) -> bytes:
    """An awareness update made of encoded entries (client id, clock, state)."""
    parts = [entry for _, entry in entries]
    return write_var_uint(len(parts)) + b"".join(parts)


def encode_awareness(awareness: Awareness, client_ids: Iterable[int]) -> bytes:
    """Encode the states of ``client_ids`` as an awareness update.

    pycrdt's ``encode_awareness_update`` length-prefixes the JSON with its length in
    characters where y-protocols expects UTF-8 bytes; it is safe only because
    ``json.dumps`` escapes every non-ASCII character by default, which keeps the two
    lengths equal. tests/protocol/test_awareness.py pins that.
    """
    return awareness.encode_awareness_update(list(client_ids))


class Room:
    """One open document: its doc, awareness and peers."""

    def __init__(
        self,
        name: str,
        doc: Doc[Any],
        store: UpdateLog,
        *,
        epoch: int = 0,
        generation: int = 0,
        retired_state_vectors: Iterable[bytes] = (),
        schedule_flush: Callable[[Room], None] | None = None,
        awaiting_ack: set[Room] | None = None,
        hooks: Hooks | None = None,
        publish: Callable[[str, bytes], None] | None = None,
        publish_awareness: Callable[[str, bytes], None] | None = None,
        max_depth: int = MAX_DEPTH,
        max_awareness_state: int = 16 * 1024,
        max_awareness_bytes: int = 4 * 1024 * 1024,
        max_document_bytes: int = 64 * 1024 * 1024,
        loaded_bytes: int = 0,
    ) -> None:
        self.name = name
        self.doc = doc
        self.epoch = epoch
        self.generation = generation
        #: The state vector each retired epoch of the document reached.
        self.retired = list(retired_state_vectors)
        self.store = store
        # What the last transaction integrated, set by the doc's observer (None: nothing new).
        self._integrated: bytes | None = None
        # While catching up: every transaction's update, in order.
        self._collecting: list[bytes] | None = None
        # How deep each struct sits, to refuse updates nesting types past max_depth before
        # yrs sees them (collab.structs). Seeded from the doc at the first update, so a
        # room that is only read never decodes its document.
        self.max_depth = max_depth
        # An upper bound of the document's encoded size: what it was loaded from plus
        # every update since (deletions are not subtracted). Measured for real only when
        # it passes the quota, so the check costs an addition per update.
        self.max_document_bytes = max_document_bytes
        self._size_bound = loaded_bytes
        self._nesting: NestingTracker | None = None
        self._doc_subscription: Subscription | None = doc.observe(self._on_doc_change)
        self.awareness = Awareness(doc)
        self.awareness.set_local_state(None)  # the server itself has no presence
        self.awareness.observe(self._on_awareness_change)
        # The awareness update being applied: each entry as relayed, used as it came when
        # all of it took effect.
        self._awareness_in: list[tuple[int, bytes]] | None = None  # (client id, entry)
        self._awareness_entry_sizes: dict[int, int] | None = None  # its states' sizes
        # (its sender, each entry as sent), echoed to the sender with its own clocks
        self._awareness_echo: tuple[Peer, dict[int, bytes]] | None = None
        # Awareness entries changed since the last flush, latest per client id, relayed as
        # one frame per peer per loop turn (a cursor storm would otherwise cost every peer
        # one frame per move of every other cursor); and the senders' own echoes.
        self._awareness_out: dict[int, bytes] = {}
        self._awareness_echoes: dict[Peer, dict[int, bytes]] = {}
        # How far each client's clocks are shifted as relayed (see _apply_awareness).
        self._clock_offsets: dict[int, int] = {}
        self._clock_base = int(time.time() * 1000)
        # Which connection owns each awareness client id (the first that used it).
        self._owners: dict[int, Peer] = {}
        # Which other node's connection owns each client id whose state came by the bus.
        self._remote_owners: dict[int, str] = {}
        self._bus_origin = ""  # the node whose awareness update is being applied
        # The bytes of each client's state, and their sum, capped per room.
        self._awareness_sizes: dict[int, int] = {}
        self._awareness_total = 0
        self.max_awareness_state = max_awareness_state
        self.max_awareness_bytes = max_awareness_bytes
        # Every awareness state as one frame, for joining peers; None once it changed.
        self._awareness_snapshot: bytes | None = None
        #: Each peer, with the awareness client ids it controls.
        self.peers: dict[Peer, set[int]] = {}
        #: When the room last became empty (monotonic seconds), or None while it has peers.
        self.empty_since: float | None = time.monotonic()
        # Durability acknowledgements, kept only while some peer asked for them.
        self._last_ticket = 0
        self._ack_peers: dict[Peer, _AckCounts] = {}
        self._unacked: deque[tuple[int, bytes]] = deque()  # (ticket, state vector then)
        # The rooms with unacknowledged tickets, shared with the manager so that a commit
        # visits only them, not every loaded room.
        self._awaiting_ack = awaiting_ack if awaiting_ack is not None else set()
        #: Called when an update failed midway through integrating: the doc may hold part
        #: of it, so the manager takes the room out of service and reloads it.
        self.on_damaged: Callable[[Room, Peer], None] | None = None
        # Updates accepted since the last flush, with the peer each came from (None: send
        # it to every peer, its sender included, because it holds more than the sender's).
        self._batch: list[tuple[Peer | None, bytes]] = []
        self._batch_since = 0.0  # time.monotonic() the batch's first update was applied
        self._schedule_flush = schedule_flush
        self.hooks = hooks if hooks is not None else Hooks()
        self._publish = publish
        self._publish_awareness = publish_awareness
        # Read-only peers already told that their updates are refused.
        self._told_read_only: set[Peer] = set()

    # -- peers -----------------------------------------------------------------

    def join(self, peer: Peer) -> list[bytes]:
        """Add a peer; return the frames it must be sent first."""
        self.flush()  # so that its sync step 1 and durable state cover everything accepted
        self.peers[peer] = set()
        self.empty_since = None
        frames = [encode(SyncStep1(self.doc.get_state()))]
        if self.awareness.states:
            frames.append(self._reannounce(peer))
        if peer.wants_ack:
            self._ack_peers[peer] = _AckCounts()
            if self.store.durable_ticket >= self._last_ticket:
                frames.append(encode(Ack(self.doc.get_state(), 0)))
            else:
                self._await_ack()
        return frames

    def leave(self, peer: Peer) -> None:
        """Remove a peer and, at once, the awareness states it controlled."""
        client_ids = self.peers.pop(peer, set())
        for client_id in client_ids:
            self._clock_offsets.pop(client_id, None)
        self._ack_peers.pop(peer, None)
        self._told_read_only.discard(peer)
        if not self._ack_peers:
            self._unacked.clear()
            self._awaiting_ack.discard(self)
        if client_ids:
            self.awareness.remove_awareness_states(list(client_ids), origin=None)
        if not self.peers:
            self.empty_since = time.monotonic()

    # -- messages --------------------------------------------------------------

    def receive(self, peer: Peer, message: Message) -> list[bytes]:
        """Handle one message from ``peer``; return the frames to send back to it.

        :raises RemoteProtocolError: the message is invalid; the peer must be closed and
            the room is unchanged.
        """
        match message:
            case SyncUpdate(update) | SyncStep2(update):
                if peer.identity.access < Access.WRITE:
                    return self._refuse_read_only(peer, update, READ_ONLY_REASON)
                if self._nesting_tracker().deepest > self.max_depth:
                    return self._refuse_read_only(peer, update, TOO_DEEP_REASON)
                if self.retired:
                    self._check_update_epoch(update)
                counts = self._ack_peers.get(peer)
                if counts is not None:
                    counts.received += 1
                self._apply(peer, update)
                if self._schedule_flush is None:
                    self.flush()
                if counts is not None and counts.noted < counts.received and not self._batch:
                    return self._ack_unchanged(counts)
                return []
            case SyncStep1(state_vector):
                if self.retired:
                    self._check_state_epoch(state_vector)
                try:
                    # Pending content is left out: it is not part of the document until
                    # its dependency integrates it, and then it reaches every peer.
                    missing = self.doc.get_update(state_vector)
                except ValueError as e:
                    raise RemoteProtocolError(f"invalid state vector: {e}") from None
                return [encode(SyncStep2(missing))]
            case AwarenessUpdate(payload):
                self._apply_awareness(peer, payload)
                return []
            case QueryAwareness():
                return [self._awareness_frame()] if self.awareness.states else []
            case Ack() | PermissionDenied() | Unknown():
                return []  # y-protocols: ignore message types you do not handle
        raise AssertionError(f"unhandled message {message!r}")

    def _refuse_read_only(self, peer: Peer, update: bytes, reason: str) -> list[bytes]:
        # Not applied, stored or relayed. A viewer's own sync step 2 is usually empty,
        # and says nothing worth a warning.
        if update == EMPTY_UPDATE or peer in self._told_read_only:
            return []
        self._told_read_only.add(peer)
        metrics.REFUSED.labels(reason="read_only").inc()
        return [encode(PermissionDenied(reason))]

    # -- epochs ----------------------------------------------------------------
    #
    # A deleted or replaced document starts a new epoch, and the store keeps the state
    # vector each retired epoch reached. Yjs client ids are random per Doc instance, so a
    # client that reloaded after the delete writes under new ids, while one still holding
    # the old history knows clocks of retired ids the current doc does not have. Such a
    # client would bring the deleted text back (jupyter-collaboration#594, hocuspocus#344):
    # it is closed with 4409 before anything of it is applied or stored.

    def _check_state_epoch(self, state_vector: bytes) -> None:
        try:
            stale = any(state_vector_overlaps(state_vector, old) for old in self.retired)
        except (IndexError, RuntimeError, RemoteProtocolError):
            raise RemoteProtocolError("invalid state vector") from None
        if stale:
            raise StaleClientError()

    def _check_update_epoch(self, update: bytes) -> None:
        # Catches a stale client's sync step 2 (its old history) and any update that
        # carries retired structs. A stale tab's new keystrokes alone carry none; the stock
        # client sends its sync step 1 first on every connection, and that is checked.
        try:
            stale = any(update_overlaps(update, old) for old in self.retired)
        except ValueError as e:
            raise InvalidUpdateError(f"invalid update: {e}") from None
        if stale:
            raise StaleClientError()

    def close_all(self, code: CloseCode, reason: str, *, but: Peer | None = None) -> None:
        for peer in list(self.peers):
            if peer is not but:
                peer.close_nowait(code, reason)

    def catch_up(self, stored: StoredDoc) -> None:
        """Another process appended to the stored document: pass on what is new.

        The stored log is replayed onto the live doc, which skips what it has and keeps
        what waits for a dependency as pending, as it would from a client.

        :raises StoreError: a stored update cannot be applied.
        """
        integrated = self._collecting = []
        self._nesting = None  # seeded again from the doc at the next update
        try:
            replay(self.doc, stored.updates)
        except InvalidUpdateError as e:
            raise StoreError(f"document {self.name!r} has a stored update: {e}") from e
        finally:
            self._collecting = None
        self.generation = stored.generation
        if integrated:
            update = integrated[0] if len(integrated) == 1 else merge(integrated)
            self.broadcast(encode(SyncUpdate(update)))  # already stored: not appended again
            self._report_change(update, STORE_ORIGIN)

    def receive_from_bus(self, update: bytes) -> None:
        """Another node accepted ``update``: apply it and pass it on; it is stored there.

        :raises InvalidUpdateError: it cannot be applied.
        """
        if self.retired:
            try:
                self._check_update_epoch(update)
            except StaleClientError:
                # A node that has not yet noticed the delete relayed a stale client: the
                # store refuses its append, and this room must not pass it on either.
                log.info("dropped an update for %r from the bus: a retired epoch", self.name)
                return
        self._integrated = None
        apply_update(self.doc, update)
        self._track(update)
        integrated, self._integrated = self._integrated, None
        if integrated is not None:
            self.broadcast(encode(SyncUpdate(integrated)))
            self._report_change(integrated, BUS_ORIGIN)

    def receive_awareness_from_bus(self, payload: bytes, origin: str = "") -> None:
        """Node ``origin``'s connections changed awareness states: apply and pass them on.

        The room's cap on awareness bytes counts every node's states: past it, what the
        bus brings is dropped (states expire by the timeout) rather than grow the room.
        """
        if self._awareness_total > self.max_awareness_bytes:
            metrics.LIMIT_HITS.labels(limit="awareness").inc()
            log.warning("dropped awareness for %r from the bus: the room is at its cap", self.name)
            return
        self._bus_origin = origin
        try:
            self.awareness.apply_awareness_update(payload, origin=BUS_ORIGIN)
        except (IndexError, RuntimeError, ValueError, TypeError) as e:
            log.warning("malformed awareness update for %r from the bus: %s", self.name, e)
        finally:
            self._bus_origin = ""

    def remove_node(self, origin: str) -> None:
        """Node ``origin`` is gone: remove the awareness states of its connections."""
        client_ids = [c for c, node in self._remote_owners.items() if node == origin]
        if client_ids:
            self.awareness.remove_awareness_states(client_ids, origin=BUS_ORIGIN)

    def own_awareness(self) -> bytes | None:
        """The awareness states of this room's own connections, each clock moved two on so
        that they are news even to a node that removed them (a removal moves it one on).

        As in :meth:`_reannounce`, the owners are not sent these clocks, and their next
        entries are relayed past them.
        """
        states = self.awareness.states
        own = [c for client_ids in self.peers.values() for c in client_ids if c in states]
        if not own:
            return None
        meta = self.awareness.meta
        for client in own:
            entry = meta.get(client)
            if entry is not None:
                entry["clock"] += 2
                if client in self._clock_offsets:
                    self._clock_offsets[client] += 2
        self._awareness_snapshot = None
        return encode_awareness(self.awareness, own)

    def _report_change(self, update: bytes, origin: Origin) -> None:
        if self.hooks.on_change:
            self.hooks.changed(ChangePayload(self.name, update, origin))

    def _on_doc_change(self, event: TransactionEvent) -> None:
        if self._collecting is None:
            self._integrated = event.update
        else:
            self._collecting.append(event.update)

    def close(self) -> None:
        """Stop observing the doc. The subscription lives in yrs, where Python's garbage
        collector cannot see the cycle it closes (doc -> callback -> room -> doc): a room
        dropped without this would never be freed. Call when the room leaves service."""
        if self._doc_subscription is not None:
            self.doc.unobserve(self._doc_subscription)
            self._doc_subscription = None

    def _nesting_tracker(self) -> NestingTracker:
        tracker = self._nesting
        if tracker is None:
            try:
                tracker = NestingTracker.from_update(
                    self.doc.get_update(), self.max_depth, refuse_gaps=True
                )
            except StructError as e:
                # The doc's own encoding of itself: only a pycrdt bug could cause this.
                raise StoreError(f"document {self.name!r} cannot be decoded: {e}") from e
            self._nesting = tracker
            if tracker.deepest > self.max_depth:
                log.error(
                    "document %r nests shared types %d deep, past --max-depth %d: it is"
                    " read-only (run `collab check`)",
                    self.name,
                    tracker.deepest,
                    self.max_depth,
                )
        return tracker

    def _track(self, update: bytes) -> None:
        """Tell the nesting tracker about an update applied without a check (from the bus
        or the store: already checked where it was accepted)."""
        if self._nesting is None:
            return
        try:
            self._nesting.commit(self._nesting.check(update))
        except InvalidUpdateError:
            self._nesting = None  # seeded again from the doc at the next update

    def _apply(self, sender: Peer, update: bytes) -> None:
        if update == EMPTY_UPDATE:
            return
        if self._size_bound + len(update) > self.max_document_bytes:
            self._size_bound = len(self.doc.get_update())  # measured: it may have shrunk
            if self._size_bound + len(update) > self.max_document_bytes:
                metrics.LIMIT_HITS.labels(limit="document_size").inc()
                raise QuotaError(
                    f"the document would pass its size quota of {self.max_document_bytes} bytes"
                )
        tracker = self._nesting_tracker()
        nesting = tracker.check(update)  # StructError, TooDeepError: 1007, nothing applied
        if nesting.pending > MAX_PENDING_STRUCTS:
            raise InvalidUpdateError(
                f"{nesting.pending} structs would wait for missing dependencies;"
                f" the limit is {MAX_PENDING_STRUCTS}"
            )
        self._integrated = None
        try:
            apply_update(self.doc, update)
        except InvalidUpdateError as e:
            if e.midway or self._integrated is not None:
                # The doc may hold part of it: whatever it integrated is not kept, and
                # the room is reloaded from the store (the manager's on_damaged).
                self._integrated = None
                log.warning("update from %s failed midway in %r: %s", sender.label, self.name, e)
                if self.on_damaged is not None:
                    self.on_damaged(self, sender)
            raise  # a failed decode changed nothing: the tracker is not told either
        tracker.commit(nesting)
        integrated, self._integrated = self._integrated, None
        if integrated is not None:
            try:
                # What yrs reports it integrated must itself replay: some inputs that
                # pass every check make it encode structs it cannot read back (an empty
                # string item), which, stored, would make the document unloadable. When
                # it is the update itself, byte for byte (a Yjs client's), it was read.
                if integrated != update:
                    read_update(integrated)
            except StructError as e:
                log.warning(
                    "update from %s integrated unreadably in %r: %s", sender.label, self.name, e
                )
                if self.on_damaged is not None:
                    self.on_damaged(self, sender)
                raise InvalidUpdateError(f"invalid update: {e}", midway=True) from None
            self._size_bound += len(integrated)
        if integrated is None:
            # Nothing new (typically a reconnecting client's sync step 2, which carries its
            # whole delete set), or all of it waits for a dependency: the doc holds that
            # as pending, and it is passed on once integrated.
            return
        metrics.UPDATES.inc()
        # The doc's encoding of a Yjs client's update is byte for byte the update. When it
        # is not, the transaction integrated more than the sender sent (pending content of
        # others it completed, which the sender lacks): it goes to the sender too.
        origin = sender if integrated == update else None
        if self.hooks.on_change:
            try:
                self.hooks.changed(
                    ChangePayload(
                        self.name, integrated, Origin("connection", sender.identity, sender.label)
                    )
                )
            except Exception as e:
                # The update is in the doc already, so it is batched all the same: the
                # other peers must not miss what the doc holds.
                log.exception("on_change hook failed for %r", self.name)
                self._batch_update(origin, integrated)
                raise ExtensionError(f"an extension failed on this update: {e}") from e
        self._batch_update(origin, integrated)

    def _batch_update(self, sender: Peer | None, update: bytes) -> None:
        if not self._batch:
            self._batch_since = time.monotonic()
            if self._schedule_flush is not None and not self._awareness_out:
                self._schedule_flush(self)
        self._batch.append((sender, update))

    def flush(self) -> None:
        """Store and fan out the updates accepted since the last flush, merged; then relay
        the awareness entries changed since, latest per client (after the updates, so that
        a cursor never arrives before the text it points into)."""
        batch = self._batch
        if batch:
            self._batch = []
            try:
                self._flush(batch)
            finally:
                metrics.FANOUT_SECONDS.observe(time.monotonic() - self._batch_since)
        if self._awareness_out:
            self._flush_awareness()

    def _flush(self, batch: list[tuple[Peer | None, bytes]]) -> None:
        if len(batch) == 1:
            sender, update = batch[0]
            self._store_update(update)
            self.broadcast(encode(SyncUpdate(update)), exclude=sender)
            return
        merged = merge([update for _, update in batch])
        self._store_update(merged)
        frame = encode(SyncUpdate(merged))
        senders = {sender for sender, _ in batch}
        for peer in list(self.peers):
            if peer not in senders:
                peer.send_nowait(frame)
                continue
            rest = [update for origin, update in batch if origin is not peer]
            if len(rest) == 1:
                peer.send_nowait(encode(SyncUpdate(rest[0])))
            elif rest:
                # Another merge per sender would cost more than the bytes it saves: send
                # the whole batch, its own updates too, as y-websocket's server always does
                # (a Yjs doc skips what it already has, and emits no update for it).
                peer.send_nowait(frame)

    def _store_update(self, update: bytes) -> None:
        self._last_ticket = self.store.append_nowait(self.name, update, epoch=self.epoch)
        metrics.note_stored(self._last_ticket, self._batch_since)
        if self._ack_peers:
            self._await_ack()
        if self._publish is not None:
            self._publish(self.name, update)

    def broadcast(self, frame: bytes, exclude: Peer | None = None) -> None:
        for peer in list(self.peers):
            if peer is not exclude:
                peer.send_nowait(frame)

    # -- awareness -------------------------------------------------------------

    def _apply_awareness(self, peer: Peer, payload: bytes) -> None:
        # Checked whole first: pycrdt applies entry by entry, and would keep the entries
        # before a bad one. Bytes after the last entry are not passed on.
        entries, used = read_awareness_update(payload)
        if len(entries) > MAX_AWARENESS_ENTRIES:
            raise AwarenessLimitError(
                f"{len(entries)} awareness entries in one message; the limit is"
                f" {MAX_AWARENESS_ENTRIES}"
            )
        own = self.peers.get(peer, set())
        kept = []
        sizes = self._awareness_sizes
        total = self._awareness_total
        rewritten = False
        meta = self.awareness.meta
        for client, clock, start, after_clock, end, size in entries:
            owner = self._owners.get(client)
            if (owner is not None and owner is not peer) or client in self._remote_owners:
                # A client id belongs to the connection that first used it: another one
                # may neither overwrite nor remove its state. (The stock client sends
                # back every state it hears, so this is also how echoes are dropped.)
                metrics.REFUSED.labels(reason="awareness").inc()
                continue
            if size > self.max_awareness_state:
                raise AwarenessLimitError(
                    f"an awareness state of {size} bytes; the limit is {self.max_awareness_state}"
                )
            if client not in own and len(own) >= MAX_CLIENT_IDS_PER_CONNECTION:
                raise AwarenessLimitError(
                    f"more than {MAX_CLIENT_IDS_PER_CONNECTION} awareness client ids"
                    " on one connection"
                )
            total += size - sizes.get(client, 0)
            # Clocks as relayed: the client's own, shifted by an offset fixed at its
            # first entry on this connection. A client back after a blip or a server
            # restart announces itself with the clock it had, which peers that saw its
            # state, or its removal, would ignore until its next renewal 15 s later: the
            # shift makes it news at once, and keeps each later entry news. The shift is
            # at least the room's clock base (milliseconds since 1970 when it loaded),
            # past any shift an earlier room or server process applied. The sender is
            # echoed its own clocks (a shifted echo would make the stock client take it
            # for news and send it again, for ever).
            offset = self._clock_offsets.get(client)
            if offset is None or client not in own:
                known = meta.get(client)
                offset = self._clock_base
                if known is not None:
                    offset = max(offset, known["clock"] + 1 - clock)
                self._clock_offsets[client] = offset
            relayed = clock + offset
            if relayed != clock:
                entry = write_var_uint(client) + write_var_uint(relayed)
                kept.append((client, -1, -1, size, entry + payload[after_clock:end]))
                rewritten = True
            else:
                kept.append((client, start, end, size, b""))
        if total > self.max_awareness_bytes:
            raise AwarenessLimitError(
                f"the document's awareness states would take {total} bytes; the limit is"
                f" {self.max_awareness_bytes}"
            )
        original = payload[:used]
        as_relayed = [
            (client, entry if a < 0 else original[a:b]) for client, a, b, _, entry in kept
        ]
        if len(kept) < len(entries) or rewritten:
            if not kept:
                return
            payload = _awareness_payload(as_relayed)
        own_entries = {client: original[start:end] for client, _, start, _, end, _ in entries}
        self._awareness_echo = (peer, {client: own_entries[client] for client, *_ in kept})
        self._awareness_entry_sizes = {client: size for client, _, _, size, _ in kept}
        self._awareness_in = as_relayed
        try:
            self.awareness.apply_awareness_update(payload, origin=peer)
        except (IndexError, RuntimeError, ValueError, TypeError) as e:
            # ValueError covers bad JSON and bad UTF-8 in the state strings
            raise RemoteProtocolError(f"malformed awareness update: {e}") from None
        finally:
            self._awareness_in = None
            self._awareness_entry_sizes = None
            self._awareness_echo = None

    def _on_awareness_change(self, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        if topic != "update":
            return
        self._awareness_snapshot = None
        changes, origin = event
        added, updated, removed = changes["added"], changes["updated"], changes["removed"]
        controlled = self.peers.get(origin) if origin is not None else None
        if controlled is not None:
            controlled.update(added, updated)
            controlled.difference_update(removed)
            for client in added:
                self._owners[client] = origin
        if origin is BUS_ORIGIN and self._bus_origin:
            for client in (*added, *updated):
                self._remote_owners[client] = self._bus_origin
        for client in removed:
            self._owners.pop(client, None)
            self._remote_owners.pop(client, None)
        self._account_awareness(added, updated, removed)
        changed = added + updated + removed
        # Each entry that took effect names its client once in `changed`; an outdated one
        # names none. When all did, relaying the update as it came tells the peers exactly
        # what re-encoding the changed states would, without a JSON round trip per cursor
        # move (most of the traffic).
        if not changed:
            return
        incoming = self._awareness_in
        if incoming is not None and len(incoming) == len(changed):
            entries = incoming
        else:
            encoded = encode_awareness(self.awareness, changed)
            entries = [(e[0], encoded[e[2] : e[4]]) for e in read_awareness_update(encoded)[0]]
        if not self._awareness_out and not self._batch:
            if self._schedule_flush is not None:
                self._schedule_flush(self)
        self._awareness_out.update(entries)
        # Relayed to every peer, the sender included: a client alone in a room must still
        # hear its own renewals, or y-websocket closes the connection after 30 s of silence.
        # The sender hears them with its own clocks (see _apply_awareness).
        echo = self._awareness_echo
        if echo is not None and echo[0] is origin:
            self._awareness_echoes.setdefault(origin, {}).update(echo[1])
        else:
            for client, _ in entries:  # a later change of an echoed client reaches all
                for echoes in self._awareness_echoes.values():
                    echoes.pop(client, None)
        if self._schedule_flush is None:
            self._flush_awareness()
        if (
            self._publish_awareness is not None
            and origin is not BUS_ORIGIN
            and origin != "timeout"  # other nodes expire their copies by the same timeout
        ):
            self._publish_awareness(self.name, _awareness_payload(entries))

    def _flush_awareness(self) -> None:
        out, self._awareness_out = self._awareness_out, {}
        echoes, self._awareness_echoes = self._awareness_echoes, {}
        frame = encode(AwarenessUpdate(_awareness_payload(out.items())))
        for peer in list(self.peers):
            own = echoes.get(peer)
            if own:
                mine = _awareness_payload({**out, **own}.items())
                peer.send_nowait(encode(AwarenessUpdate(mine)))
            else:
                peer.send_nowait(frame)

    def _account_awareness(self, added: list[int], updated: list[int], removed: list[int]) -> None:
        """Keep the bytes of every state, to cap the room's total."""
        sizes = self._awareness_sizes
        known = self._awareness_entry_sizes
        for client in removed:
            self._awareness_total -= sizes.pop(client, 0)
        for client in (*added, *updated):
            if known is not None and client in known:
                size = known[client]
            else:  # from the bus: measured
                state = self.awareness.states.get(client)
                size = len(json.dumps(state)) if state is not None else 0
            self._awareness_total += size - sizes.get(client, 0)
            sizes[client] = size

    def _reannounce(self, joiner: Peer) -> bytes:
        """Every awareness state, each clock moved one on, for ``joiner`` alone.

        A tab that reconnects removed the others' states when its connection closed, but
        kept their clocks (y-protocols), so it would ignore them at their current clocks
        until each one's next renewal, 15 s later. Moved one on, they are news to it. The
        server's own clocks move too, so that the owners' next entries are relayed past
        them (_apply_awareness) and reach the joiner as news. Not sent to the others:
        their copies are current, and an owner that got its own state back, older than
        what it holds, under a newer clock, would take the older one for its own.
        """
        meta = self.awareness.meta
        states = self.awareness.states
        for client in states:
            entry = meta.get(client)
            if entry is not None:
                entry["clock"] += 1
                if client in self._clock_offsets:
                    self._clock_offsets[client] += 1
        self._awareness_snapshot = None
        return encode(AwarenessUpdate(encode_awareness(self.awareness, states)))

    def _awareness_frame(self) -> bytes:
        """Every awareness state, as one frame (kept until the next change)."""
        frame = self._awareness_snapshot
        if frame is None:
            states = self.awareness.states
            frame = encode(AwarenessUpdate(encode_awareness(self.awareness, states)))
            self._awareness_snapshot = frame
        return frame

    def expire_awareness(self, now_ms: int, timeout_ms: int) -> None:
        """Remove awareness states not renewed for ``timeout_ms`` (y-protocols: 30 s).

        The clock of a client removed that long ago is forgotten too: y-protocols keeps it
        forever, and a room that is never empty would grow by one entry per page load.
        """
        states, meta = self.awareness.states, self.awareness.meta
        stale: list[int] = []
        gone: list[int] = []
        for client_id, entry in meta.items():
            if now_ms - entry["lastUpdated"] >= timeout_ms:
                if client_id in states:
                    stale.append(client_id)
                elif client_id != self.awareness.client_id:  # the server's own stays
                    gone.append(client_id)
        for client_id in gone:
            del meta[client_id]
        if stale:
            for client_ids in self.peers.values():
                client_ids.difference_update(stale)
            self.awareness.remove_awareness_states(stale, origin="timeout")

    # -- durability acknowledgements --------------------------------------------
    #
    # An acknowledgement carries the durable state vector and, per connection, how many of
    # the update messages it sent are durable: a state vector counts insertions only, so a
    # delete-only edit is visible to its sender in the count alone. An accepted update
    # message is durable once the ticket of the append that holds what it integrated has
    # committed; one that integrated nothing (a reconnecting client's step 2, a repeat)
    # once everything appended before it has. Refused messages are never counted: a
    # read-only peer's edits never show as saved.

    def _await_ack(self) -> None:
        """Remember the doc's state and each ack peer's count as of the last ticket, to
        acknowledge once it commits."""
        ticket = self._last_ticket
        if self._unacked and self._unacked[-1][0] == ticket:
            self._unacked.pop()  # one entry per ticket: the latest state holds the others
        self._unacked.append((ticket, self.doc.get_state()))
        for counts in self._ack_peers.values():
            if counts.noted < counts.received:
                if counts.pending and counts.pending[-1][0] == ticket:
                    counts.pending.pop()
                counts.pending.append((ticket, counts.received))
                counts.noted = counts.received
        self._awaiting_ack.add(self)

    def _ack_unchanged(self, counts: _AckCounts) -> list[bytes]:
        """An ack peer's update message integrated nothing new and nothing waits to be
        appended: it is durable with the last ticket, at once if that has committed."""
        if self.store.durable_ticket >= self._last_ticket and not counts.pending:
            counts.noted = counts.durable = counts.received
            return [encode(Ack(self.doc.get_state(), counts.durable))]
        self._await_ack()
        return []

    def on_commit(self, durable_ticket: int) -> None:
        """The store committed every update up to ``durable_ticket``: tell ack peers."""
        state_vector = None
        while self._unacked and self._unacked[0][0] <= durable_ticket:
            _, state_vector = self._unacked.popleft()
        if not self._unacked:
            self._awaiting_ack.discard(self)
        if state_vector is not None:
            # Every count in a peer's pending was noted with an entry of _unacked at the
            # same ticket, so a count that became durable always comes with a state vector.
            for peer, counts in list(self._ack_peers.items()):
                while counts.pending and counts.pending[0][0] <= durable_ticket:
                    counts.durable = counts.pending.popleft()[1]
                peer.send_nowait(encode(Ack(state_vector, counts.durable)))


@dataclass(slots=True, eq=False)
class _AckCounts:
    """One ack peer's update messages: accepted, noted for a ticket, durable."""

    received: int = 0
    noted: int = 0  # the count as of the last ticket it was noted for
    durable: int = 0
    pending: deque[tuple[int, int]] = field(default_factory=deque)  # (ticket, count then)


#: Bytes of :func:`deletions_digest`.
DIGEST_BYTES = 16


def deletions_digest(doc: Doc[Any]) -> bytes:
    """A digest of what ``doc`` deleted: equal for two docs that deleted the same.

    Its delete set is sorted and its adjacent ranges joined first, so that the order yrs
    encodes it in does not matter.
    """
    ranges = sorted(read_update(doc.get_update(doc.get_state())).delete_set)
    joined: list[tuple[int, int, int]] = []
    for client, clock, length in ranges:
        if joined and joined[-1][0] == client and joined[-1][1] + joined[-1][2] >= clock:
            last = joined[-1]
            joined[-1] = (client, last[1], max(last[2], clock + length - last[1]))
        else:
            joined.append((client, clock, length))
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for client, clock, length in joined:
        digest.update(f"{client},{clock},{length};".encode())
    return digest.digest()


def build_doc(name: str, updates: list[bytes], chunks: list[bytes] | None = None) -> Doc[Any]:
    """Rebuild a document from its stored log (``chunks``: see :func:`collab.updates.replay`).

    :raises StoreError: a stored update cannot be applied (``collab check`` finds these).
    """
    try:
        return doc_from(updates, chunks)
    except InvalidUpdateError as e:
        raise StoreError(
            f"document {name!r} has a stored update that cannot be applied: {e}"
        ) from e


class RoomManager(AsyncContextManagerMixin):
    """Owns every open room; loads, expires and unloads them. One node of a bus.

    Without a ``bus`` it runs a :class:`~collab.bus.LocalBus` of its own, which polls
    the store for what other processes changed.
    """

    #: Most updates from the bus kept for a document while it loads.
    MAX_EARLY_UPDATES = 1024

    def __init__(
        self,
        store: UpdateLog,
        settings: Settings,
        *,
        hooks: Hooks | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.hooks = hooks if hooks is not None else Hooks()
        self.node_id = uuid.uuid4().hex
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, anyio.Event] = {}
        # What the bus delivered for documents still loading, applied once they are.
        self._early: dict[str, list[bytes]] = {}
        self._dirty: list[Room] = []
        self._awaiting_ack: set[Room] = set()
        self._dirty_event = anyio.Event()
        self._own_bus = bus is None
        self.bus: Bus = bus if bus is not None else LocalBus(store, self._sweep_interval())
        self.bus.join(self)
        store.on_commit(self._on_commit)
        store.on_stale(self._on_stale)
        store.on_failed(self._on_failed)
        if self.hooks.on_store:
            store.on_stored(self._on_stored)
        metrics.ROOMS.set_function(lambda: len(self.rooms))

    def _sweep_interval(self) -> float:
        settings = self.settings
        return max(min(2.0, settings.awareness_timeout / 10, settings.idle_unload / 2), 0.05)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[RoomManager]:
        async with AsyncExitStack() as stack:
            if self._own_bus:
                assert isinstance(self.bus, LocalBus)
                await stack.enter_async_context(self.bus)
            stack.callback(self.bus.leave, self)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sweep)
                tg.start_soon(self._flusher)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
                    self.flush_all()  # the store is still open: nothing accepted is dropped
                    for room in self.rooms.values():
                        room.close()

    async def open(self, name: str) -> Room:
        """Return the room for ``name``, loading it from the store if needed.

        :raises StoreError: the document could not be loaded.
        :raises ExtensionError: an ``on_load`` hook failed; the room is not kept.
        """
        while True:
            room = self.rooms.get(name)
            if room is not None:
                return room
            loading = self._loading.get(name)
            if loading is not None:
                await loading.wait()
                continue  # loaded by another peer, or failed: then this one tries again
            self._make_room_for_one()
            loading = self._loading[name] = anyio.Event()
            self._early[name] = []
            try:
                # Subscribed before the load: what another node publishes meanwhile is
                # kept in _early and applied after it.
                await self.bus.subscribe(self, name)
                stored = await self.store.load(name)
                doc = build_doc(name, stored.updates)
                room = Room(
                    name,
                    doc,
                    self.store,
                    epoch=stored.epoch,
                    generation=stored.generation,
                    retired_state_vectors=stored.retired_state_vectors,
                    schedule_flush=self._schedule_flush,
                    max_depth=self.settings.max_depth,
                    max_awareness_state=self.settings.max_awareness_state,
                    max_awareness_bytes=self.settings.max_awareness_bytes,
                    max_document_bytes=self.settings.max_document_bytes,
                    loaded_bytes=sum(len(u) for u in stored.updates),
                    awaiting_ack=self._awaiting_ack,
                    hooks=self.hooks,
                    publish=self._publish_update,
                    publish_awareness=self._publish_awareness,
                )
                room.on_damaged = self._on_damaged
                if self.hooks.on_load:
                    try:
                        await self.hooks.loaded(LoadPayload(name, doc))
                    except Exception as e:
                        log.exception("on_load hook failed for %r", name)
                        room.close()
                        raise ExtensionError(
                            f"an extension failed loading the document: {e}"
                        ) from e
                for update in self._early.pop(name, ()):
                    room.receive_from_bus(update)
                self.rooms[name] = room
                log.debug("loaded %r from %d stored updates", name, len(stored.updates))
                return room
            finally:
                self._early.pop(name, None)
                if name not in self.rooms:
                    self.bus.unsubscribe(self, name)
                del self._loading[name]
                loading.set()

    def _make_room_for_one(self) -> None:
        """Unload idle rooms, longest idle first, until one more fits under the cap.

        :raises TooManyDocumentsError: every loaded room has connections.
        """
        cap = self.settings.max_open_documents
        excess = len(self.rooms) + len(self._loading) + 1 - cap
        if excess <= 0:
            return
        idle = sorted(
            (room for room in self.rooms.values() if room.empty_since is not None),
            key=lambda room: room.empty_since or 0.0,
        )
        for room in idle[:excess]:
            room.flush()  # queued in the store: a reload finds it
            self._drop(room)
            log.debug("unloaded idle room %r to make room", room.name)
        if len(self.rooms) + len(self._loading) + 1 > cap:
            metrics.LIMIT_HITS.labels(limit="open_documents").inc()
            raise TooManyDocumentsError(f"{cap} documents are open, the limit; try later")

    # -- the bus -------------------------------------------------------------------

    def _publish_update(self, name: str, update: bytes) -> None:
        self.bus.publish_update(self, name, update)

    def _publish_awareness(self, name: str, payload: bytes) -> None:
        self.bus.publish_awareness(self, name, payload)

    def on_bus_update(self, document: str, update: bytes) -> None:
        room = self.rooms.get(document)
        if room is not None:
            try:
                room.receive_from_bus(update)
            except InvalidUpdateError as e:
                log.error("update for %r from the bus cannot be applied: %s", document, e)
            return
        early = self._early.get(document)
        if early is not None:
            if len(early) >= self.MAX_EARLY_UPDATES:
                # Past the bound the load itself must bring it: the publisher stored it
                # before publishing, and a load waits for what is queued.
                del early[0]
            early.append(update)

    def on_bus_awareness(self, document: str, payload: bytes, origin: str) -> None:
        room = self.rooms.get(document)
        if room is not None:
            room.receive_awareness_from_bus(payload, origin)

    def on_node_gone(self, origin: str) -> None:
        for room in list(self.rooms.values()):
            room.remove_node(origin)

    def own_awareness(self, document: str) -> bytes | None:
        room = self.rooms.get(document)
        return room.own_awareness() if room is not None else None

    def state_of(self, document: str) -> bytes | None:
        room = self.rooms.get(document)
        if room is None:
            return None
        return deletions_digest(room.doc) + room.doc.get_state()

    def on_bus_state(self, document: str, state: bytes) -> tuple[bytes | None, bool]:
        room = self.rooms.get(document)
        if room is None:
            return None, False
        digest, state_vector = state[:DIGEST_BYTES], state[DIGEST_BYTES:]
        try:
            if len(digest) < DIGEST_BYTES:
                raise RemoteProtocolError("too short")
            theirs = decode_state_vector(state_vector)
        except RemoteProtocolError as e:
            log.warning("a state of %r from the bus is invalid: %s", document, e)
            return None, False
        mine = decode_state_vector(room.doc.get_state())
        ahead = any(clock > theirs.get(client, 0) for client, clock in mine.items())
        behind = any(clock > mine.get(client, 0) for client, clock in theirs.items())
        # State vectors count insertions only: a deletion the other lacks shows in the
        # digest of the delete sets. Each side then sends its own, once.
        deletions_differ = digest != deletions_digest(room.doc)
        update = None
        if ahead or deletions_differ:
            try:
                update = room.doc.get_update(state_vector)
            except ValueError as e:
                log.warning("a state vector of %r from the bus is invalid: %s", document, e)
                return None, False
        return update, behind or (deletions_differ and not ahead)

    def open_documents(self) -> Mapping[str, object]:
        return dict(self.rooms)

    async def poll_versions(self) -> None:
        """Notice documents that other processes deleted, replaced or appended to."""
        await self.bus.poll()

    async def on_stored_versions(
        self, polled: Mapping[str, object], versions: Mapping[str, DocVersion]
    ) -> None:
        for name, version in versions.items():
            room = self.rooms.get(name)
            if room is None or room is not polled.get(name):
                continue  # unloaded or reloaded since: a newer room is not judged by this
            if version.epoch != room.epoch:
                self._retire(room)
            elif version.generation != room.generation:
                room.flush()
                stored = await self.store.load(name)
                if self.rooms.get(name) is room and stored.epoch == room.epoch:
                    room.catch_up(stored)

    def _schedule_flush(self, room: Room) -> None:
        self._dirty.append(room)
        self._dirty_event.set()

    async def _flusher(self) -> None:
        # Runs one loop turn after the first update of a batch: everything the server read
        # from its sockets in between shares one merge, one store row and one frame per peer.
        while True:
            await self._dirty_event.wait()
            self._dirty_event = anyio.Event()
            self.flush_all()

    def flush_all(self) -> None:
        rooms, self._dirty = self._dirty, []
        for room in rooms:
            room.flush()

    def _on_stale(self, name: str, epoch: int) -> None:
        # The document was deleted or replaced by another process while this room held it:
        # what its peers hold is history of a retired epoch.
        room = self.rooms.get(name)
        if room is not None and room.epoch == epoch:
            self._retire(room)

    def _on_failed(self, name: str) -> None:
        # The store refused this document's updates for good and dropped them: its peers
        # hold edits that are not on disk, and must not be told otherwise. They reconnect
        # to a room reloaded from disk and offer those edits again in their sync step 2.
        room = self.rooms.get(name)
        if room is not None:
            self._drop(room)
            room.close_all(CloseCode.STORE_UNAVAILABLE, "the document cannot be stored; try later")

    def _on_damaged(self, room: Room, sender: Peer) -> None:
        # An update failed midway: the doc may hold part of it. What the room accepted
        # before is flushed to the store, and the room is dropped; its peers reconnect
        # (4503 means "try again") to a room loaded from the store, exactly as before.
        if self.rooms.get(room.name) is not room:
            return
        room.flush()
        self._drop(room)
        room.close_all(CloseCode.STORE_UNAVAILABLE, "the document is being reloaded", but=sender)

    def _retire(self, room: Room) -> None:
        log.info(
            "document %r was deleted or replaced; closing its %d peers", room.name, len(room.peers)
        )
        self._drop(room)
        room.close_all(CloseCode.STALE_EPOCH, STALE_REASON)

    def _drop(self, room: Room) -> None:
        """Take ``room`` out of service: no longer found by name, acknowledged or observed."""
        del self.rooms[room.name]
        self._awaiting_ack.discard(room)
        self.bus.unsubscribe(self, room.name)
        room.close()

    def _on_stored(self, stored: StoredUpdates) -> None:
        entries = stored.entries
        update = entries[0].update if len(entries) == 1 else merge([e.update for e in entries])
        self.hooks.stored(
            StorePayload(
                stored.room,
                update,
                stored.epoch,
                entries[0].seq,
                entries[-1].seq,
                entries[-1].created_at,
            )
        )

    def _on_commit(self, durable_ticket: int, committed_at: float) -> None:
        metrics.note_committed(durable_ticket, committed_at)
        for room in list(self._awaiting_ack):
            room.on_commit(durable_ticket)

    async def _sweep(self) -> None:
        interval = self._sweep_interval()
        timeout_ms = int(self.settings.awareness_timeout * 1000)
        while True:
            await anyio.sleep(interval)
            self.sweep(time.monotonic(), int(time.time() * 1000), timeout_ms)

    def sweep(self, now: float, now_ms: int, timeout_ms: int) -> None:
        """Expire stale awareness states and unload rooms empty for ``idle_unload`` s."""
        for name, room in list(self.rooms.items()):
            if room.empty_since is not None:
                if now - room.empty_since >= self.settings.idle_unload:
                    # Once flushed, every update is queued in the store, and a reload
                    # waits for the queue, so dropping the doc loses nothing.
                    room.flush()
                    self._drop(room)
                    logs.event(
                        log, logging.INFO, "room.unloaded", "unloaded an idle room", doc=name
                    )
            else:
                room.expire_awareness(now_ms, timeout_ms)


__all__ = ["Peer", "Room", "RoomManager", "StaleClientError", "apply_update", "build_doc"]
