"""The bus contract, run against every bus: two RoomManagers on one store and one bus
(the in-process LocalBus, or each on its own connection to Redis or NATS) behave as two
nodes of a cluster.

The network buses deliver asynchronously, so every check waits for what it expects
(under ``fail_after``). Their periodic state exchange is set far apart (60 s) except in
the tests about healing, so that a delivery test cannot pass by being healed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Awareness, Doc, Text

from collab import metrics
from collab.bus import LocalBus, open_bus
from collab.bus.network import Envelope, Kind, NetworkBus, encode_envelope
from collab.config import Settings
from collab.protocol import AwarenessUpdate, SyncUpdate
from collab.rooms import Room, RoomManager
from collab.storage.base import StoredDoc
from collab.storage.sqlite import SQLiteLog
from tests.buses import shared_bus, unique_prefix
from tests.test_rooms import FakePeer, text_update

pytestmark = pytest.mark.anyio

NETWORK = ["redis", "nats"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteLog]:
    async with SQLiteLog(tmp_path / "collab.db", commit_delay=0.001) as log:
        yield log


class Cluster:
    """Nodes on one bus of ``kind``; ``await cluster.node()`` adds one."""

    def __init__(self, kind: str, store: SQLiteLog, stack: AsyncExitStack) -> None:
        self.kind = kind
        self.store = store
        self.stack = stack
        self.url = "local" if kind == "local" else shared_bus(kind)
        self.prefix = unique_prefix()
        self.local: LocalBus | None = None
        self.buses: dict[str, NetworkBus] = {}

    def settings(self, **overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "idle_unload": 1000,
            "bus": self.url,
            "bus_prefix": self.prefix,
            "bus_heartbeat": 0.2,
            "bus_sync_interval": 60.0,
        }
        return Settings(**{**options, **overrides})

    async def node(self, **overrides: Any) -> RoomManager:
        settings = self.settings(**overrides)
        if self.kind == "local":
            if self.local is None:
                self.local = await self.stack.enter_async_context(LocalBus())
            bus: LocalBus | NetworkBus = self.local
        else:
            bus = await self.stack.enter_async_context(open_bus(settings, self.store))
            assert isinstance(bus, NetworkBus)
            await until(lambda: bus.connected)
        manager = await self.stack.enter_async_context(RoomManager(self.store, settings, bus=bus))
        if isinstance(bus, NetworkBus):
            self.buses[manager.node_id] = bus
        return manager


@pytest.fixture(params=["local", *NETWORK])
async def cluster(request: pytest.FixtureRequest, store: SQLiteLog) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(request.param, store, stack)


@pytest.fixture(params=NETWORK)
async def network(request: pytest.FixtureRequest, store: SQLiteLog) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(request.param, store, stack)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def text_of(update: bytes) -> str:
    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))


def content(room: Room) -> str:
    return str(room.doc.get("content", type=Text))


def updates_to(peer: FakePeer) -> list[str]:
    return [text_of(m.update) for m in peer.messages() if isinstance(m, SyncUpdate)]


def awareness_of(client_id: int, state: dict[str, Any]) -> bytes:
    client: Awareness = Awareness(Doc(client_id=client_id))
    client.set_local_state(state)
    return client.encode_awareness_update([client_id])


async def test_an_update_accepted_on_one_node_reaches_the_other_and_is_stored_once(
    cluster: Cluster, store: SQLiteLog
) -> None:
    a, b = await cluster.node(), await cluster.node()
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada, bob = FakePeer(), FakePeer()
    room_a.join(ada)
    room_b.join(bob)
    ada.frames.clear()
    bob.frames.clear()
    room_a.receive(ada, SyncUpdate(text_update("hello")))
    room_a.flush()
    await until(lambda: content(room_b) == "hello")
    assert updates_to(bob) == ["hello"]
    # Bob answers; once Ada has it, any echo of her own update would have come first.
    room_b.receive(bob, SyncUpdate(text_update(" world", Doc())))
    room_b.flush()
    await until(lambda: len(content(room_a)) == len("hello world"))
    assert updates_to(ada) == [" world"]  # nothing of her own came back
    await store.flush()
    stored = await store.load("doc")
    assert sorted(text_of(u) for u in stored.updates) == [" world", "hello"]  # once each


async def test_awareness_crosses_nodes_and_leaves_with_its_connection(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada, bob = FakePeer(), FakePeer()
    room_a.join(ada)
    room_b.join(bob)
    room_a.receive(ada, AwarenessUpdate(awareness_of(42, {"user": {"name": "Ada"}})))
    await until(lambda: 42 in room_b.awareness.states)
    assert room_b.awareness.states[42] == {"user": {"name": "Ada"}}
    # relayed to Bob at the end of the loop turn, with any other change of that turn
    await until(lambda: any(isinstance(m, AwarenessUpdate) for m in bob.messages()))
    relayed = len(bob.messages())
    room_a.leave(ada)
    await until(lambda: 42 not in room_b.awareness.states and len(bob.messages()) > relayed)
    last = bob.messages()[-1]
    assert isinstance(last, AwarenessUpdate)
    removed: Awareness = Awareness(Doc())
    removed.apply_awareness_update(last.payload, origin=None)
    assert 42 not in removed.states
    assert json.dumps(room_a.awareness.states) == json.dumps(room_b.awareness.states)


async def test_a_connection_may_not_overwrite_the_presence_of_another_nodes_client(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada, mallory = FakePeer(), FakePeer()
    room_a.join(ada)
    room_b.join(mallory)
    room_a.receive(ada, AwarenessUpdate(awareness_of(42, {"user": {"name": "Ada"}})))
    await until(lambda: 42 in room_b.awareness.states)
    forged: Awareness = Awareness(Doc(client_id=42))
    for _ in range(5):  # a clock past Ada's
        forged.set_local_state({"user": {"name": "not Ada"}})
    room_b.receive(mallory, AwarenessUpdate(forged.encode_awareness_update([42])))
    assert room_b.awareness.states[42] == {"user": {"name": "Ada"}}


async def test_what_the_bus_delivers_while_a_node_loads_is_applied_after_the_load(
    cluster: Cluster, store: SQLiteLog
) -> None:
    a, b = await cluster.node(), await cluster.node()
    room_a = await a.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    load = store.load
    loading, release = anyio.Event(), anyio.Event()

    async def slow_load(name: str) -> StoredDoc:
        stored = await load(name)  # read before A's edit is stored
        loading.set()
        await release.wait()
        return stored

    store.load = slow_load  # type: ignore[method-assign]
    opened: list[Room] = []
    async with anyio.create_task_group() as tg:

        async def open_b() -> None:
            opened.append(await b.open("doc"))

        tg.start_soon(open_b)
        await loading.wait()
        store.load = load  # type: ignore[method-assign]
        room_a.receive(ada, SyncUpdate(text_update("while loading")))
        room_a.flush()
        if cluster.kind != "local":  # delivered into B's early queue, not healed
            await until(lambda: bool(b._early.get("doc")))
        release.set()
    assert content(opened[0]) == "while loading"


async def test_a_node_unsubscribes_from_what_it_unloads(cluster: Cluster) -> None:
    a = await cluster.node()
    await a.open("doc")
    bus = a.bus
    assert isinstance(bus, LocalBus | NetworkBus)
    assert bus._subscribers["doc"] == [a]
    a.sweep(now=10**9, now_ms=0, timeout_ms=1)  # empty for ever: unloaded
    assert "doc" not in a.rooms
    assert "doc" not in bus._subscribers


# -- the network buses: what they lose is healed ---------------------------------------


async def test_an_update_the_bus_lost_is_healed_by_the_state_exchange(network: Cluster) -> None:
    a = await network.node(bus_sync_interval=0.2)
    b = await network.node(bus_sync_interval=0.2)
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    publish, room_a._publish = room_a._publish, None  # the bus loses what A publishes
    doc: Doc = Doc()
    room_a.receive(ada, SyncUpdate(text_update("lost once", doc)))
    await until(lambda: content(room_b) == "lost once")
    before = doc.get_state()
    del doc.get("content", type=Text)[0:5]  # deletes only: the state vector stays the same
    room_a.receive(ada, SyncUpdate(doc.get_update(before)))
    await until(lambda: content(room_b) == "once")
    room_a._publish = publish


async def test_a_node_that_reconnects_catches_up_on_what_it_missed(network: Cluster) -> None:
    a, b = await network.node(), await network.node()
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    bus_b = network.buses[b.node_id]
    bus_b.drop_connection("test")  # A's edit is published while B is away
    room_a.receive(ada, SyncUpdate(text_update("while B was away")))
    room_a.flush()
    await until(lambda: content(room_b) == "while B was away")  # after B reconnected
    assert metrics.BUS_RECONNECTS.labels(bus=network.kind)._value.get() >= 1


async def test_a_node_that_opens_a_document_sees_the_presence_already_there(
    network: Cluster,
) -> None:
    a, b = await network.node(), await network.node()
    room_a = await a.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    room_a.receive(ada, AwarenessUpdate(awareness_of(42, {"user": {"name": "Ada"}})))
    room_b = await b.open("doc")  # asks the others for their connections' presence
    await until(lambda: 42 in room_b.awareness.states)


async def test_a_node_that_stops_heartbeating_has_its_clients_presence_removed(
    network: Cluster,
) -> None:
    a, b = await network.node(), await network.node(bus_heartbeat=60)
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada, bob = FakePeer(), FakePeer()
    room_a.join(ada)
    room_b.join(bob)
    room_a.receive(ada, AwarenessUpdate(awareness_of(42, {"user": {"name": "Ada"}})))
    room_b.receive(bob, AwarenessUpdate(awareness_of(7, {"user": {"name": "Bob"}})))
    await until(lambda: 42 in room_b.awareness.states and 7 in room_a.awareness.states)
    bus_b = network.buses[b.node_id]
    bus_b.check_heartbeats(time.monotonic() + 3 * bus_b.heartbeat + 1)  # A fell silent
    assert 42 not in room_b.awareness.states
    assert 7 in room_b.awareness.states  # B's own stay
    bob.frames.clear()
    room_b.receive(bob, AwarenessUpdate(awareness_of(7, {"user": {"name": "Bob"}})))
    assert 42 not in room_b.awareness.states


async def test_a_node_that_leaves_takes_its_clients_presence_with_it(network: Cluster) -> None:
    # Heartbeats 60 s apart: only the goodbye can explain a removal within the test.
    b = await network.node(bus_heartbeat=60)
    room_b = await b.open("doc")
    async with AsyncExitStack() as stack:
        inner = Cluster(network.kind, network.store, stack)
        inner.prefix = network.prefix
        a = await inner.node(bus_heartbeat=60)
        room_a = await a.open("doc")
        ada = FakePeer()
        room_a.join(ada)
        room_a.receive(ada, AwarenessUpdate(awareness_of(42, {"user": {"name": "Ada"}})))
        await until(lambda: 42 in room_b.awareness.states)
    # A's manager and bus are gone, its FakePeer never left: the goodbye removed it.
    await until(lambda: 42 not in room_b.awareness.states)


async def test_garbage_on_the_bus_is_dropped_and_counted_and_delivery_goes_on(
    network: Cluster,
) -> None:
    a, b = await network.node(), await network.node()
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    bus_a = network.buses[a.node_id]
    dropped = metrics.BUS_DROPPED.labels(bus=network.kind, reason="malformed")
    before = dropped._value.get()
    channel = bus_a.channel("doc")
    other = Envelope(Kind.UPDATE, "intruder", "other doc", text_update("misfiled"))
    for garbage in (
        b"",
        b"\x07garbage",
        b"\x01\x01\x05\x00\x00\x03ab",  # lengths past the end
        encode_envelope(other),  # a document that is not this channel's
        encode_envelope(Envelope(Kind.FRAGMENT, "intruder", "doc", b"\x00")),  # truncated
    ):
        await bus_a.transport.publish(channel, garbage)
    # Well formed, from no node anyone knows, but not an update: logged, not raised.
    bogus = Envelope(Kind.UPDATE, "intruder", "doc", b"\xff\xff\xff")
    await bus_a.transport.publish(channel, encode_envelope(bogus))
    bogus_state = Envelope(Kind.SYNC, "intruder", "doc", b"\x00\x01")
    await bus_a.transport.publish(channel, encode_envelope(bogus_state))
    room_a.receive(ada, SyncUpdate(text_update("still delivered")))
    room_a.flush()
    await until(lambda: content(room_b) == "still delivered")
    # Each node read each of the five, and counts it.
    await until(lambda: dropped._value.get() - before >= 10)


async def test_an_update_larger_than_the_broker_takes_crosses_in_fragments(
    network: Cluster,
) -> None:
    a, b = await network.node(), await network.node()
    for bus in network.buses.values():
        bus.transport.max_payload = 4096  # NATS' default is 1 MB; a paste can be more
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    big = "".join(f"line {i}: some pasted text\n" for i in range(3000))  # ~80 KB
    room_a.receive(ada, SyncUpdate(text_update(big)))
    room_a.flush()
    await until(lambda: content(room_b) == big)
    assert network.buses[b.node_id]._partials == {}  # nothing left half assembled


async def test_presence_from_the_bus_counts_toward_the_rooms_awareness_cap(
    cluster: Cluster,
) -> None:
    a = await cluster.node()
    b = await cluster.node(max_awareness_bytes=1024)
    room_a, room_b = await a.open("doc"), await b.open("doc")
    ada = FakePeer()
    room_a.join(ada)
    for i in range(3):  # about 430 bytes each: past B's cap, not A's
        state = {"user": {"name": f"user {i}", "note": "x" * 400}}
        room_a.receive(ada, AwarenessUpdate(awareness_of(100 + i, state)))
    await until(lambda: len(room_b.awareness.states) == 3)
    room_a.receive(ada, AwarenessUpdate(awareness_of(999, {"user": {"name": "one more"}})))
    room_a.receive(ada, SyncUpdate(text_update("after it")))  # same channel, in order
    room_a.flush()
    await until(lambda: content(room_b) == "after it")
    assert 999 in room_a.awareness.states
    assert 999 not in room_b.awareness.states
