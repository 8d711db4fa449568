"""Fuzzing collab's rooms: a structure-aware generator of hostile updates, and the
invariants checked after every input.

Used three ways: ``tests/fuzz/test_fuzz.py`` (a few thousand inputs in the suite),
``tests/fuzz/run.py`` (the generator for a time box, printing how many inputs it tried)
and ``tests/fuzz/fuzz_atheris.py`` (coverage-guided mutation, time-boxed).

The generator builds valid-but-hostile Yjs updates (``tests/yjs_build.py``): deep nesting,
a victim's struct ids with other content, long pending chains, huge client ids and clocks,
huge delete sets, many clients inserting at one position, and byte-level mutations of
real updates. The invariants, after each input:

* nothing escapes ``room.receive`` but a RemoteProtocolError (a close code for the sender);
* a refused input leaves the document and what is queued for the store exactly as they
  were; an accepted one leaves a document whose text agrees with its own encoding;
* the honest users' text is what they wrote: the victim's text reads the same in the live
  document and in a document replayed from the store, and the bystander's document, in
  another room, is untouched;
* every stored update replays, and the replay equals the live document.

A crash of the process (a SIGSEGV in the CRDT core) ends the run: that is the failure
the depth limit exists for, and the runners report it as such.
"""

from __future__ import annotations

import random

from pycrdt import Doc, Map, Text

from collab.errors import RemoteProtocolError
from collab.protocol import AwarenessUpdate, SyncStep1, SyncStep2, SyncUpdate, decode
from collab.rooms import Room
from collab.structs import conflicting_structs
from collab.updates import doc_from
from tests import yjs_build as yb
from tests.stores import ListLog
from tests.test_rooms import FakePeer

VICTIM = 1111
VICTIM_TEXT = "Pay Bob $100"


def victim_update() -> bytes:
    doc: Doc = Doc(client_id=VICTIM)
    doc.get("content", type=Text).insert(0, VICTIM_TEXT)
    doc.get("meta", type=Map)["title"] = "ledger"
    return doc.get_update()


def real_updates() -> list[bytes]:
    """Incremental updates of a small document, to mutate."""
    doc: Doc = Doc(client_id=77)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("content", type=Text)
    text.insert(0, "hello world")
    text.format(0, 5, {"bold": True})
    del text[2:4]
    meta = doc.get("meta", type=Map)
    meta["nested"] = Map({"a": [1, 2, {"b": None}]})
    text.insert(3, "é😀")
    return updates


VICTIM_UPDATE = victim_update()
REAL = real_updates()


# -- the generator ---------------------------------------------------------------------


def _client(rng: random.Random) -> int:
    return rng.choice([VICTIM, 77, rng.randrange(1, 2**32), 2**53 - 1, 2**53, 2**63])


def _clock(rng: random.Random) -> int:
    return rng.choice([0, 1, rng.randrange(0, 64), 2**31 - 1, 2**31, 2**32 + 5])


def _content(rng: random.Random) -> yb.Content:
    kind = rng.randrange(8)
    if kind == 0:
        return yb.string(rng.choice(["Pay Eve $999", "x", "é😀", "\ud800"[:0] + "z" * 40]))
    if kind == 1:
        return yb.map_type()
    if kind == 2:
        return yb.array_type()
    if kind == 3:
        return yb.deleted(rng.randrange(1, 1000))
    if kind == 4:
        return yb.raw_anys(1, yb.deep_any(rng.choice([1, 10, 99, 101, 500])))
    if kind == 5:
        return yb.anys(*[rng.randrange(100) for _ in range(rng.randrange(1, 5))])
    if kind == 6:
        return yb.format_("bold", rng.choice(["true", "null", "[" * 200]))
    return yb.binary(bytes(rng.randrange(256) for _ in range(rng.randrange(8))))


def _id(rng: random.Random) -> yb.ID:
    return (_client(rng), _clock(rng))


