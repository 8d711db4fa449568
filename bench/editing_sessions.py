"""Concurrent editing sessions, played through OT (collab.ot_server) and through the CRDT (pycrdt).

Used by ``tests/test_ot_vs_crdt.py`` and ``bench/ot_vs_crdt.py``; nothing in ``collab``
imports it.

A :class:`Session` is a seeded script of *intents*: "client 2 deletes up to 2 characters
and types 'hé' at 40% of its text", "deliver the next message from client 1 to the
server", "client 0 goes offline", "client 0 comes back". :func:`run_session` plays one
script through a *network*: :class:`OTNetwork` (clients with one op in flight plus a buffer,
and a central :class:`~collab.ot_server.OTDocument`) or :class:`CRDTNetwork` (pycrdt docs
exchanging updates through a server doc, as y-websocket does). Every link is a FIFO queue,
and a message moves only when the script delivers it, so both systems see the same
interleaving. Positions are picked as fractions of each client's own text, so a script stays
meaningful even where the two systems order concurrent inserts differently.

The module also replays the real editing traces in ``bench/traces`` (Joseph Gentle's
``editing-traces``, CC BY 4.0) through both systems.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pycrdt import Doc, Text, TransactionEvent, merge_updates

from collab import ot
from collab.ot_server import Ack, Broadcast, OTClient, OTDocument, Submit

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "traces"
#: The name of the root text type on the CRDT side, as the web editor uses.
TEXT_NAME = "content"

# What a generated client types: ASCII, newlines, accents (precomposed and combining),
# CJK, and astral-plane characters (a surrogate pair in JS, one code point here).
PIECES = ["a", "b", "c", " ", "hello ", "\n", "é", "e\u0301", "中文", "😀", "\U0001d538", "🤖 "]


# --- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edit:
    """Client ``client`` deletes up to ``delete`` characters at fraction ``at`` of its text,
    then inserts ``insert`` there."""

    client: int
    at: float
    delete: int
    insert: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Move the oldest message on one link: client to server (``upstream``) or back."""

    client: int
    upstream: bool


@dataclass(frozen=True, slots=True)
class Disconnect:
    client: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    client: int


@dataclass(frozen=True, slots=True)
class Sync:
    """Everyone comes online and every message is delivered: a quiescent checkpoint."""


Step = Edit | Deliver | Disconnect | Reconnect | Sync


@dataclass(frozen=True)
class Session:
    seed: int
    clients: int
    initial: str
    steps: tuple[Step, ...]

    @property
    def edits(self) -> int:
        return sum(isinstance(s, Edit) for s in self.steps)


def _random_edit(rng: random.Random, client: int) -> Edit:
    # Mostly typing, some backspacing and the odd larger cut: the text grows.
    delete = rng.choice([0, 0, 0, 0, 0, 1, 1, 2, 6])
    insert = "" if delete and rng.random() < 0.5 else rng.choice(PIECES)
    return Edit(client, rng.random(), delete, insert)


def generate_session(
    seed: int,
    *,
    clients: int = 3,
    edits: int = 100,
    deliveries_per_edit: float = 1.5,
    offline_chance: float = 0.02,
    offline_edits: tuple[int, int] = (5, 30),
    initial: str = "",
) -> Session:
    """A random session: ``edits`` edits by random clients, random deliveries in between.

    Each edit is followed by about ``deliveries_per_edit`` random deliveries (more means less
    latency and less concurrency). Before an edit, an online client goes offline with
    probability ``offline_chance``, for a number of edits drawn from ``offline_edits``; it
    keeps editing while offline and its messages wait until it is back.
    """
    rng = random.Random(seed)
    steps: list[Step] = []
    back_at: dict[int, int] = {}  # offline client -> edit count at which it reconnects
    for n in range(edits):
        for client, when in sorted(back_at.items()):
            if when <= n:
                steps.append(Reconnect(client))
                del back_at[client]
        if rng.random() < offline_chance and len(back_at) < clients - 1:
            client = rng.choice([c for c in range(clients) if c not in back_at])
            steps.append(Disconnect(client))
            back_at[client] = n + rng.randint(*offline_edits)
        steps.append(_random_edit(rng, rng.randrange(clients)))
        deliveries = int(deliveries_per_edit) + (rng.random() < deliveries_per_edit % 1)
        steps += [Deliver(rng.randrange(clients), rng.random() < 0.5) for _ in range(deliveries)]
    steps += [Reconnect(c) for c in sorted(back_at)]
    return Session(seed, clients, initial, tuple(steps))


