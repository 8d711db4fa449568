"""Rooms without ASGI: fake peers that record frames, a real SQLite log in memory."""

from __future__ import annotations

import gc
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from pycrdt import Awareness, Doc, Text, write_message, write_var_uint

from collab.auth import Access
from collab.config import Settings
from collab.errors import CloseCode, InvalidUpdateError, RemoteProtocolError
from collab.hooks import ANONYMOUS_WRITER, Identity
from collab.protocol import (
    Ack,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    decode_state_vector,
)
from collab.rooms import Room, RoomManager, StaleClientError, build_doc
from collab.storage.base import DocVersion, StoredDoc
from collab.storage.sqlite import SQLiteLog, append_updates, connect
from collab.transport.peer import WebSocketPeer


@dataclass(eq=False)
class FakePeer:
    wants_ack: bool = False
    frames: list[bytes] = field(default_factory=list)
    identity: Identity = ANONYMOUS_WRITER
    label: str = "fake"
    address: str = "127.0.0.1"

    closed: tuple[int, str] | None = None

    def send_nowait(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        self.closed = (int(code), reason)

    def messages(self) -> list[object]:
        return [decode(f) for f in self.frames]


def text_update(text: str, doc: Doc | None = None) -> bytes:
    doc = doc or Doc()
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update(before)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteLog]:
    async with SQLiteLog(tmp_path / "collab.db", commit_delay=0.001) as log:
        yield log