def hostile_update(rng: random.Random) -> bytes:
    """One valid-but-hostile update, or a mutation of a real one."""
    kind = rng.randrange(9)
    if kind == 0:  # deep nesting, sometimes past the limit, sometimes children first
        depth = rng.choice([10, 999, 1000, 1001, 3000])
        update = yb.nested_maps(depth, client=rng.randrange(2, 2**31))
        return update
    if kind == 1:  # the victim's ids with other content, and a pending struct
        forged = yb.item(yb.string("Pay Eve $999"), parent="content")
        pending = yb.item(yb.string("!"), origin=(rng.randrange(2, 2**31), 5))
        return yb.encode([(VICTIM, 0, [forged]), (rng.randrange(2, 2**31), 0, [pending])])
    if kind == 2:  # a long chain, each waiting on the one before, sent in reverse
        client = rng.randrange(2, 2**31)
        chain = [yb.item(yb.string("c"), parent="content")]
        chain += [yb.item(yb.string("c"), origin=(client, i)) for i in range(rng.randrange(1, 300))]
        start = rng.randrange(0, len(chain))
        return yb.encode({client: (start, chain[start:])})
    if kind == 3:  # huge ids and clocks
        return yb.encode({_client(rng): (_clock(rng), [yb.item(_content(rng), parent="content")])})
    if kind == 4:  # huge delete sets
        ranges = [(_clock(rng), rng.choice([1, 2**31, 2**32])) for _ in range(rng.randrange(1, 50))]
        return yb.encode({}, deletes={_client(rng): ranges})
    if kind == 5:  # many clients at one position
        count = rng.randrange(2, 400)
        base = rng.randrange(2, 2**30)
        rows = [
            (base + i, 0, [yb.item(yb.string("y"), origin=(VICTIM, 3), right=(VICTIM, 4))])
            for i in range(count)
        ]
        return yb.encode(rows)
    if kind == 6:  # random structs with random origins and parents
        structs = []
        for _ in range(rng.randrange(1, 6)):
            shape = rng.randrange(3)
            if shape == 0:
                structs.append(yb.item(_content(rng), parent=rng.choice(["content", "meta"])))
            elif shape == 1:
                structs.append(yb.item(_content(rng), origin=_id(rng)))
            else:
                structs.append(yb.item(_content(rng), parent=_id(rng), sub="k"))
        return yb.encode({_client(rng): (_clock(rng), structs)})
    seed = rng.choice([*REAL, VICTIM_UPDATE])
    data = bytearray(seed)
    for _ in range(rng.randrange(1, 4)):  # byte-level mutations
        op = rng.randrange(3)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            del data[rng.randrange(len(data) + 1) :]
        else:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(data)


# -- the invariants --------------------------------------------------------------------


class Harness:
    """A victim's room under attack, and a bystander's room beside it."""

    def __init__(self) -> None:
        self.store = ListLog()
        self.room = self._room(Doc())
        self.room.receive(self.victim, SyncUpdate(VICTIM_UPDATE))
        self.bystander_store = ListLog()
        self.bystander = Room("other", Doc(), self.bystander_store)  # type: ignore[arg-type]
        self.bystander.receive(FakePeer(), SyncUpdate(REAL[0]))
        self.bystander_text = self.text(self.bystander.doc)
        self.accepted = self.refused = 0

    def _room(self, doc: Doc) -> Room:
        room = Room("ledger", doc, self.store)  # type: ignore[arg-type]
        room.on_damaged = self._on_damaged
        self.damaged = False
        self.victim, self.attacker = FakePeer(), FakePeer()
        room.join(self.victim)
        room.join(self.attacker)
        return room

    def _on_damaged(self, room: Room, sender: object) -> None:
        self.damaged = True

    def _reload(self) -> None:
        """What the RoomManager does when an update failed midway: a fresh room from the
        store (the damaged one is dropped, its peers reconnect)."""
        self.room.close()
        self.room = self._room(doc_from(self.store.rows))

    @staticmethod
    def text(doc: Doc) -> str:
        return str(doc.get("content", type=Text))

    def offer(self, update: bytes, as_awareness: bool = False) -> None:
        room = self.room
        before = room.doc.get_update(), self.text(room.doc), len(self.store.rows)
        message = AwarenessUpdate(update) if as_awareness else SyncUpdate(update)
        try:
            room.receive(self.attacker, message)
        except RemoteProtocolError:
            self.refused += 1
            if self.damaged:
                # reloaded from the store: the same document, maybe not the same bytes
                self._reload()
                doc = self.room.doc
                assert self.text(doc) == before[1], "a refused update changed the text"
                assert len(self.store.rows) == before[2], "a refused update was stored"
                copy = Doc()
                copy.apply_update(before[0])
                assert doc.get_state() == copy.get_state(), "a refused update changed it"
            elif not as_awareness:
                after = room.doc.get_update(), self.text(room.doc), len(self.store.rows)
                assert after == before, "a refused update changed the document"
            return
        self.accepted += 1
        copy: Doc = Doc()
        copy.apply_update(room.doc.get_update())
        assert self.text(copy) == self.text(room.doc), "text and encoding disagree"

    def check(self) -> None:
        """The invariants that need a replay of the store: run every few inputs."""
        replayed: Doc = Doc()
        for row in self.store.rows:
            replayed.apply_update(row)
        live = self.room.doc
        assert self.text(replayed) == self.text(live), "the store and the live doc differ"
        # the victim's struct ids carry the victim's content, live, in the store, and in
        # what a new joiner is sent
        (reply,) = self.room.receive(FakePeer(), SyncStep1(b"\x00"))
        joiner = decode(reply)
        assert isinstance(joiner, SyncStep2)
        for name, updates in (
            ("live", [live.get_update()]),
            ("store", self.store.rows),
            ("joiner", [joiner.update]),
        ):
            conflicts = conflicting_structs([VICTIM_UPDATE, *updates])
            assert not [c for c in conflicts if c.client == VICTIM], f"{name}: forged"
        assert self.text(self.bystander.doc) == self.bystander_text, "the bystander was touched"

    def close(self) -> None:
        self.room.close()
        self.bystander.close()