def offline_session(seed: int, *, missed: int, offline: int, clients: int = 3) -> Session:
    """Client 0 goes offline and makes ``offline`` edits while the others make ``missed``
    edits (each delivered at once); then it comes back. The others type in bursts at one
    spot, client 0 at another, as two people editing different paragraphs."""
    rng = random.Random(seed)
    steps: list[Step] = [Disconnect(0)]
    for n in range(max(missed, offline)):
        if n < missed:
            client = 1 + n % (clients - 1)
            steps.append(Edit(client, 0.8 + 0.2 * rng.random(), rng.choice([0, 0, 1]), "ab"))
            steps += [Deliver(client, True)] + [Deliver(c, False) for c in range(1, clients)]
        if n < offline:
            steps.append(Edit(0, 0.2 * rng.random(), rng.choice([0, 0, 1]), "xy"))
    steps.append(Reconnect(0))
    return Session(seed, clients, "", tuple(steps))


def rounds_session(seed: int, *, clients: int = 2, rounds: int = 5, edits: int = 3) -> Session:
    """Rounds of ``edits`` edits by random clients with no delivery in between, each round
    ending in a :class:`Sync`. Within a round every edit is made on the text the round
    started with (plus its author's own edits), in OT and in the CRDT alike, so whatever
    differs at a checkpoint comes from how each system merges the same concurrent edits."""
    rng = random.Random(seed)
    steps: list[Step] = []
    for _ in range(rounds):
        steps += [_random_edit(rng, rng.randrange(clients)) for _ in range(edits)]
        steps.append(Sync())
    return Session(seed, clients, "", tuple(steps))


def position(at: float, length: int) -> int:
    """The position at fraction ``at`` of a text of ``length`` code points."""
    return min(int(at * (length + 1)), length)


# --- networks -------------------------------------------------------------------------------


@dataclass
class Stats:
    """What a network measured while playing a session or a trace."""

    #: Time spent integrating: local edits at the clients, the server's processing, remote
    #: ops or updates at the clients. The harness's own work (picking positions, which
    #: needs the CRDT client's text) is not counted.
    seconds: float = 0.0
    #: Messages and bytes on the wire, both directions, as each system encodes them;
    #: counted on delivery (an offline client's messages cross the wire when it is back).
    messages: int = 0
    wire_bytes: int = 0
    #: OT: the current text (UTF-8). CRDT: the encoded document state (``get_update()``).
    server_state_bytes: int = 0
    #: OT: the op history (JSON). CRDT: the stored update log.
    server_log_bytes: int = 0
    #: OT only: calls to ``transform`` at the server and at the clients.
    transforms: int = 0


class Network(Protocol):
    name: str
    stats: Stats

    def edit(self, client: int, at: float, delete: int, insert: str) -> None: ...
    def deliver(self, client: int, upstream: bool) -> None: ...
    def disconnect(self, client: int) -> None: ...
    def reconnect(self, client: int) -> None: ...
    def settle(self) -> None: ...
    def texts(self) -> list[str]: ...
    def server_text(self) -> str: ...
    def measure_server(self) -> None: ...


def _json_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _ot_message_size(message: Submit | Ack | Broadcast) -> int:
    """The message as ShareDB-style JSON: ``{"v": revision, "op": [...]}``."""
    if isinstance(message, Ack):
        return _json_size({"v": message.revision})
    if isinstance(message, Submit):
        return _json_size({"v": message.base_revision, "op": message.op})
    return _json_size({"v": message.revision, "op": message.op})


