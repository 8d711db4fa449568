"""The bus seam: two RoomManagers on one LocalBus and one store behave as two nodes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Awareness, Doc, Text

from collab.bus import LocalBus
from collab.config import Settings
from collab.protocol import AwarenessUpdate, SyncUpdate
from collab.rooms import RoomManager
from collab.storage.base import StoredDoc
from collab.storage.sqlite import SQLiteLog
from tests.test_rooms import FakePeer, text_update

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteLog]:
    async with SQLiteLog(tmp_path / "collab.db", commit_delay=0.001) as log:
        yield log


def text_of(update: bytes) -> str:
    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))


async def test_an_update_accepted_on_one_node_reaches_the_other_and_is_stored_once(
    store: SQLiteLog,
) -> None:
    async with LocalBus() as bus:
        settings = Settings(idle_unload=1000)
        async with (
            RoomManager(store, settings, bus=bus) as a,
            RoomManager(store, settings, bus=bus) as b,
        ):
            room_a, room_b = await a.open("doc"), await b.open("doc")
            ada, bob = FakePeer(), FakePeer()
            room_a.join(ada)
            room_b.join(bob)
            ada.frames.clear()
            bob.frames.clear()
            room_a.receive(ada, SyncUpdate(text_update("hello")))
            room_a.flush()
            assert str(room_b.doc.get("content", type=Text)) == "hello"
            (relayed,) = bob.messages()
            assert isinstance(relayed, SyncUpdate) and text_of(relayed.update) == "hello"
            assert ada.messages() == []  # no echo, from its own node or the bus
            room_b.flush()  # B has nothing of its own to store
            await store.flush()
            stored = await store.load("doc")
    assert [text_of(u) for u in stored.updates] == ["hello"]


async def test_awareness_crosses_nodes_and_leaves_with_its_connection(store: SQLiteLog) -> None:
    async with LocalBus() as bus:
        settings = Settings(idle_unload=1000)
        async with (
            RoomManager(store, settings, bus=bus) as a,
            RoomManager(store, settings, bus=bus) as b,
        ):
            room_a, room_b = await a.open("doc"), await b.open("doc")
            ada, bob = FakePeer(), FakePeer()
            room_a.join(ada)
            room_b.join(bob)
            client: Awareness = Awareness(Doc(client_id=42))
            client.set_local_state({"user": {"name": "Ada"}})
            payload = client.encode_awareness_update([42])
            room_a.receive(ada, AwarenessUpdate(payload))
            assert room_b.awareness.states[42] == {"user": {"name": "Ada"}}
            assert any(isinstance(m, AwarenessUpdate) for m in bob.messages())
            room_a.leave(ada)
            assert 42 not in room_b.awareness.states
            last = bob.messages()[-1]
            assert isinstance(last, AwarenessUpdate)
            removed: Awareness = Awareness(Doc())
            removed.apply_awareness_update(last.payload, origin=None)
            assert 42 not in removed.states
            assert json.dumps(room_a.awareness.states) == json.dumps(room_b.awareness.states)


async def test_what_the_bus_delivers_while_a_node_loads_is_applied_after_the_load(
    store: SQLiteLog,
) -> None:
    async with LocalBus() as bus:
        settings = Settings(idle_unload=1000)
        async with (
            RoomManager(store, settings, bus=bus) as a,
            RoomManager(store, settings, bus=bus) as b,
        ):
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
            async with anyio.create_task_group() as tg:
                opened = []

                async def open_b() -> None:
                    opened.append(await b.open("doc"))

                tg.start_soon(open_b)
                await loading.wait()
                store.load = load  # type: ignore[method-assign]
                room_a.receive(ada, SyncUpdate(text_update("while loading")))
                room_a.flush()
                release.set()
            assert str(opened[0].doc.get("content", type=Text)) == "while loading"


async def test_a_node_unsubscribes_from_what_it_unloads(store: SQLiteLog) -> None:
    async with LocalBus() as bus:
        async with RoomManager(store, Settings(idle_unload=1000), bus=bus) as a:
            await a.open("doc")
            assert bus._subscribers["doc"] == [a]
            a.sweep(now=10**9, now_ms=0, timeout_ms=1)  # empty for ever: unloaded
            assert "doc" not in a.rooms
            assert "doc" not in bus._subscribers
