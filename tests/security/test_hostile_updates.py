"""Hostile updates against a room: whatever the bytes, the room stays whole.

Invariants checked after every input: only RemoteProtocolError comes out (a close code
for the sender, never a traceback); a refused update leaves the document exactly as it
was (its encoding, its text, what is queued for the store); an accepted one leaves a
document whose text and encoding agree; nothing but what the doc integrated is stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab.errors import CloseCode, RemoteProtocolError
from collab.protocol import SyncUpdate
from collab.rooms import Room
from collab.updates import doc_from
from tests import yjs_build as yb
from tests.fuzz.harness import REAL
from tests.stores import ListLog
from tests.test_rooms import FakePeer

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SEEDS = REAL  # real updates of a small document: text, formats, a map, nesting, deletions


def state_of(room: Room) -> tuple[bytes, str]:
    return room.doc.get_update(), str(room.doc.get("content", type=Text))


def consistent(room: Room) -> None:
    """The doc's text agrees with a fresh doc built from its own encoding."""
    copy: Doc = Doc()
    copy.apply_update(room.doc.get_update())
    assert str(copy.get("content", type=Text)) == str(room.doc.get("content", type=Text))


def fresh_room(store: ListLog | None = None) -> tuple[Room, FakePeer, ListLog]:
    """A room on ``store`` (or a new one with the first seed), as the RoomManager makes
    it: a room that reports itself damaged is replaced by one loaded from its store."""
    if store is None:
        store = ListLog()
        room = Room("fuzz", Doc(), store)  # type: ignore[arg-type]
        seed = True
    else:
        room = Room("fuzz", doc_from(store.rows), store)  # type: ignore[arg-type]
        seed = False
    room.on_damaged = lambda damaged, sender: setattr(damaged, "damaged", True)
    peer = FakePeer()
    room.join(peer)
    if seed:
        room.receive(peer, SyncUpdate(SEEDS[0]))
    return room, peer, store


def offer(room: Room, peer: FakePeer, store: ListLog, update: bytes) -> tuple[Room, FakePeer]:
    """Send ``update``; check the invariants; return the room (reloaded if it had to be)."""
    before, rows = state_of(room), len(store.rows)
    try:
        room.receive(peer, SyncUpdate(update))
    except RemoteProtocolError as e:
        assert e.close_code in (CloseCode.INVALID_PAYLOAD, CloseCode.PROTOCOL_ERROR)
        assert len(store.rows) == rows
        if getattr(room, "damaged", False):  # reloaded from the store: the same document
            room.close()
            room, peer, _ = fresh_room(store)
            assert str(room.doc.get("content", type=Text)) == before[1]
        else:
            assert state_of(room) == before
        return room, peer
    consistent(room)
    # what was stored is what the doc integrated: replaying the store gives the doc
    replayed: Doc = Doc()
    for row in store.rows:
        replayed.apply_update(row)
    assert str(replayed.get("content", type=Text)) == str(room.doc.get("content", type=Text))
    return room, peer


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, truncations, insertions and splices of ``data``."""
    n = len(data)
    flip = st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
        lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]
    )
    cut = st.integers(0, n).map(lambda i: data[:i])
    insert = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
        lambda t: data[: t[0]] + t[1] + data[t[0] :]
    )
    return st.one_of(flip, cut, insert)


mutated = st.sampled_from(SEEDS).flatmap(
    lambda seed: st.lists(mutations(seed), min_size=1, max_size=1).map(lambda xs: xs[0])
)


@FUZZ
@given(st.lists(mutated, min_size=1, max_size=6))
def test_mutated_real_updates_never_break_the_room(updates: list[bytes]) -> None:
    room, peer, store = fresh_room()
    for update in [*updates, *SEEDS]:
        room, peer = offer(room, peer, store, update)
    room.close()


def hostile() -> Iterator[bytes]:
    """Valid-but-hostile updates, by construction."""
    yield yb.nested_maps(1001, client=5)  # one past the default limit
    yield yb.encode({2**53: (0, [yb.item(yb.string("x"), parent="content")])})
    yield yb.encode({6: (2**31, [yb.item(yb.string("x"), parent="content")])})
    yield yb.encode({7: (0, [yb.item(yb.raw_anys(1, yb.deep_any(150)), parent="content")])})
    yield yb.encode({}, deletes={9: [(0, 2**31)]})
    # the victim's ids with other content
    yield yb.encode({77: (0, [yb.item(yb.string("forged text"), parent="content")])})
    # found by atheris: zero-length GC structs, which make yrs divide by zero whenever it
    # encodes the document afterwards (every sync step 2)
    yield bytes.fromhex("01024d0100000000000000136574610e6e0001c4")
    yield yb.encode({77: (11, [yb.gc(0)])})
    yield yb.encode({}, deletes={77: [(0, 0)]})


@pytest.mark.parametrize("update", list(hostile()), ids=lambda u: f"{len(u)}B")
def test_hand_built_hostile_updates_are_refused_or_harmless(update: bytes) -> None:
    room, peer, store = fresh_room()
    text_before = str(room.doc.get("content", type=Text))
    room, peer = offer(room, peer, store, update)
    assert str(room.doc.get("content", type=Text)) == text_before
    room.close()