class _OTWire:
    """Records OT messages as they are sent and sizes them later, outside the timed part
    (a real server serializes each message once however many clients receive it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Submit | Ack | Broadcast, int]] = []

    def send(self, message: Submit | Ack | Broadcast, copies: int = 1) -> None:
        self.sent.append((message, copies))

    def measure(self, stats: Stats) -> None:
        stats.messages = sum(copies for _, copies in self.sent)
        stats.wire_bytes = sum(_ot_message_size(m) * copies for m, copies in self.sent)


class OTNetwork:
    """OT clients around one :class:`OTDocument`; each link is a FIFO queue."""

    name = "OT"

    def __init__(self, clients: int, initial: str = "", *, compose: bool = True) -> None:
        self.server = OTDocument(initial)
        self.clients = [OTClient(initial, compose=compose) for _ in range(clients)]
        self.up: list[deque[Submit]] = [deque() for _ in range(clients)]
        self.down: list[deque[Ack | Broadcast]] = [deque() for _ in range(clients)]
        self.online = [True] * clients
        self.stats = Stats()
        self.wire = _OTWire()

    def _send_up(self, client: int, message: Submit | None) -> None:
        if message is not None:
            self.up[client].append(message)

    def edit(self, client: int, at: float, delete: int, insert: str) -> None:
        text = self.clients[client].text
        pos = position(at, len(text))
        op = ot.normalize([pos, {"d": min(delete, len(text) - pos)}, insert])
        if op:
            started = time.perf_counter()
            message = self.clients[client].edit(op)
            self.stats.seconds += time.perf_counter() - started
            self._send_up(client, message)

    def deliver(self, client: int, upstream: bool) -> None:
        if not self.online[client]:
            return
        if upstream:
            if self.up[client]:
                self._submit(client, self.up[client].popleft())
        elif self.down[client]:
            self._receive(client, self.down[client].popleft())

    def _submit(self, client: int, message: Submit) -> None:
        self.stats.transforms += self.server.revision - message.base_revision
        self.wire.send(message)
        started = time.perf_counter()
        ack, broadcast = self.server.receive(message)
        for other, queue in enumerate(self.down):
            queue.append(ack if other == client else broadcast)
        self.stats.seconds += time.perf_counter() - started

    def _receive(self, client: int, message: Ack | Broadcast) -> None:
        self.wire.send(message)
        receiver = self.clients[client]
        if isinstance(message, Broadcast):
            pending = len(receiver.buffer) + (receiver.inflight is not None)
            self.stats.transforms += 2 * pending
        started = time.perf_counter()
        if isinstance(message, Ack):
            reply = receiver.receive_ack(message)
        else:
            receiver.receive_op(message)
            reply = None
        self.stats.seconds += time.perf_counter() - started
        self._send_up(client, reply)

    def disconnect(self, client: int) -> None:
        self.online[client] = False

    def reconnect(self, client: int) -> None:
        self.online[client] = True

    def settle(self) -> None:
        self.online = [True] * len(self.clients)
        while any(self.up) or any(self.down):
            for client in range(len(self.clients)):
                while self.up[client]:
                    self._submit(client, self.up[client].popleft())
                while self.down[client]:
                    self._receive(client, self.down[client].popleft())

    def texts(self) -> list[str]:
        return [c.text for c in self.clients]

    def server_text(self) -> str:
        return self.server.text

    def measure_server(self) -> None:
        self.wire.measure(self.stats)
        self.stats.server_state_bytes = len(self.server.text.encode())
        self.stats.server_log_bytes = sum(_json_size(op) for op in self.server.history)


def _varuint_size(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _sync_message_size(payload: bytes) -> int:
    """A y-websocket sync message: type, sync type, length-prefixed payload."""
    return 2 + _varuint_size(len(payload)) + len(payload)


#: CRDT client ids. Yjs picks a random 32-bit id per doc; fixed ones of the same size keep
#: update sizes realistic and runs repeatable (Yjs orders concurrent inserts at one spot by
#: client id, lowest first).
CLIENT_ID_BASE = 3_000_000_000


def _utf8_span(text: str, pos: int, count: int) -> tuple[int, int]:
    """pycrdt indexes text by UTF-8 bytes; convert a code point span to a byte span."""
    if text.isascii():
        return pos, count
    start = len(text[:pos].encode())
    return start, len(text[pos : pos + count].encode())


class _CRDTPeer:
    """A pycrdt doc whose local changes become outgoing updates."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Text] = Doc(client_id=client_id)
        self.text = self.doc.get(TEXT_NAME, type=Text)
        self.outgoing: list[bytes] = []
        self._remote = False
        self._subscription = self.doc.observe(self._on_change)

    def _on_change(self, event: TransactionEvent) -> None:
        if not self._remote:
            self.outgoing.append(event.update)

    def apply_remote(self, update: bytes) -> None:
        self._remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._remote = False

    def splice(self, pos: int, delete: int, insert: str, current: str | None = None) -> None:
        """Delete ``delete`` code points at ``pos`` and insert ``insert``, in one transaction.

        ``current`` is the text now, if known; it is needed only for non-ASCII text.
        """
        if current is None or current.isascii():
            start, size = pos, delete
        else:
            start, size = _utf8_span(current, pos, delete)
        with self.doc.transaction():
            if size:
                del self.text[start : start + size]
            if insert:
                self.text.insert(start, insert)

    def take_outgoing(self) -> bytes | None:
        if not self.outgoing:
            return None
        out = self.outgoing
        self.outgoing = []
        return out[0] if len(out) == 1 else merge_updates(*out)