async def test_join_sends_sync_step_1(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    peer = FakePeer()
    frames = room.join(peer)
    assert [decode(f) for f in frames] == [SyncStep1(room.doc.get_state())]


async def test_update_is_applied_stored_and_sent_to_the_others_only(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    update = text_update("hi")
    assert room.receive(a, SyncUpdate(update)) == []
    assert str(room.doc.get("content", type=Text)) == "hi"
    assert b.messages() == [SyncUpdate(update)]
    assert a.messages() == []
    await store.flush()
    assert (await store.load("r")).updates == [update]


async def test_step_1_gets_the_missing_updates(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a = FakePeer()
    room.join(a)
    room.receive(a, SyncUpdate(text_update("content")))
    (reply,) = room.receive(FakePeer(), SyncStep1(b"\x00"))
    message = decode(reply)
    assert isinstance(message, SyncStep2)
    fresh = Doc()
    fresh.apply_update(message.update)
    assert str(fresh.get("content", type=Text)) == "content"


async def test_invalid_update_changes_nothing(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    room.receive(a, SyncUpdate(text_update("ok")))
    before = room.doc.get_state()
    with pytest.raises(InvalidUpdateError) as info:
        room.receive(a, SyncUpdate(b"\x01\x01\xff\xff"))
    assert info.value.close_code == CloseCode.INVALID_PAYLOAD
    assert room.doc.get_state() == before
    assert len(b.messages()) == 1
    await store.flush()
    assert len((await store.load("r")).updates) == 1


def awareness_payload(client_doc: Doc, state: dict[str, object] | None) -> bytes:
    awareness = Awareness(client_doc)
    awareness.set_local_state(state)
    return awareness.encode_awareness_update([client_doc.client_id])


async def test_awareness_reaches_everyone_and_leaves_with_its_connection(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    client = Doc()
    room.receive(a, AwarenessUpdate(awareness_payload(client, {"user": {"name": "Ada"}})))
    # The sender hears its own state too (keeps y-websocket's 30 s timer alive).
    assert len(a.messages()) == len(b.messages()) == 1
    assert room.awareness.states[client.client_id] == {"user": {"name": "Ada"}}
    (query_reply,) = room.receive(b, QueryAwareness())
    assert isinstance(decode(query_reply), AwarenessUpdate)

    room.leave(a)
    assert client.client_id not in room.awareness.states
    removal = b.messages()[-1]
    assert isinstance(removal, AwarenessUpdate)
    observer = Awareness(Doc())
    observer.apply_awareness_update(b.messages()[0].payload, "test")  # type: ignore[attr-defined]
    observer.apply_awareness_update(removal.payload, "test")
    assert client.client_id not in observer.states


async def test_new_peer_gets_current_awareness(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a = FakePeer()
    room.join(a)
    room.receive(a, AwarenessUpdate(awareness_payload(Doc(), {"cursor": 3})))
    frames = [decode(f) for f in room.join(FakePeer())]
    assert isinstance(frames[0], SyncStep1) and isinstance(frames[1], AwarenessUpdate)


def awareness_entries(*entries: tuple[int, int, str]) -> bytes:
    """An awareness update, written by hand: (client id, clock, JSON state or "")."""
    out = bytearray(write_var_uint(len(entries)))
    for client_id, clock, state in entries:
        out += write_var_uint(client_id) + write_var_uint(clock) + write_message(state.encode())
    return bytes(out)


def awareness_of(frames: Sequence[object]) -> dict[int, tuple[int, object]]:
    """What an observer holds after applying these awareness frames: {client: (clock, state)}."""
    observer = Awareness(Doc())
    for message in frames:
        assert isinstance(message, AwarenessUpdate)
        observer.apply_awareness_update(message.payload, "test")
    return {
        client: (meta["clock"], observer.states.get(client))
        for client, meta in observer.meta.items()
        if client != observer.client_id
    }


async def test_an_awareness_update_is_relayed_as_it_came_but_for_its_clocks(
    store: SQLiteLog,
) -> None:
    # The JSON is passed on byte for byte (no round trip per cursor move); the clocks are
    # shifted by the room's base (test_awareness_comes_back_at_once_after_a_reconnect),
    # and the sender hears its own clocks back.
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    base = room._clock_base
    payload = awareness_entries((7, 1, '{"cursor": 1}'), (8, 4, '{"cursor":  2}'))
    room.receive(a, AwarenessUpdate(payload))
    shifted = awareness_entries((7, 1 + base, '{"cursor": 1}'), (8, 4 + base, '{"cursor":  2}'))
    assert b.messages() == [AwarenessUpdate(shifted)]
    assert a.messages()[-1] == AwarenessUpdate(payload)


async def test_an_awareness_update_with_an_outdated_entry_is_re_encoded(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    base = room._clock_base
    room.receive(a, AwarenessUpdate(awareness_entries((7, 5, '{"cursor": 1}'))))
    mixed = awareness_entries((7, 2, '{"cursor": 99}'), (8, 1, '{"cursor": 2}'))
    room.receive(a, AwarenessUpdate(mixed))  # client 7's entry is older than what we hold
    relayed = b.messages()[-1]
    assert awareness_of([relayed]) == {8: (1 + base, {"cursor": 2})}  # only what took effect
    backwards = awareness_entries((9, 2, '{"a": 2}'), (9, 1, '{"a": 1}'))
    room.receive(a, AwarenessUpdate(backwards))  # its second entry is outdated by its first
    assert awareness_of([b.messages()[-1]]) == {9: (2 + base, {"a": 2})}


async def test_awareness_comes_back_at_once_after_a_reconnect(store: SQLiteLog) -> None:
    # The stock client re-announces itself with the clock it had; peers that saw its
    # state, or its removal, would ignore that for 15 s. The server moves it past them.
    room = Room("r", Doc(), store)
    watcher, tab = FakePeer(), FakePeer()
    room.join(watcher)
    room.join(tab)
    seen: Awareness = Awareness(Doc())  # the watcher's view, as y-protocols keeps it

    def relay() -> None:
        for message in watcher.messages():
            assert isinstance(message, AwarenessUpdate)
            seen.apply_awareness_update(message.payload, origin=None)
        watcher.frames.clear()

    watcher.frames.clear()
    room.receive(tab, AwarenessUpdate(awareness_entries((7, 4, '{"name": "Ada"}'))))
    relay()
    assert seen.states[7] == {"name": "Ada"}
    room.leave(tab)  # a blip: the connection drops, its state is removed everywhere
    relay()
    assert 7 not in seen.states
    back = FakePeer()
    room.join(back)
    room.receive(back, AwarenessUpdate(awareness_entries((7, 4, '{"name": "Ada"}'))))
    relay()
    assert seen.states[7] == {"name": "Ada"}  # at once, not at the next renewal
    room.receive(back, AwarenessUpdate(awareness_entries((7, 6, '{"name": "Ada", "x": 1}'))))
    relay()
    assert seen.states[7] == {"name": "Ada", "x": 1}  # and it goes on from there


async def test_joining_peers_see_the_awareness_of_now(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a = FakePeer()
    room.join(a)
    room.receive(a, AwarenessUpdate(awareness_entries((7, 1, '{"cursor": 1}'))))
    first = [decode(f) for f in room.join(FakePeer())][1:]
    # clocks as relayed (shifted by the room's base), each moved one on for a joiner
    # (Room._reannounce), and what follows relayed past that
    base = room._clock_base
    assert awareness_of(first) == {7: (2 + base, {"cursor": 1})}
    room.receive(a, AwarenessUpdate(awareness_entries((7, 2, '{"cursor": 5}'))))
    room.receive(a, AwarenessUpdate(awareness_entries((8, 1, '{"cursor": 6}'))))
    later = [decode(f) for f in room.join(FakePeer())][1:]
    assert awareness_of(later) == {7: (4 + base, {"cursor": 5}), 8: (2 + base, {"cursor": 6})}
    (query_reply,) = room.receive(a, QueryAwareness())
    assert awareness_of([decode(query_reply)]) == awareness_of(later)
    room.leave(a)  # takes 7 and 8 with it
    assert [decode(f) for f in room.join(FakePeer())][1:] == []


async def test_stale_awareness_expires(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a, b = FakePeer(), FakePeer()
    room.join(a)
    room.join(b)
    client = Doc()
    room.receive(a, AwarenessUpdate(awareness_payload(client, {"x": 1})))
    now_ms = int(time.time() * 1000)
    room.expire_awareness(now_ms, 30_000)
    assert client.client_id in room.awareness.states
    room.expire_awareness(now_ms + 30_001, 30_000)
    assert client.client_id not in room.awareness.states
    assert not room.peers[a]


async def test_clients_that_left_long_ago_are_forgotten(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    stays = FakePeer()
    room.join(stays)
    for i in range(50):  # page loads: join, announce, leave
        tab = FakePeer()
        room.join(tab)
        room.receive(tab, AwarenessUpdate(awareness_entries((1000 + i, 1, '{"n": 1}'))))
        room.leave(tab)
    assert len(room.awareness.meta) >= 50  # removed, clock kept (as y-protocols does)
    now_ms = int(time.time() * 1000)
    room.expire_awareness(now_ms, 30_000)
    assert len(room.awareness.meta) >= 50  # not yet: a late update could still come
    room.expire_awareness(now_ms + 30_001, 30_000)
    assert set(room.awareness.meta) == {room.awareness.client_id}  # only the server's own


async def test_malformed_awareness_is_a_protocol_error(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    a = FakePeer()
    room.join(a)
    bad = b"\x01\x05\x01\x03{x}"
    with pytest.raises(Exception) as info:
        room.receive(a, AwarenessUpdate(bad))
    assert getattr(info.value, "close_code", None) == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "payload",
    [
        awareness_entries((1, 1, '{"ok": 1}'), (2, 1, "{bad json")),
        awareness_entries((1, 1, '{"ok": 1}'), (2, 1, '{"x": NaN}')),  # JSON.parse throws
        # two entries announced, the second without its state (pycrdt reads: removal)
        b"\x02" + awareness_entries((1, 1, '{"ok": 1}'))[1:] + write_var_uint(2) + b"\x01",
        # a state length past the end (pycrdt reads what is there)
        awareness_entries((1, 1, '{"x": 1}'))[:-9] + b"\x32" + b'{"x": 1}',
    ],
    ids=["bad-json", "nan", "missing-state", "overlong-state"],
)
async def test_a_bad_awareness_update_changes_nothing_and_reaches_no_one(
    store: SQLiteLog, payload: bytes
) -> None:
    room = Room("r", Doc(), store)
    sender, watcher = FakePeer(), FakePeer()
    room.join(sender)
    room.join(watcher)
    with pytest.raises(RemoteProtocolError):
        room.receive(sender, AwarenessUpdate(payload))
    assert room.awareness.states == {}  # not even the good first entry
    assert watcher.frames == []
    assert room.peers[sender] == set()


async def test_bytes_after_the_last_awareness_entry_are_not_relayed(store: SQLiteLog) -> None:
    room = Room("r", Doc(), store)
    sender, watcher = FakePeer(), FakePeer()
    room.join(sender)
    room.join(watcher)
    entries = awareness_entries((7, 1, '{"cursor": 1}'))
    room.receive(sender, AwarenessUpdate(entries + b"junk"))
    # relayed with its clock shifted, and without the junk
    shifted = awareness_entries((7, 1 + room._clock_base, '{"cursor": 1}'))
    assert watcher.messages() == [AwarenessUpdate(shifted)]


async def test_ack_peer_hears_the_durable_state_after_commit(tmp_path: Path) -> None:
    async with (
        SQLiteLog(tmp_path / "c.db", commit_delay=0.5) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("acked")
        writer, acker = FakePeer(), FakePeer(wants_ack=True)
        room.join(writer)
        join_frames = [decode(f) for f in room.join(acker)]
        assert Ack(room.doc.get_state(), 0) in join_frames  # nothing pending: all durable
        room.receive(writer, SyncUpdate(text_update("x")))
        await anyio.wait_all_tasks_blocked()  # the flusher hands the batch to the store
        assert not any(isinstance(m, Ack) for m in acker.messages())
        await store.flush()
        acks = [m for m in acker.messages() if isinstance(m, Ack)]
        assert acks == [Ack(room.doc.get_state(), 0)]  # the acker itself sent no update


def acks_of(peer: FakePeer) -> list[tuple[dict[int, int], int]]:
    return [
        (decode_state_vector(m.state_vector), m.updates)
        for m in peer.messages()
        if isinstance(m, Ack)
    ]


async def test_a_delete_only_edit_is_acknowledged_by_count_once_committed(
    tmp_path: Path,
) -> None:
    async with (
        SQLiteLog(tmp_path / "c.db", commit_delay=0.5) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("deletes")
        writer, other = FakePeer(wants_ack=True), FakePeer(wants_ack=True)
        room.join(writer)
        room.join(other)
        client = Doc()
        room.receive(writer, SyncUpdate(text_update("abc", client)))
        await anyio.wait_all_tasks_blocked()
        await store.flush()
        inserted = decode_state_vector(room.doc.get_state())
        assert acks_of(writer)[-1] == (inserted, 1)
        assert acks_of(other)[-1] == (inserted, 0)
        writer.frames.clear()
        other.frames.clear()

        before = client.get_state()
        del client.get("content", type=Text)[0:1]
        room.receive(writer, SyncUpdate(client.get_update(before)))
        await anyio.wait_all_tasks_blocked()
        assert acks_of(writer) == []  # appended, not committed: not saved yet
        assert str(room.doc.get("content", type=Text)) == "bc"
        await store.flush()
        # the state vector did not move; the count did, for the sender only
        assert acks_of(writer) == [(inserted, 2)]
        assert acks_of(other) == [(inserted, 0)]
        stored = Doc()
        for update in (await store.load("deletes")).updates:
            stored.apply_update(update)
        assert str(stored.get("content", type=Text)) == "bc"


async def test_an_update_that_changes_nothing_is_acknowledged_with_what_is_durable(
    tmp_path: Path,
) -> None:
    async with (
        SQLiteLog(tmp_path / "c.db", commit_delay=0.5) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("repeat")
        writer = FakePeer(wants_ack=True)
        room.join(writer)
        update = text_update("once")
        room.receive(writer, SyncUpdate(update))
        await anyio.wait_all_tasks_blocked()
        # the same bytes again, before the first commit: durable with it, not before
        assert room.receive(writer, SyncUpdate(update)) == []
        assert acks_of(writer) == []
        await store.flush()
        assert [count for _, count in acks_of(writer)] == [2]
        # and once everything is durable, at once, in the reply
        (reply,) = room.receive(writer, SyncStep2(update))
        assert decode(reply) == Ack(room.doc.get_state(), 3)


async def test_refused_updates_of_a_read_only_peer_are_never_counted(
    tmp_path: Path,
) -> None:
    async with (
        SQLiteLog(tmp_path / "c.db", commit_delay=0.01) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("viewer")
        viewer = FakePeer(wants_ack=True, identity=Identity(Access.READ))
        writer = FakePeer()
        room.join(viewer)
        room.receive(viewer, SyncUpdate(text_update("refused")))
        room.receive(writer, SyncUpdate(text_update("kept")))
        await anyio.wait_all_tasks_blocked()
        await store.flush()
        assert acks_of(viewer)[-1][1] == 0


async def test_updates_of_one_turn_are_merged_into_one_frame_and_one_row(
    store: SQLiteLog,
) -> None:
    async with RoomManager(store, Settings()) as manager:
        room = await manager.open("busy")
        a, b, watcher = FakePeer(), FakePeer(), FakePeer()
        for peer in (a, b, watcher):
            room.join(peer)
        doc_a, doc_b = Doc(), Doc()
        for i in range(3):
            room.receive(a, SyncUpdate(text_update(f"a{i}", doc_a)))
            room.receive(b, SyncUpdate(text_update(f"b{i}", doc_b)))
        assert watcher.messages() == []  # nothing sent before the end of the turn
        await anyio.wait_all_tasks_blocked()
        (to_watcher,) = watcher.messages()
        (to_a,) = a.messages()
        (to_b,) = b.messages()
        replica = Doc()
        replica.apply_update(to_watcher.update)  # type: ignore[attr-defined]
        # state vectors list clients in hash order: compare them decoded
        assert decode_state_vector(replica.get_state()) == decode_state_vector(room.doc.get_state())
        for doc, frame in ((doc_a, to_a), (doc_b, to_b)):
            doc.apply_update(frame.update)  # type: ignore[attr-defined]
            assert str(doc.get("content", type=Text)) == str(room.doc.get("content", type=Text))
        await store.flush()
        assert len((await store.load("busy")).updates) == 1  # one merged row


async def test_awareness_of_one_turn_reaches_each_peer_as_one_frame_of_the_latest_states(
    store: SQLiteLog,
) -> None:
    # A cursor storm: relayed one frame per move, every peer would get N frames per turn.
    async with RoomManager(store, Settings()) as manager:
        room = await manager.open("storm")
        a, b, watcher = FakePeer(), FakePeer(), FakePeer()
        for peer in (a, b, watcher):
            room.join(peer)
        base = room._clock_base
        for clock in (1, 2, 3):
            room.receive(a, AwarenessUpdate(awareness_entries((7, clock, f'{{"at": {clock}}}'))))
            room.receive(b, AwarenessUpdate(awareness_entries((8, clock, f'{{"at": {-clock}}}'))))
        room.receive(b, SyncUpdate(text_update("typed")))
        assert watcher.messages() == []  # nothing sent before the end of the turn
        await anyio.wait_all_tasks_blocked()
        update, presence = watcher.messages()
        assert isinstance(update, SyncUpdate)  # the text first, then cursors that point into it
        assert awareness_of([presence]) == {7: (3 + base, {"at": 3}), 8: (3 + base, {"at": -3})}
        # Each sender hears the latest of its own entries with its own clocks.
        (_, to_a) = a.messages()  # Bob's text first
        assert awareness_of([to_a]) == {7: (3, {"at": 3}), 8: (3 + base, {"at": -3})}
        (to_b,) = b.messages()
        assert awareness_of([to_b]) == {7: (3 + base, {"at": 3}), 8: (3, {"at": -3})}


async def test_a_sender_is_not_sent_back_what_it_alone_wrote(store: SQLiteLog) -> None:
    async with RoomManager(store, Settings()) as manager:
        room = await manager.open("two")
        a, b, c = FakePeer(), FakePeer(), FakePeer()
        for peer in (a, b, c):
            room.join(peer)
        doc_a = Doc()
        room.receive(a, SyncUpdate(text_update("x", doc_a)))
        room.receive(a, SyncUpdate(text_update("y", doc_a)))
        await anyio.wait_all_tasks_blocked()
        assert a.messages() == []  # the only writer of the turn: nothing comes back
        assert len(b.messages()) == len(c.messages()) == 1
        from_b = text_update("z")
        room.receive(a, SyncUpdate(text_update("w", doc_a)))
        room.receive(b, SyncUpdate(from_b))
        await anyio.wait_all_tasks_blocked()
        assert a.messages()[-1] == SyncUpdate(from_b)  # the one update of the others, as is


async def test_slow_peer_is_closed_and_others_carry_on() -> None:
    never = anyio.Event()

    async def stuck_send(message: object) -> None:
        await never.wait()

    slow = WebSocketPeer(stuck_send, queue_size=3, wants_ack=False, label="slow")
    for _i in range(1 + 3):  # one write in flight (stalled), three queued behind it
        slow.send_nowait(b"x")
    assert slow.close_code is None
    slow.send_nowait(b"one too many")
    assert slow.close_code == CloseCode.TOO_SLOW
    slow.stop_writing()


class CountingStore(SQLiteLog):
    loads = 0

    async def load(self, room: str) -> StoredDoc:
        type(self).loads += 1
        await anyio.sleep(0.2)
        return await super().load(room)


async def test_a_document_is_loaded_once_however_many_peers_arrive(tmp_path: Path) -> None:
    path = tmp_path / "collab.db"
    async with SQLiteLog(path) as log:
        log.append_nowait("busy", text_update("stored text"))
    async with CountingStore(path) as store, RoomManager(store, Settings()) as manager:
        rooms: list[Room] = []

        async def open_room() -> None:
            room = await manager.open("busy")
            # Never handed out before the load finished: the text is there.
            assert str(room.doc.get("content", type=Text)) == "stored text"
            rooms.append(room)

        async with anyio.create_task_group() as tg:
            for _ in range(25):
                tg.start_soon(open_room)
    assert CountingStore.loads == 1
    assert len({id(r) for r in rooms}) == 1


async def test_idle_room_is_unloaded_and_reloads_from_the_store(tmp_path: Path) -> None:
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0.5) as store:
        manager = RoomManager(store, Settings(idle_unload=1.0))
        room = await manager.open("idle")
        peer = FakePeer()
        room.join(peer)
        room.receive(peer, SyncUpdate(text_update("kept")))
        room.leave(peer)
        manager.sweep(time.monotonic() + 0.5, 0, 30_000)
        assert "idle" in manager.rooms
        manager.sweep(time.monotonic() + 1.5, 0, 30_000)
        assert "idle" not in manager.rooms
        # The update may still be queued (commit_delay 0.5 s): the reload waits for it.
        again = await manager.open("idle")
        assert again is not room
        assert str(again.doc.get("content", type=Text)) == "kept"


async def test_room_with_peers_is_never_unloaded(store: SQLiteLog) -> None:
    manager = RoomManager(store, Settings(idle_unload=0))
    room = await manager.open("busy")
    room.join(FakePeer())
    manager.sweep(time.monotonic() + 3600, 0, 30_000)
    assert manager.rooms["busy"] is room


def retired_room(store: SQLiteLog, old_doc: Doc) -> Room:
    """A room whose document was deleted after ``old_doc``'s history was written."""
    return Room("r", Doc(), store, epoch=1, retired_state_vectors=[old_doc.get_state()])


async def test_client_with_retired_history_is_stale(store: SQLiteLog) -> None:
    old = Doc()
    text_update("deleted text", old)
    room = retired_room(store, old)
    with pytest.raises(StaleClientError) as info:
        room.receive(FakePeer(), SyncStep1(old.get_state()))
    assert info.value.close_code == CloseCode.STALE_EPOCH


async def test_update_from_a_retired_client_is_refused_and_not_stored(store: SQLiteLog) -> None:
    old = Doc()
    text_update("deleted text", old)
    room = retired_room(store, old)
    peer = FakePeer()
    room.join(peer)
    # Its sync step 2 (what it thinks the server lacks) is the old history.
    with pytest.raises(StaleClientError):
        room.receive(peer, SyncStep2(old.get_update()))
    assert str(room.doc.get("content", type=Text)) == ""
    await store.flush()
    assert (await store.load("r")).updates == []


async def test_fresh_client_offline_edits_are_not_stale(store: SQLiteLog) -> None:
    old = Doc()
    text_update("deleted text", old)
    room = retired_room(store, old)
    fresh = Doc()  # a reloaded page: new client id
    peer = FakePeer()
    room.join(peer)
    assert room.receive(peer, SyncStep1(fresh.get_state()))
    room.receive(peer, SyncUpdate(text_update("written offline", fresh)))
    assert str(room.doc.get("content", type=Text)) == "written offline"


async def test_room_deleted_behind_its_back_closes_its_peers(tmp_path: Path) -> None:
    from collab.storage.sqlite import connect, delete_doc

    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0) as store, RoomManager(store, Settings()) as manager:
        room = await manager.open("doomed")
        peer = FakePeer()
        room.join(peer)
        room.receive(peer, SyncUpdate(text_update("soon gone")))
        room.flush()
        await store.flush()
        db = connect(path)
        delete_doc(db, "doomed")
        db.close()
        await manager.poll_versions()
        assert peer.closed is not None and peer.closed[0] == CloseCode.STALE_EPOCH
        assert "doomed" not in manager.rooms
        again = await manager.open("doomed")
        assert str(again.doc.get("content", type=Text)) == ""
        assert again.epoch == room.epoch + 1


async def test_a_poll_does_not_retire_a_room_loaded_after_its_snapshot(store: SQLiteLog) -> None:
    # poll_versions awaits (a catch-up load of "a") between reading versions and acting on
    # them. "b" is deleted and reloaded at its new epoch meanwhile: the snapshot's old epoch
    # is about the room it replaced, not about the fresh one.
    rooms = RoomManager(store, Settings(idle_unload=1000))  # not entered: no sweeper
    await rooms.open("a")
    old_room = await rooms.open("b")
    old_peer, new_peer = FakePeer(), FakePeer()
    old_room.join(old_peer)
    snapshot = {"a": DocVersion(0, 1), "b": DocVersion(0, 0)}  # "a" had an import

    async def versions(names: Sequence[str]) -> dict[str, DocVersion]:
        return {name: snapshot[name] for name in names}

    load = store.load

    async def load_and_meanwhile(name: str) -> StoredDoc:
        if name == "a":
            rooms._retire(old_room)  # as on_stale does when "b" is deleted
            fresh = await rooms.open("b")
            fresh.epoch = 1
            fresh.join(new_peer)
        return await load(name)

    store.versions = versions  # type: ignore[method-assign]
    store.load = load_and_meanwhile  # type: ignore[method-assign]
    await rooms.poll_versions()
    assert old_peer.closed is not None and old_peer.closed[0] == CloseCode.STALE_EPOCH
    assert new_peer.closed is None
    assert rooms.rooms["b"].epoch == 1


async def test_an_update_that_changes_nothing_is_neither_stored_nor_relayed(
    store: SQLiteLog,
) -> None:
    room = Room("r", Doc(), store)
    client: Doc = Doc()
    text = client.get("content", type=Text)
    text.insert(0, "hello world")
    del text[0:6]
    writer, watcher = FakePeer(), FakePeer()
    room.join(writer)
    room.join(watcher)
    room.receive(writer, SyncUpdate(client.get_update()))
    room.flush()
    assert len(watcher.frames) == 1
    for _ in range(3):  # the client reconnects, in sync: its step 2 is its delete set
        tab = FakePeer()
        room.join(tab)
        room.receive(tab, SyncStep2(client.get_update(room.doc.get_state())))
        room.flush()
        room.leave(tab)
    await store.flush()
    assert len((await store.load("r")).updates) == 1
    assert len(watcher.frames) == 1


def two_edits(typed: str, then: Callable[[Text], None]) -> tuple[bytes, bytes, str]:
    """One client's update typing ``typed``, another client's next update (``then``,
    which builds on the first), and the text after both.

    Two clients: the second update depends on the first through its origins, which is
    how an update honestly waits as pending. One client's own clocks never skip on one
    connection, and an update that skips them is refused (collab.structs.ClockGapError).
    """
    author: Doc = Doc()
    author.get("content", type=Text).insert(0, typed)
    first = author.get_update()
    editor: Doc = Doc()
    editor.apply_update(first)
    before = editor.get_state()
    text = editor.get("content", type=Text)
    then(text)
    return first, editor.get_update(before), str(text)


async def test_an_update_left_pending_is_stored_and_relayed_once_integrated(
    store: SQLiteLog,
) -> None:
    # Its dependency has not arrived: the doc holds it as pending, and nothing of it is
    # stored or relayed until the dependency integrates it (issue 13: what is stored and
    # relayed is what the doc integrated, never a client's bytes as they came).
    def insert_and_delete(text: Text) -> None:  # inserts after, and deletes from, "ab"
        text.insert(2, "cd")
        del text[0:1]

    first, second, _ = two_edits("ab", insert_and_delete)
    room = Room("r", Doc(), store)
    writer, watcher = FakePeer(), FakePeer()
    room.join(writer)
    room.join(watcher)
    watcher.frames.clear()
    room.receive(writer, SyncUpdate(second))
    room.flush()
    assert watcher.messages() == []
    await store.flush()
    assert (await store.load("r")).updates == []
    room.receive(writer, SyncUpdate(first))
    room.flush()
    assert str(room.doc.get("content", type=Text)) == "bcd"
    (relayed,) = watcher.messages()
    assert isinstance(relayed, SyncUpdate)
    assert str(build_doc("seen", [relayed.update]).get("content", type=Text)) == "bcd"
    await store.flush()
    stored = (await store.load("r")).updates
    assert str(build_doc("copy", stored).get("content", type=Text)) == "bcd"


async def test_a_deletion_of_text_not_yet_seen_is_still_stored_and_relayed(
    store: SQLiteLog,
) -> None:
    def delete(text: Text) -> None:  # no structs: a delete set only
        del text[0:1]

    first, deletion, _ = two_edits("ab", delete)
    room = Room("r", Doc(), store)
    writer, watcher = FakePeer(), FakePeer()
    room.join(writer)
    room.join(watcher)
    room.receive(writer, SyncUpdate(deletion))
    room.receive(writer, SyncUpdate(first))
    room.flush()
    assert str(room.doc.get("content", type=Text)) == "b"
    await store.flush()
    stored = (await store.load("r")).updates
    assert str(build_doc("copy", stored).get("content", type=Text)) == "b"


def dependent_updates() -> tuple[bytes, bytes, str]:
    """Two updates of one client, the second building on the first, and the final text."""
    return two_edits("hello ", lambda text: text.insert(6, "world"))


def synced_doc(room: Room) -> Doc:
    """A fresh client's doc after joining ``room``: its sync step 1 and the reply."""
    doc: Doc = Doc()
    peer = FakePeer()
    room.join(peer)
    (reply,) = room.receive(peer, SyncStep1(doc.get_state()))
    message = decode(reply)
    assert isinstance(message, SyncStep2)
    doc.apply_update(message.update)
    return doc


def relayed_to(peer: FakePeer, doc: Doc) -> Doc:
    """``doc`` with every update and sync step 2 ``peer`` was sent applied."""
    for message in peer.messages():
        if isinstance(message, (SyncUpdate, SyncStep2)):
            doc.apply_update(message.update)
    return doc


async def test_a_peer_joining_while_an_update_waits_for_its_dependency_gets_it(
    store: SQLiteLog,
) -> None:
    first, second, final = dependent_updates()
    room = Room("r", Doc(), store)
    writer, late = FakePeer(), FakePeer()
    room.join(writer)
    room.receive(writer, SyncUpdate(second))  # its dependency is late (another path)
    room.flush()
    room.join(late)
    late.frames.extend(room.receive(late, SyncStep1(b"\x00")))
    room.receive(writer, SyncUpdate(first))  # completes it: the whole of it is relayed
    room.flush()
    assert str(room.doc.get("content", type=Text)) == final
    assert str(relayed_to(late, Doc()).get("content", type=Text)) == final
    assert str(synced_doc(room).get("content", type=Text)) == final


async def test_pending_content_stored_before_is_passed_on_once_integrated(
    tmp_path: Path,
) -> None:
    # A log written before issue 13 may hold an update whose dependency never came: the
    # loaded doc holds it as pending, and it reaches the peers when it integrates.
    first, second, final = dependent_updates()
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0.001) as store:
        store.append_nowait("r", second)  # stored; its dependency never came
        await store.flush()
        async with RoomManager(store, Settings()) as manager:
            room = await manager.open("r")
            early = FakePeer()
            room.join(early)
            early.frames.extend(room.receive(early, SyncStep1(b"\x00")))
            room.receive(FakePeer(), SyncUpdate(first))
            room.flush()
            assert str(relayed_to(early, Doc()).get("content", type=Text)) == final
            assert str(synced_doc(room).get("content", type=Text)) == final


async def test_peers_of_a_room_the_store_refuses_are_closed_not_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0) as store:
        store.append_nowait("refused", text_update("stored before"))
        await store.flush()
    with sqlite3.connect(path) as raw:  # every later insert of the room fails for good
        raw.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON updates WHEN NEW.doc_id IN"
            " (SELECT id FROM documents WHERE name = 'refused')"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    async with (
        SQLiteLog(path, commit_delay=0.01) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("refused")
        writer = FakePeer(wants_ack=True)
        room.join(writer)
        room.receive(writer, SyncUpdate(text_update("lost")))
        with anyio.fail_after(5):
            while writer.closed is None:
                await anyio.sleep(0.01)
        assert writer.closed[0] == CloseCode.STORE_UNAVAILABLE
        assert not any(isinstance(m, Ack) for m in writer.messages())
        assert "refused" not in manager.rooms
        other = await manager.open("other")  # the rest of the server goes on
        other.receive(FakePeer(), SyncUpdate(text_update("kept")))
        other.flush()
        with anyio.fail_after(5):
            await store.flush()
        assert len((await store.load("other")).updates) == 1


async def test_catching_up_with_another_process_passes_on_pending_content(
    tmp_path: Path,
) -> None:
    first, second, final = dependent_updates()
    async with (
        SQLiteLog(tmp_path / "c.db", commit_delay=0.001) as store,
        RoomManager(store, Settings()) as manager,
    ):
        room = await manager.open("r")
        watcher = FakePeer()
        room.join(watcher)
        other_process = connect(tmp_path / "c.db")  # an import, say, with `second` only
        append_updates(other_process, [("r", second, time.time(), None)], external=True)
        other_process.close()
        await manager.poll_versions()
        room.receive(FakePeer(), SyncUpdate(first))  # the dependency arrives
        room.flush()
        assert str(room.doc.get("content", type=Text)) == final
        seen: Doc = Doc()
        for message in watcher.messages():
            if isinstance(message, SyncUpdate):
                seen.apply_update(message.update)
        assert str(seen.get("content", type=Text)) == final


async def test_an_unloaded_room_and_its_doc_are_freed(store: SQLiteLog) -> None:
    # The doc observer lives in yrs, where the garbage collector cannot see the cycle it
    # closes; a room dropped without Room.close() stayed in memory for good.
    manager = RoomManager(store, Settings(idle_unload=0))  # not entered: sweep by hand
    room = await manager.open("r")
    peer = FakePeer()
    room.join(peer)
    room.receive(peer, SyncUpdate(text_update("x" * 1000)))
    manager.flush_all()
    room.leave(peer)
    freed = weakref.ref(room)
    doc = weakref.ref(room.doc)
    del room
    manager.sweep(time.monotonic() + 1, int(time.time() * 1000), 30_000)
    assert "r" not in manager.rooms
    gc.collect()
    assert freed() is None
    assert doc() is None
