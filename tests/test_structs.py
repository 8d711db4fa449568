"""collab.structs: the Yjs v1 struct decoder, the nesting tracker and the forgery finder.

Real updates come from pycrdt documents and the editing traces in bench/traces; hostile
ones are built byte by byte with tests/yjs_build.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from collab.errors import InvalidUpdateError, LocalProtocolError
from collab.protocol.codec import decode_state_vector
from collab.structs import (
    MAX_ANY_DEPTH,
    Conflict,
    NestingTracker,
    Ref,
    Struct,
    StructError,
    TooDeepError,
    conflicting_structs,
    content_units,
    max_depth,
    read_update,
)
from tests import yjs_build as yb

TRACES = Path(__file__).resolve().parents[1] / "bench" / "traces"
C = 7  # a client id for hand-built updates
V = 1234  # the victim's client id


def recorded(doc: Doc[Any]) -> list[bytes]:
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    return updates


def rich_doc(client_id: int = 99) -> tuple[Doc[Any], list[bytes]]:
    """Every kind of content pycrdt makes: text with formats and embeds, maps, arrays,
    nested types three deep, XML, deletions."""
    doc: Doc[Any] = Doc(client_id=client_id)
    updates = recorded(doc)
    text = doc.get("text", type=Text)
    text += "hello world"
    text.insert(5, ",", {"bold": True})
    text.insert_embed(0, {"image": "cat.png"})
    text.format(1, 4, {"italic": True})
    del text[3:6]
    text += "😀 ok"
    m = doc.get("map", type=Map)
    m["n"] = 1
    m["n"] = 2.5
    m["s"] = "str"
    m["b"] = b"\x00\x01"
    m["deep"] = Map({"list": Array([1, None, True, Map({"leaf": Text("x")})])})
    del m["s"]
    arr = doc.get("array", type=Array)
    arr.extend([1, "two", [3, {"four": 4}]])
    del arr[0]
    frag = doc.get("xml", type=XmlFragment)
    el = frag.children.append(XmlElement("p", {"class": "c"}))
    xt = el.children.append(XmlText("para"))
    xt.format(0, 2, {"bold": True})
    return doc, updates


# -- decoding real updates ---------------------------------------------------------------------


def test_rich_updates_decode_and_cover_the_state_vector() -> None:
    doc, updates = rich_doc()
    ends: dict[int, int] = {}
    for update in updates:
        for s in read_update(update).structs:
            assert s.clock == ends.get(s.client, 0)  # each update continues the last
            ends[s.client] = s.end
    assert ends == decode_state_vector(doc.get_state())
    whole = read_update(doc.get_update())
    clocks: dict[int, int] = {}
    for s in whole.structs:
        assert s.clock == clocks.get(s.client, 0)
        clocks[s.client] = s.end
    assert clocks == ends
    assert whole.delete_set  # the deletions above


def test_string_length_counts_utf16_units() -> None:
    doc: Doc[Any] = Doc(client_id=5)
    updates = recorded(doc)
    doc.get("t", type=Text).insert(0, "a😀é")
    (s,) = read_update(updates[0]).structs
    assert (s.ref, s.clock, s.length, s.parent) == (Ref.STRING, 0, 4, "t")
    assert content_units(s) == "a😀é".encode("utf-16-le")


def test_item_fields_are_read() -> None:
    doc: Doc[Any] = Doc(client_id=5)
    updates = recorded(doc)
    m = doc.get("m", type=Map)
    m["k"] = Array([1, "x"])
    m["k"] = 3
    first, second = (read_update(u).structs for u in updates)
    assert first == [
        Struct(5, 0, 1, Ref.TYPE, parent="m", parent_sub="k", content=b"\x00"),
        # pycrdt sends Python ints as floats: float32 1.0, then the string "x"
        Struct(5, 1, 2, Ref.ANY, parent=(5, 0), content=b"\x02\x7c\x3f\x80\x00\x00\x77\x01x"),
    ]
    assert first[0].type_ref == 0
    assert second == [Struct(5, 3, 1, Ref.ANY, origin=(5, 0), content=b"\x01\x7c\x40\x40\x00\x00")]
    assert read_update(updates[1]).delete_set == [(5, 0, 3)]  # the array and its items


def test_editing_traces_decode_and_track_at_depth_zero() -> None:
    for name, limit in (("automerge-paper", 20_000), ("clownschool", None)):
        trace = json.loads(gzip.decompress((TRACES / f"{name}.json.gz").read_bytes()))
        doc: Doc[Any] = Doc(client_id=3)
        updates = recorded(doc)
        text = doc.get("t", type=Text)
        tracker = NestingTracker()
        for txn in trace["txns"][:limit]:
            for pos, delete, insert in txn["patches"]:
                # a concurrent trace replayed as one writer: clamp to the text
                pos = min(pos, len(text))
                delete = min(delete, len(text) - pos)
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)
            for update in updates:
                tracker.commit(tracker.check(update))
            updates.clear()
        assert tracker.deepest == 0
        assert tracker.pending == 0
        assert tracker.state(3) == decode_state_vector(doc.get_state())[3]
        assert tracker.runs == 1  # every keystroke of one writer in one text: one run
        assert max_depth(doc.get_update()) == 0


# -- nesting -----------------------------------------------------------------------------------


def nested_doc(depth: int) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=11)
    inner: Map[Any] = doc.get("root", type=Map)
    for _ in range(depth):
        inner["m"] = Map()
        inner = inner["m"]
    return doc


def test_depth_of_pycrdt_documents() -> None:
    doc, updates = rich_doc()
    tracker = NestingTracker()
    depths = []
    for update in updates:
        nesting = tracker.check(update)
        tracker.commit(nesting)
        depths.append(nesting.deepest)
    # map["deep"] (1) > list (2) > Map (3) > Text (4); xml: element (1) > text (2)
    assert max(depths) == 4 and depths[-3:] == [1, 2, 0]
    assert tracker.deepest == 4 == max_depth(doc.get_update())
    assert max_depth(nested_doc(7).get_update()) == 7


def test_forty_thousand_nested_maps_are_refused() -> None:
    tracker = NestingTracker(max_depth=1000)
    with pytest.raises(TooDeepError) as e:
        tracker.check(yb.nested_maps(40_000))
    assert (e.value.depth, e.value.limit) == (1001, 1000)
    assert isinstance(e.value, InvalidUpdateError)
    assert tracker.state(1) == 0 and tracker.deepest == 0  # nothing recorded


def test_depth_at_the_limit_is_accepted() -> None:
    tracker = NestingTracker(max_depth=1000)
    nesting = tracker.check(yb.nested_maps(1000))
    assert (nesting.deepest, nesting.integrated, nesting.pending) == (1000, 1000, 0)
    tracker.commit(nesting)
    assert tracker.runs == 1000  # every map is one level deeper than the one before
    # one more level, sent as its own update, is refused
    deeper = yb.encode({2: (0, [yb.item(yb.map_type(), parent=(1, 999), sub="m")])})
    with pytest.raises(TooDeepError):
        tracker.check(deeper)


def chain(depth: int, first_parent: tuple[int, int], client: int) -> bytes:
    """``depth`` nested maps of ``client``, the first in the type of item ``first_parent``."""
    structs = [yb.item(yb.map_type(), parent=first_parent, sub="m")]
    structs += [yb.item(yb.map_type(), parent=(client, i), sub="m") for i in range(depth - 1)]
    return yb.encode({client: (0, structs)})


def test_children_sent_before_their_parent_are_counted_when_it_arrives() -> None:
    tracker = NestingTracker(max_depth=1000)
    # 1,500 maps of client 2 nested in a map (1, 0) that has not been sent yet
    children = tracker.check(chain(1500, (1, 0), client=2))
    assert (children.deepest, children.integrated, children.pending) == (0, 0, 1500)
    tracker.commit(children)
    parent = yb.encode({1: (0, [yb.item(yb.map_type(), parent="root", sub="m")])})
    with pytest.raises(TooDeepError) as e:
        tracker.check(parent)
    assert e.value.depth == 1001
    assert tracker.pending == 1500  # still waiting, still counted next time


def test_pending_chain_resolves_to_the_real_depth() -> None:
    tracker = NestingTracker()
    tracker.commit(tracker.check(chain(10, (1, 0), client=2)))
    nesting = tracker.check(yb.encode({1: (0, [yb.item(yb.map_type(), parent="root")])}))
    assert (nesting.deepest, nesting.integrated, nesting.pending) == (11, 11, 0)
    tracker.commit(nesting)
    # pycrdt agrees: the same two updates, children first, nest 11 maps
    doc: Doc[Any] = Doc()
    doc.apply_update(chain(10, (1, 0), client=2))
    doc.apply_update(yb.encode({1: (0, [yb.item(yb.map_type(), parent="root")])}))
    assert max_depth(doc.get_update()) == 11 == tracker.deepest


def test_item_after_an_unknown_origin_waits_then_inherits_its_depth() -> None:
    tracker = NestingTracker()
    # client 2 types into whatever type holds (1, 4): unknown until client 1 sends it
    waiting = yb.encode({2: (0, [yb.item(yb.map_type(), origin=(1, 4))])})
    tracker.commit(tracker.check(waiting))
    assert tracker.pending == 1
    deep = yb.nested_maps(5, client=1)  # (1, 4) is the 5th map: depth 5, its parent at 4
    nesting = tracker.check(deep)
    assert (nesting.deepest, nesting.integrated, nesting.pending) == (5, 6, 0)


def test_a_gap_in_clocks_keeps_structs_pending() -> None:
    tracker = NestingTracker()
    late = yb.encode({1: (3, [yb.item(yb.map_type(), parent="r")])})
    tracker.commit(tracker.check(late))
    assert (tracker.pending, tracker.state(1)) == (1, 0)
    nesting = tracker.check(yb.encode({1: (0, [yb.item(yb.string("abc"), parent="r")])}))
    assert (nesting.integrated, nesting.pending, nesting.deepest) == (2, 0, 1)


def test_competing_structs_for_the_same_ids_count_at_the_larger_depth() -> None:
    tracker = NestingTracker()
    tracker.commit(tracker.check(yb.nested_maps(50)))  # client 1, clocks 0..49, depth 50
    # two candidates for (3, 0): one in a root, one in map (1, 49); neither can go in until
    # client 3's clock 0 is free, so both wait; then both become ready at once
    shallow = yb.encode({3: (1, [yb.item(yb.map_type(), parent="r")])})
    deep = yb.encode({3: (1, [yb.item(yb.map_type(), parent=(1, 49))])})
    tracker.commit(tracker.check(shallow))
    tracker.commit(tracker.check(deep))
    gap = yb.encode({3: (0, [yb.item(yb.string("x"), parent="r")])})
    assert tracker.check(gap).deepest == 51


def test_gc_parent_gives_no_depth() -> None:
    tracker = NestingTracker()
    tracker.commit(tracker.check(yb.encode({1: (0, [yb.gc(5)])})))
    nesting = tracker.check(yb.encode({2: (0, [yb.item(yb.map_type(), parent=(1, 2))])}))
    assert (nesting.deepest, nesting.integrated) == (0, 1)


def test_stored_document_past_the_limit_is_reported_not_refused() -> None:
    update = nested_doc(30).get_update()
    tracker = NestingTracker.from_update(update, max_depth=10)
    assert tracker.deepest == 30
    with pytest.raises(TooDeepError):
        tracker.check(yb.encode({2: (0, [yb.item(yb.map_type(), parent=(11, 29))])}))


def test_stale_commit_is_refused() -> None:
    tracker = NestingTracker()
    a = tracker.check(yb.nested_maps(2, client=1))
    b = tracker.check(yb.nested_maps(2, client=2))
    tracker.commit(a)
    with pytest.raises(LocalProtocolError):
        tracker.commit(b)


def test_check_does_not_change_the_tracker() -> None:
    tracker = NestingTracker()
    tracker.commit(tracker.check(chain(3, (1, 0), client=2)))
    tracker.check(yb.encode({1: (0, [yb.item(yb.map_type(), parent="root")])}))
    assert (tracker.pending, tracker.state(1), tracker.state(2), tracker.deepest) == (3, 0, 0, 0)


# -- Any and JSON nesting ----------------------------------------------------------------------


def any_update(encoded_value: bytes) -> bytes:
    return yb.encode({C: (0, [yb.item(yb.raw_anys(1, encoded_value), parent="a")])})


def test_any_nesting_limit() -> None:
    (s,) = read_update(any_update(yb.deep_any(MAX_ANY_DEPTH))).structs
    assert s.length == 1
    for depth in (MAX_ANY_DEPTH + 1, 50_000):  # 50,000 SIGSEGVs pycrdt 0.14.13
        with pytest.raises(StructError, match="nested deeper than 100"):
            read_update(any_update(yb.deep_any(depth)))
    deep_object = b"\x76\x01\x01k" * (MAX_ANY_DEPTH + 1) + b"\x7e"
    with pytest.raises(StructError, match="nested deeper"):
        read_update(any_update(deep_object))
    deep_opts = yb.encode(
        {C: (0, [yb.item((9, yb.var_string("g") + yb.deep_any(101)), parent="a")])}
    )
    with pytest.raises(StructError, match="nested deeper"):
        read_update(deep_opts)


def test_json_nesting_limit_in_embeds_and_formats() -> None:
    ok = "[" * 100 + "]" * 100
    read_update(yb.encode({C: (0, [yb.item(yb.embed(ok), parent="t")])}))
    deep = '{"a":' * 101 + "1" + "}" * 101
    for content in (yb.embed(deep), yb.format_("bold", deep)):
        with pytest.raises(StructError, match="JSON value nested deeper"):
            read_update(yb.encode({C: (0, [yb.item(content, parent="t")])}))
    # brackets inside strings are not nesting
    quoted = json.dumps("[" * 500)
    read_update(yb.encode({C: (0, [yb.item(yb.embed(quoted), parent="t")])}))
    with pytest.raises(StructError, match="invalid JSON"):
        read_update(yb.encode({C: (0, [yb.item(yb.embed("NaN"), parent="t")])}))


def test_any_values_decode() -> None:
    values = [None, True, False, -5, 2**40, 1.5, "s", b"\x01", [1, [2]], {"k": {"j": None}}]
    (s,) = read_update(yb.encode({C: (0, [yb.item(yb.anys(*values), parent="a")])})).structs
    assert s.length == len(values)
    assert content_units(s) == values


# -- malformed and ambiguous bytes -------------------------------------------------------------


def test_truncated_updates_raise_struct_error_at_every_offset() -> None:
    doc, updates = rich_doc()
    for update in (doc.get_update(), *updates):
        read_update(update)
        for cut in range(len(update)):
            with pytest.raises(StructError):
                read_update(update[:cut])


def test_trailing_bytes_are_ignored() -> None:
    update = yb.encode({C: (0, [yb.item(yb.string("ab"), parent="t")])})
    assert read_update(update + b"\xff\xff") == read_update(update)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (yb.encode({2**53: (0, [yb.item(yb.string("a"), parent="t")])}), "not below 2\\*\\*53"),
        (yb.encode({C: (2**32, [yb.item(yb.string("a"), parent="t")])}), "ends past clock"),
        (yb.encode({C: (2**31 - 1, [yb.item(yb.string("ab"), parent="t")])}), "ends past"),
        (yb.encode({C: (0, [yb.item(yb.string("a"), origin=(2**53 + C, 0))])}), "2\\*\\*53"),
        (yb.encode({C: (0, [yb.item(yb.string("a"), origin=(C, 2**31))])}), "clock"),
        (b"\x01\x01" + b"\xff" * 11 + b"\x01", "longer than 10 bytes"),
        (b"\xff\xff\xff\xff\x0f", "count"),  # 2**32 - 1 clients in 5 bytes
        (yb.encode({C: (0, [yb.item(yb.raw_anys(2**40, b""), parent="a")])}), "count"),
        (yb.encode({}, {C: [(2**31, 1)]}), "deleted range ends past"),
        (yb.encode({C: (0, [yb.item(yb.json_strings('"a"'), parent="a")])}), "ContentJSON"),
        (yb.encode({C: (0, [yb.item(yb.type_(5, "h"), parent="a")])}), "type ref 5"),
        (yb.encode({C: (0, [yb.item(yb.type_(9), parent="a")])}), "type ref 9"),
        (yb.encode({C: (0, [b"\x80\x01\x00\x03"])}), "info byte 0x80"),
        (yb.encode({C: (0, [b"\x14\x01\x01t\x02xy"])}), "info byte 0x14"),
        (yb.encode({C: (0, [b"\x0b\x01\x01t\x00"])}), "info byte 0x0b"),
        (yb.encode({C: (0, [b"\x04\x02\x01t\x01a"])}), "parent info 2"),
        (yb.encode({C: (0, [yb.item(yb.string(""), parent="t")])}), "empty item"),
        (yb.encode({C: (0, [yb.item((4, b"\x02\xc3\x28"), parent="t")])}), "UTF-8"),
        (yb.encode([(C, 0, [yb.gc(1)]), (C, 1, [yb.gc(1)])]), "listed twice"),
        (yb.encode({C: (0, [yb.item((8, b"\x01\x70"), parent="a")])}), "unknown Any tag"),
    ],
)
def test_refused_bytes(update: bytes, message: str | None) -> None:
    with pytest.raises(StructError, match=message) as e:
        read_update(update)
    assert isinstance(e.value, ValueError) and isinstance(e.value, InvalidUpdateError)


def test_pycrdt_reads_these_differently_from_yjs() -> None:
    """Why the JSON, XmlHook, duplicate-client and wrapping refusals exist: if pycrdt ever
    reads these like yjs does, this fails and the refusals can be revisited."""
    # ContentJSON: count 1 but two strings; yjs reads one, yrs two
    two = yb.encode(
        {C: (0, [yb.item((2, b"\x01" + yb.var_string('"a"') + yb.var_string('"b"')), parent="a")])}
    )
    doc: Doc[Any] = Doc()
    doc.apply_update(two)
    assert doc.get("a", type=Array).to_py() == ['"a"', '"b"']
    # a client listed twice: yrs keeps both lists (yjs keeps the second)
    twice = yb.encode(
        [
            (C, 0, [yb.item(yb.string("ab"), parent="t")]),
            (C, 2, [yb.item(yb.string("cd"), origin=(C, 1))]),
        ]
    )
    doc = Doc()
    doc.apply_update(twice)
    assert str(doc.get("t", type=Text)) == "abcd"
    # clock 2**32 is clock 0 to yrs, client 2**53 + 5 is client 5
    for client, clock in ((C, 2**32), (2**53 + C, 0)):
        doc = Doc()
        doc.apply_update(yb.encode({client: (clock, [yb.item(yb.string("ab"), parent="t")])}))
        assert decode_state_vector(doc.get_state()) == {C: 2}


def test_deep_any_crashes_pycrdt_so_it_must_be_refused_first() -> None:
    script = "import sys; from pycrdt import Doc; Doc().apply_update(sys.stdin.buffer.read())"
    update = any_update(yb.deep_any(50_000))
    done = subprocess.run([sys.executable, "-c", script], input=update, capture_output=True)
    assert done.returncode == -11  # SIGSEGV


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_updates_raise_only_struct_errors(data: st.DataObject) -> None:
    doc, updates = rich_doc()
    update = bytearray(data.draw(st.sampled_from([doc.get_update(), *updates])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(update) - 1))
        how = data.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if how == "set":
            update[i] = byte
        elif how == "insert":
            update.insert(i, byte)
        elif len(update) > 1:
            del update[i]
    try:
        read_update(bytes(update))
    except StructError:
        pass
    tracker = NestingTracker.from_update(doc.get_update())
    try:
        nesting = tracker.check(bytes(update))
        tracker.commit(nesting)
        conflicting_structs([doc.get_update(), bytes(update)])
    except (StructError, TooDeepError):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_struct_errors(update: bytes) -> None:
    try:
        read_update(update)
    except StructError:
        pass


# -- forged content ----------------------------------------------------------------------------


def victim_update(text: str = "Pay Bob $100") -> bytes:
    doc: Doc[Any] = Doc(client_id=V)
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def test_forged_content_under_the_victims_ids_is_reported() -> None:
    victim = victim_update()
    forged = yb.encode({V: (0, [yb.item(yb.string("Pay Eve $999"), parent="t")])})
    assert conflicting_structs([victim, forged]) == [Conflict(V, 0, 12, 0, 1, "content")]


def test_forgery_of_part_of_an_item_is_found_unit_by_unit() -> None:
    victim = victim_update()
    # clocks 4..6 as their own item ("Eve" over "Bob"), origin the id before them
    forged = yb.encode({V: (4, [yb.item(yb.string("Eve"), origin=(V, 3), right=None)])})
    honest = yb.encode({V: (4, [yb.item(yb.string("Bob"), origin=(V, 3))])})
    assert conflicting_structs([victim, honest]) == []
    assert conflicting_structs([victim, forged]) == [Conflict(V, 4, 3, 0, 1, "content")]


def test_forged_position_is_reported() -> None:
    victim = victim_update()
    moved = yb.encode({V: (0, [yb.item(yb.string("Pay Bob $100"), parent="other")])})
    assert conflicting_structs([victim, moved]) == [Conflict(V, 0, 12, 0, 1, "parent")]
    shifted = yb.encode({V: (4, [yb.item(yb.string("Bob"), origin=(V, 0))])})
    assert conflicting_structs([victim, shifted]) == [Conflict(V, 4, 3, 0, 1, "origin")]
    right = yb.encode({V: (4, [yb.item(yb.string("Bob"), origin=(V, 3), right=(V, 11))])})
    assert conflicting_structs([victim, right]) == [Conflict(V, 4, 3, 0, 1, "right origin")]


def test_any_forgery_is_reported_per_element() -> None:
    doc: Doc[Any] = Doc(client_id=V)
    doc.get("a", type=Array).extend([1, 2, 3])
    forged = yb.encode({V: (1, [yb.item(yb.anys(2, 4), origin=(V, 0))])})
    assert conflicting_structs([doc.get_update(), forged]) == [Conflict(V, 1, 2, 0, 1, "content")]
    # same numbers, other encoding (float64 for 2): not a conflict
    same = yb.encode({V: (1, [yb.item(yb.anys(2.0, 3), origin=(V, 0))])})
    assert conflicting_structs([doc.get_update(), same]) == []


def test_legitimate_log_with_deletions_and_compaction_has_no_conflicts() -> None:
    doc, updates = rich_doc(client_id=V)
    other: Doc[Any] = Doc(client_id=V + 1)
    other.apply_update(doc.get_update())
    more = recorded(other)
    text = other.get("text", type=Text)
    text.insert(2, "inserted by another")
    del text[0:8]
    other.get("map", type=Map)["n"] = "x"
    doc.apply_update(other.get_update(doc.get_state()))
    log = [*updates, *more, doc.get_update(), other.get_update()]
    assert conflicting_structs(log) == []


def test_deleted_and_gc_ranges_do_not_conflict_with_content() -> None:
    victim = victim_update()
    gced = yb.encode({V: (0, [yb.gc(12)])})
    deleted = yb.encode({V: (0, [yb.item(yb.deleted(12), parent="t")])})
    assert conflicting_structs([victim, gced, deleted]) == []
    assert conflicting_structs([deleted, victim]) == []


def test_struct_depending_on_a_later_client_of_the_same_update_is_counted() -> None:
    # client 9 comes first on the wire but nests in client 2's map, listed after it
    update = yb.encode(
        [
            (9, 0, [yb.item(yb.map_type(), parent=(2, 0))]),
            (2, 0, [yb.item(yb.map_type(), parent="root")]),
        ]
    )
    nesting = NestingTracker().check(update)
    assert (nesting.deepest, nesting.integrated, nesting.pending) == (2, 2, 0)
    with pytest.raises(TooDeepError):
        NestingTracker(max_depth=1).check(update)


# -- the keystroke path ------------------------------------------------------------------------


def checked_generally(tracker: NestingTracker, update: bytes) -> Any:
    """What the general path makes of ``update``: its Nesting's fields, or the error."""
    try:
        n = tracker._simulate(read_update(update).structs, tracker.max_depth)
    except InvalidUpdateError as e:
        return type(e)
    return (n.deepest, n.integrated, n.pending, n._runs, n._pending, n._waits)