class CRDTNetwork:
    """pycrdt clients around one server doc that stores and relays updates (y-websocket)."""

    name = "CRDT"

    def __init__(self, clients: int, initial: str = "") -> None:
        self.server = _CRDTPeer(CLIENT_ID_BASE - 1)
        self.log: list[bytes] = []
        if initial:
            self.server.splice(0, 0, initial)
            first = self.server.take_outgoing()
            assert first is not None
            self.log.append(first)
        self.clients = [_CRDTPeer(CLIENT_ID_BASE + c) for c in range(clients)]
        for peer in self.clients:
            for update in self.log:
                peer.apply_remote(update)
        self.up: list[deque[bytes]] = [deque() for _ in range(clients)]
        self.down: list[deque[bytes]] = [deque() for _ in range(clients)]
        self.online = [True] * clients
        self.stats = Stats()

    def edit(self, client: int, at: float, delete: int, insert: str) -> None:
        peer = self.clients[client]
        text = str(peer.text)
        pos = position(at, len(text))
        delete = min(delete, len(text) - pos)
        if delete or insert:
            started = time.perf_counter()
            peer.splice(pos, delete, insert, text)
            update = peer.take_outgoing()
            self.stats.seconds += time.perf_counter() - started
            assert update is not None
            self.up[client].append(update)

    def deliver(self, client: int, upstream: bool) -> None:
        if not self.online[client]:
            return
        if upstream:
            if self.up[client]:
                self._store_and_relay(client, self.up[client].popleft())
        elif self.down[client]:
            self._receive(client, self.down[client].popleft())

    def _count(self, update: bytes) -> None:
        self.stats.messages += 1
        self.stats.wire_bytes += _sync_message_size(update)

    def _store_and_relay(self, client: int, update: bytes) -> None:
        self._count(update)
        started = time.perf_counter()
        self.server.apply_remote(update)
        self.log.append(update)
        for other, queue in enumerate(self.down):
            if other != client:
                queue.append(update)
        self.stats.seconds += time.perf_counter() - started

    def _receive(self, client: int, update: bytes) -> None:
        self._count(update)
        started = time.perf_counter()
        self.clients[client].apply_remote(update)
        self.stats.seconds += time.perf_counter() - started

    def disconnect(self, client: int) -> None:
        self.online[client] = False

    def reconnect(self, client: int) -> None:
        """y-websocket's resync: each side sends its state vector (sync step 1) and gets back
        one update with everything it lacks (sync step 2). Those replace whatever was queued
        while offline: a server does not queue updates for a closed connection."""
        self.online[client] = True
        peer = self.clients[client]
        started = time.perf_counter()
        client_state, server_state = peer.doc.get_state(), self.server.doc.get_state()
        to_client = self.server.doc.get_update(client_state)
        to_server = peer.doc.get_update(server_state)
        self.stats.seconds += time.perf_counter() - started
        self._count(client_state)
        self._count(server_state)
        self.down[client].clear()
        self.down[client].append(to_client)
        self.up[client].clear()
        self.up[client].append(to_server)

    def settle(self) -> None:
        for client in range(len(self.clients)):
            if not self.online[client]:
                self.reconnect(client)
        while any(self.up) or any(self.down):
            for client in range(len(self.clients)):
                while self.up[client]:
                    self._store_and_relay(client, self.up[client].popleft())
                while self.down[client]:
                    self._receive(client, self.down[client].popleft())

    def texts(self) -> list[str]:
        return [str(peer.text) for peer in self.clients]

    def server_text(self) -> str:
        return str(self.server.text)

    def measure_server(self) -> None:
        self.stats.server_state_bytes = len(self.server.doc.get_update())
        self.stats.server_log_bytes = sum(len(u) for u in self.log)


@dataclass
class SessionResult:
    system: str
    texts: list[str]
    server_text: str
    stats: Stats

    @property
    def converged(self) -> bool:
        return all(t == self.server_text for t in self.texts)


def play(network: Network, step: Step) -> None:
    if isinstance(step, Edit):
        network.edit(step.client, step.at, step.delete, step.insert)
    elif isinstance(step, Deliver):
        network.deliver(step.client, step.upstream)
    elif isinstance(step, Disconnect):
        network.disconnect(step.client)
    elif isinstance(step, Reconnect):
        network.reconnect(step.client)
    else:
        network.settle()


def run_session(session: Session, network: Network) -> SessionResult:
    """Play every step of ``session`` through ``network``, then deliver everything left."""
    for step in session.steps:
        play(network, step)
    network.settle()
    network.measure_server()
    return SessionResult(network.name, network.texts(), network.server_text(), network.stats)


def compare(session: Session) -> tuple[SessionResult, SessionResult]:
    """Run one session through OT and through the CRDT."""
    ot_result = run_session(session, OTNetwork(session.clients, session.initial))
    crdt_result = run_session(session, CRDTNetwork(session.clients, session.initial))
    return ot_result, crdt_result


@dataclass
class Divergence:
    """The first checkpoint (a :class:`Sync`, or the end) where OT and the CRDT differ."""

    #: Index into ``session.steps``; ``len(session.steps)`` means the end.
    step: int
    ot_text: str
    crdt_text: str
    #: The text at the checkpoint before, the same in both systems.
    before: str
    #: The steps since that checkpoint.
    steps: tuple[Step, ...]


def first_divergence(session: Session) -> Divergence | None:
    """Play ``session`` through both systems in lockstep and compare them at each
    checkpoint (between checkpoints, OT acks make its messages arrive at other times)."""
    ot_net = OTNetwork(session.clients, session.initial)
    crdt_net = CRDTNetwork(session.clients, session.initial)
    before, start = session.initial, 0
    for index, step in enumerate((*session.steps, Sync())):
        play(ot_net, step)
        play(crdt_net, step)
        if isinstance(step, Sync):
            ot_text, crdt_text = ot_net.server_text(), crdt_net.server_text()
            if ot_text != crdt_text:
                return Divergence(index, ot_text, crdt_text, before, session.steps[start:index])
            before, start = ot_text, index + 1
    return None