def fields(n: Any) -> Any:
    return (n.deepest, n.integrated, n.pending, n._runs, n._pending, n._waits)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_keystroke_path_agrees_with_the_general_one(data: st.DataObject) -> None:
    # Two clients typing and deleting at random places, some of each other's edits
    # unseen; each update, and a mutation of it, is checked both ways. The keystroke
    # path may decline (None) but must never accept what the general path would not.
    docs = [Doc(client_id=11), Doc(client_id=2**32 + 5)]
    texts = [d.get("t", type=Text) for d in docs]
    log: list[bytes] = []
    for d in docs:
        d.observe(lambda e: log.append(e.update))
    tracker = NestingTracker(refuse_gaps=True)
    for _ in range(data.draw(st.integers(1, 25))):
        who = data.draw(st.integers(0, 1))
        text = texts[who]
        if len(text) and data.draw(st.booleans()):
            at = data.draw(st.integers(0, len(text) - 1))
            del text[at : min(len(text), at + data.draw(st.integers(1, 3)))]
        else:
            at = data.draw(st.integers(0, len(text)))
            text.insert(at, data.draw(st.sampled_from(["a", "xyz", "bc"])))
        if data.draw(st.booleans()):  # the other one catches up
            docs[1 - who].apply_update(docs[who].get_update(docs[1 - who].get_state()))
        update = log[-1]
        mutated = bytearray(update)
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
        for candidate in (bytes(mutated), update):
            try:
                fast = tracker._check_keystroke(candidate)
            except IndexError:
                fast = None
            if fast is not None:
                assert fields(fast) == checked_generally(tracker, candidate)
        if tracker._pending:
            continue  # the keystroke path is only taken with nothing pending
        nesting = tracker.check(update)
        tracker.commit(nesting)


def test_typing_a_trace_takes_the_keystroke_path() -> None:
    doc: Doc[Any] = Doc()
    updates = recorded(doc)
    text = doc.get("t", type=Text)
    for ch in "hello, world 😀 and more, é 日本":
        text.insert(len(text), ch)
    text.insert(3, "p")
    del text[3:5]
    tracker = NestingTracker(refuse_gaps=True)
    taken = 0
    for update in updates:
        taken += tracker._check_keystroke(update) is not None
        tracker.commit(tracker.check(update))
    assert taken == len(updates) - 2  # the first insert has no origin; the deletion no item