# --- traces ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Txn:
    #: ``(pos, delete, insert)``, in descending position, in code points.
    patches: tuple[tuple[int, int, str], ...]
    parents: tuple[int, ...]
    agent: int


@dataclass(frozen=True)
class Trace:
    name: str
    start: str
    end: str
    txns: list[Txn]
    concurrent: bool

    def prefix(self, count: int) -> Trace:
        """The first ``count`` transactions (the end text is then unknown: empty)."""
        return Trace(self.name, self.start, "", self.txns[:count], self.concurrent)


def load_trace(name: str, directory: Path = TRACES) -> Trace:
    """Read ``<directory>/<name>.json.gz`` (the editing-traces format)."""
    with gzip.open(directory / f"{name}.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    raw = data["txns"]
    concurrent = bool(raw) and "parents" in raw[0]
    txns = [
        Txn(
            tuple((p[0], p[1], p[2]) for p in t["patches"]),
            tuple(t["parents"]) if concurrent else ((i - 1,) if i else ()),
            t.get("agent", 0),
        )
        for i, t in enumerate(raw)
    ]
    return Trace(name, data.get("startContent", ""), data["endContent"], txns, concurrent)


def txn_op(txn: Txn) -> ot.Op:
    """The transaction's patches as one OT op."""
    op: ot.Op = []
    for pos, delete, insert in txn.patches:
        patch = ot.normalize([pos, {"d": delete}, insert])
        op = patch if not op else ot.compose(op, patch)
    return op


@dataclass
class ReplayResult:
    system: str
    trace: str
    texts: list[str]
    stats: Stats
    txns: int

    @property
    def ops_per_second(self) -> float:
        return self.txns / self.stats.seconds if self.stats.seconds else float("inf")


def replay_sequential_ot(trace: Trace) -> ReplayResult:
    """One OT client and the server: each transaction is sent, applied and acknowledged."""
    stats = Stats()
    started = time.perf_counter()
    server = OTDocument(trace.start)
    client = OTClient(trace.start)
    wire = _OTWire()
    for txn in trace.txns:
        submit = client.edit(txn_op(txn))
        if submit is None:
            continue
        ack, _ = server.receive(submit)
        client.receive_ack(ack)
        wire.send(submit)
        wire.send(ack)
    stats.seconds = time.perf_counter() - started
    wire.measure(stats)
    stats.server_state_bytes = len(server.text.encode())
    stats.server_log_bytes = sum(_json_size(op) for op in server.history)
    return ReplayResult("OT", trace.name, [client.text, server.text], stats, len(trace.txns))


def _apply_patches(peer: _CRDTPeer, patches: Sequence[tuple[int, int, str]], ascii: bool) -> None:
    current = None if ascii else str(peer.text)
    with peer.doc.transaction():
        for pos, delete, insert in patches:
            start, size = (pos, delete) if ascii else _utf8_span(current or "", pos, delete)
            if size:
                del peer.text[start : start + size]
            if insert:
                peer.text.insert(start, insert)
            if not ascii:
                current = str(peer.text)


def _is_ascii(trace: Trace) -> bool:
    return trace.start.isascii() and all(p[2].isascii() for t in trace.txns for p in t.patches)


def replay_sequential_crdt(trace: Trace) -> ReplayResult:
    """One pycrdt client and a server doc: each transaction's update is sent, applied, stored."""
    stats = Stats()
    ascii = _is_ascii(trace)
    started = time.perf_counter()
    server = _CRDTPeer(CLIENT_ID_BASE - 1)
    client = _CRDTPeer(CLIENT_ID_BASE)
    log: list[bytes] = []
    if trace.start:
        client.splice(0, 0, trace.start)
    for txn in trace.txns:
        _apply_patches(client, txn.patches, ascii)
        update = client.take_outgoing()
        if update is None:
            continue
        server.apply_remote(update)
        log.append(update)
        stats.messages += 1
        stats.wire_bytes += _sync_message_size(update)
    stats.seconds = time.perf_counter() - started
    stats.server_state_bytes = len(server.doc.get_update())
    stats.server_log_bytes = sum(len(u) for u in log)
    texts = [str(client.text), str(server.text)]
    return ReplayResult("CRDT", trace.name, texts, stats, len(trace.txns))


class ReplayError(Exception):
    """The trace cannot be replayed this way (its causal graph does not fit)."""


@dataclass
class _Causal:
    """Per transaction: its agent's sequence number, and how many transactions of each agent
    it has seen (its version vector: a prefix of each agent's transactions)."""

    agents: int
    own: list[list[int]] = field(default_factory=list)  # agent -> its txn indexes, in order
    seq: list[int] = field(default_factory=list)
    seen: list[list[int]] = field(default_factory=list)


def _causal(trace: Trace) -> _Causal:
    agents = 1 + max((t.agent for t in trace.txns), default=0)
    causal = _Causal(agents, [[] for _ in range(agents)])
    for i, txn in enumerate(trace.txns):
        seen = [0] * agents
        for p in txn.parents:
            parent = trace.txns[p]
            seen = [max(a, b) for a, b in zip(seen, causal.seen[p], strict=True)]
            seen[parent.agent] = max(seen[parent.agent], causal.seq[p] + 1)
        if seen[txn.agent] != len(causal.own[txn.agent]):
            raise ReplayError(f"txn {i}: agent {txn.agent} did not see its own previous txn")
        causal.seq.append(len(causal.own[txn.agent]))
        causal.own[txn.agent].append(i)
        causal.seen.append(seen)
    return causal


def replay_concurrent_ot(trace: Trace) -> ReplayResult:
    """Each agent is an OT client; the server orders their ops as they arrive.

    A transaction must be made on exactly the text its ``parents`` saw, so an agent's client
    takes a message from the server only when the agent's next transaction has seen it
    (acks always). Ops reach the server as soon as a client sends them; a client sends its
    next op when the previous one is acknowledged (``compose=False``: one transaction per op,
    since another agent may have seen some of them and not others).

    :raises ReplayError: if no agent can make progress.
    """
    causal = _causal(trace)
    agents = causal.agents
    stats = Stats()
    started = time.perf_counter()
    server = OTDocument(trace.start)
    clients = [OTClient(trace.start, compose=False) for _ in range(agents)]
    # Down queues hold (message, author agent, author's op number) for broadcasts.
    down: list[deque[tuple[Ack | Broadcast, int, int]]] = [deque() for _ in range(agents)]
    ops_sent = [0] * agents  # ops each agent has sent to the server
    # received[a][b]: how many of b's ops a has applied.
    received = [[0] * agents for _ in range(agents)]
    # ops_before[b][k]: how many ops b sends for its first k transactions (empty ones send none).
    ops_before = [[0] for _ in range(agents)]
    ops = [txn_op(t) for t in trace.txns]
    for i, txn in enumerate(trace.txns):
        ops_before[txn.agent].append(ops_before[txn.agent][-1] + bool(ops[i]))
    cursor = [0] * agents  # index into each agent's own transactions
    wire = _OTWire()

    def send(agent: int, submit: Submit | None) -> None:
        if submit is None:
            return
        stats.transforms += server.revision - submit.base_revision
        number = ops_sent[agent]
        ops_sent[agent] += 1
        ack, broadcast = server.receive(submit)
        wire.send(submit)
        wire.send(ack)
        wire.send(broadcast, agents - 1)
        for other in range(agents):
            down[other].append((ack if other == agent else broadcast, agent, number))

    def needs(agent: int, author: int) -> int:
        """How many of ``author``'s ops the agent's next transaction has seen."""
        if cursor[agent] == len(causal.own[agent]):
            return ops_sent[author] + len(clients[author].buffer) + 1  # no limit
        nxt = causal.own[agent][cursor[agent]]
        return ops_before[author][causal.seen[nxt][author]]

    remaining = len(trace.txns)
    while remaining or any(down):
        progressed = False
        for agent in range(agents):
            client = clients[agent]
            queue = down[agent]
            while queue:
                message, author, number = queue[0]
                if isinstance(message, Broadcast):
                    if number >= needs(agent, author):
                        break
                    stats.transforms += 2 * (len(client.buffer) + (client.inflight is not None))
                    client.receive_op(message)
                    received[agent][author] += 1
                    queue.popleft()
                else:
                    queue.popleft()
                    send(agent, client.receive_ack(message))
                progressed = True
            if cursor[agent] < len(causal.own[agent]):
                i = causal.own[agent][cursor[agent]]
                if all(
                    received[agent][b] == ops_before[b][causal.seen[i][b]]
                    for b in range(agents)
                    if b != agent
                ):
                    send(agent, client.edit(ops[i]))
                    cursor[agent] += 1
                    remaining -= 1
                    progressed = True
        if not progressed:
            raise ReplayError(f"{trace.name}: no agent can proceed with {remaining} txns left")
    stats.seconds = time.perf_counter() - started
    wire.measure(stats)
    stats.server_state_bytes = len(server.text.encode())
    stats.server_log_bytes = sum(_json_size(op) for op in server.history)
    texts = [server.text, *(c.text for c in clients)]
    return ReplayResult("OT", trace.name, texts, stats, len(trace.txns))


def replay_concurrent_crdt(trace: Trace) -> ReplayResult:
    """Each agent is a pycrdt doc; before a transaction, its doc gets exactly the updates of
    the transactions its ``parents`` saw. Each update crosses the wire once per other agent."""
    causal = _causal(trace)
    agents = causal.agents
    ascii = _is_ascii(trace)
    stats = Stats()
    started = time.perf_counter()
    peers = [_CRDTPeer(CLIENT_ID_BASE + a) for a in range(agents)]
    if trace.start:
        peers[0].splice(0, 0, trace.start)
        first = peers[0].take_outgoing()
        assert first is not None
        for peer in peers[1:]:
            peer.apply_remote(first)
    has = [[0] * agents for _ in range(agents)]  # has[a][b]: b's txns integrated into a's doc
    updates: list[bytes | None] = []

    def catch_up(agent: int, target: Sequence[int]) -> None:
        for author in range(agents):
            if author == agent:
                continue
            for k in range(has[agent][author], target[author]):
                update = updates[causal.own[author][k]]
                if update is not None:
                    peers[agent].apply_remote(update)
                    stats.messages += 1
                    stats.wire_bytes += _sync_message_size(update)
            has[agent][author] = max(has[agent][author], target[author])

    for i, txn in enumerate(trace.txns):
        agent = txn.agent
        catch_up(agent, causal.seen[i])
        _apply_patches(peers[agent], txn.patches, ascii)
        updates.append(peers[agent].take_outgoing())
        has[agent][agent] += 1
    everything = [len(own) for own in causal.own]
    for agent in range(agents):
        catch_up(agent, everything)
    stats.seconds = time.perf_counter() - started
    log = [u for u in updates if u is not None]
    stats.server_log_bytes = sum(len(u) for u in log)
    stats.server_state_bytes = len(peers[0].doc.get_update())
    texts = [str(p.text) for p in peers]
    return ReplayResult("CRDT", trace.name, texts, stats, len(trace.txns))


REPLAYS: dict[tuple[str, bool], Callable[[Trace], ReplayResult]] = {
    ("OT", False): replay_sequential_ot,
    ("CRDT", False): replay_sequential_crdt,
    ("OT", True): replay_concurrent_ot,
    ("CRDT", True): replay_concurrent_crdt,
}


def replay(trace: Trace, system: str) -> ReplayResult:
    """Replay ``trace`` through ``system`` ("OT" or "CRDT")."""
    return REPLAYS[system, trace.concurrent](trace)
