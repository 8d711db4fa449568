"""History: the document at any time within the retention window, exports and restores."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText
from sqlite_utils import Database

from collab import admin
from collab.errors import DocumentNotFoundError, InvalidUpdateError
from collab.history import detect_roots, parse_root, parse_time, restore_update, sessions
from collab.storage.sqlite import (
    HistoryUnavailableError,
    append_updates,
    compact_doc,
    connect,
    read_at,
    read_doc,
    read_history,
)
from collab.updates import doc_from
from tests.stores import on_store


def text_at(db: Database, at: float, room: str = "doc") -> str:
    return str(doc_from(read_at(db, room, at)).get("content", type=Text))


class Editor:
    """One client typing into ``content``; each edit is stored with the time given."""

    def __init__(self, db: Database, room: str = "doc") -> None:
        self.db, self.room = db, room
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)
        self.history: list[tuple[float, str]] = []

    def type(self, chars: str, at: float) -> None:
        before = self.doc.get_state()
        self.text += chars
        self.store(self.doc.get_update(before), at)

    def delete_first(self, at: float) -> None:
        before = self.doc.get_state()
        del self.text[0:1]
        self.store(self.doc.get_update(before), at)

    def store(self, update: bytes, at: float) -> None:
        append_updates(self.db, [(self.room, update, at, None)])
        self.history.append((at, str(self.text)))

    def expected_at(self, at: float) -> str:
        text = ""
        for time_, content in self.history:
            if time_ <= at:
                text = content
        return text


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "c.db"


@pytest.fixture
def db(path: Path) -> Database:
    return connect(path)


def test_the_document_reads_as_it_was_at_each_update(db: Database) -> None:
    editor = Editor(db)
    for i, char in enumerate("abcdef"):
        editor.type(char, at=float(i + 1))
    compact_doc(db, "doc", retention=1000, now=10)
    editor.type("g", at=11)
    for at in (0.5, 1, 2.5, 6, 10, 11, 99):
        assert text_at(db, at) == editor.expected_at(at), at


def test_history_older_than_retention_is_folded_into_one_checkpoint(db: Database) -> None:
    editor = Editor(db)
    for i, char in enumerate("abcdefgh"):
        editor.type(char, at=float(i + 1))
    compact_doc(db, "doc", retention=3, now=8)  # keeps raw rows from t=5 on
    history = read_history(db, "doc")
    assert history.history_from == 4.0
    assert history.base is not None and history.base[2] == 4
    assert [at for at, _ in history.raw] == [5.0, 6.0, 7.0, 8.0]
    for at in (4, 4.5, 5, 7, 8):
        assert text_at(db, at) == editor.expected_at(at)
    with pytest.raises(HistoryUnavailableError, match="can be read back to"):
        read_at(db, "doc", 3.9)


def test_retention_zero_keeps_no_raw_history(db: Database) -> None:
    editor = Editor(db)
    for i, char in enumerate("abc"):
        editor.type(char, at=float(i + 1))
    compact_doc(db, "doc", retention=0, now=3)
    editor.type("d", at=4)
    compact_doc(db, "doc", retention=0, now=4)
    assert read_history(db, "doc").raw == []
    assert db.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0
    assert text_at(db, 4) == "abcd"
    with pytest.raises(HistoryUnavailableError):
        read_at(db, "doc", 3.5)


def test_an_idle_document_keeps_no_duplicate_base(db: Database) -> None:
    editor = Editor(db)
    for i, char in enumerate("abc"):
        editor.type(char, at=float(i + 1))
    compact_doc(db, "doc", retention=100, now=3)
    compact_doc(db, "doc", retention=100, now=1000)  # everything is past retention now
    assert db.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM history").fetchone()[0] == 0
    assert text_at(db, 3) == "abc"
    # ... and the base comes back when new edits are compacted over the old row.
    editor.type("d", at=1001)
    editor.type("e", at=1002)
    compact_doc(db, "doc", retention=100, now=1002)
    assert text_at(db, 1000) == "abc"
    assert text_at(db, 1001.5) == "abcd"


events = st.lists(
    st.one_of(
        st.tuples(st.just("type"), st.text("xyz", min_size=1, max_size=3)),
        st.tuples(st.just("delete"), st.just("")),
        st.tuples(st.just("compact"), st.sampled_from(["0", "2", "5", "1000"])),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events)
def test_every_readable_time_gives_the_content_of_then(
    tmp_path: Path, event_list: list[tuple[str, str]]
) -> None:
    path = tmp_path / f"h{abs(hash(tuple(event_list)))}.db"
    db = connect(path)
    try:
        editor = Editor(db)
        now = 0.0
        for kind, arg in event_list:
            now += 1
            if kind == "type":
                editor.type(arg, at=now)
            elif kind == "delete" and len(editor.text):
                editor.delete_first(at=now)
            elif kind == "compact" and editor.history:
                compact_doc(db, "doc", retention=float(arg), now=now)
        if not editor.history:
            return
        history_from = read_history(db, "doc").history_from
        for step in range(int(now * 2) + 2):
            at = step / 2
            if history_from is None or at >= history_from:
                assert text_at(db, at) == editor.expected_at(at), (at, history_from)
            else:
                with pytest.raises(HistoryUnavailableError):
                    read_at(db, "doc", at)
        assert str(doc_from(read_doc(db, "doc").updates).get("content", type=Text)) == str(
            editor.text
        )
    finally:
        db.close()
        path.unlink()


def test_restore_brings_back_the_past_as_a_new_edit(db: Database, path: Path) -> None:
    editor = Editor(db)
    editor.type("the good version", at=1)
    editor.delete_first(at=2)
    editor.type(" and then a mistake", at=3)
    rows_before = len(read_doc(db, "doc").updates)
    result = on_store(path, admin.restore, "doc", at=1.5)
    assert result.update is not None
    assert result.roots == [("content", "text")]
    stored = read_doc(db, "doc")
    assert len(stored.updates) == rows_before + 1  # appended, nothing rewritten
    assert str(doc_from(stored.updates).get("content", type=Text)) == "the good version"
    assert stored.generation == 1  # a running server reloads it
    # A client that kept editing the old version merges the restore like any edit.
    editor.doc.apply_update(result.update)
    assert str(editor.text) == "the good version"
    # Restoring to now changes nothing.
    assert on_store(path, admin.restore, "doc", at=10**10).update is None


def test_restore_keeps_concurrent_edits_outside_the_changed_range() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text += "hello world"
    past = [doc.get_update()]
    text.insert(5, " cruel")
    current = [doc.get_update()]
    update, _ = restore_update(current, past)
    assert update is not None
    # Someone concurrently appended "!" at the end; the restore does not remove it.
    other: Doc[Any] = Doc()
    other.apply_update(current[0])
    other.get("content", type=Text).insert(len("hello cruel world"), "!")
    other.apply_update(update)
    assert str(other.get("content", type=Text)) == "hello world!"


def test_restore_handles_maps_arrays_xml_and_multibyte_text() -> None:
    doc: Doc[Any] = Doc()
    text, meta = doc.get("content", type=Text), doc.get("meta", type=Map)
    items, xml = doc.get("items", type=Array), doc.get("xml", type=XmlFragment)
    text += "naïve 😀 text"
    meta["title"] = "v1"
    items.extend([1, 2, 3])
    xml.children.append(XmlElement("p", {"class": "intro"}, [XmlText("hi")]))
    past = [doc.get_update()]
    before = doc.get_state()
    text.insert(0, "é")
    del text[1:3]  # "ï" is two UTF-8 bytes: pycrdt indexes Text by bytes
    meta["title"], meta["extra"] = "v2", True
    items.append(4)
    del items[0]
    xml.children.append(XmlElement("hr", {}, []))
    current = [doc.get_update(), doc.get_update(before)]
    update, roots = restore_update(current, past)
    assert dict(roots) == {"content": "text", "meta": "map", "items": "array", "xml": "xml"}
    restored = doc_from(current + [update or b""])
    assert str(restored.get("content", type=Text)) == "naïve 😀 text"
    assert restored.get("meta", type=Map).to_py() == {"title": "v1"}
    assert restored.get("items", type=Array).to_py() == [1, 2, 3]
    assert str(restored.get("xml", type=XmlFragment)) == '<p class="intro">hi</p>'


def test_root_types_are_detected() -> None:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "x")
    doc.get("meta", type=Map)["a"] = 1
    doc.get("items", type=Array).append("y")
    doc.get("xml", type=XmlFragment).children.append(XmlElement("p", {}, []))
    emptied = doc.get("gone", type=Text)
    emptied += "z"
    del emptied[0:1]
    assert detect_roots(doc.get_update()) == {
        "content": "text",
        "meta": "map",
        "items": "array",
        "xml": "xml",
        "gone": None,
    }
    assert parse_root("meta:map") == ("meta", "map")
    assert parse_root("content") == ("content", None)
    with pytest.raises(ValueError, match="unknown root type"):
        parse_root("content:txt")


def test_export_formats(db: Database, path: Path) -> None:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "body")
    doc.get("meta", type=Map)["title"] = "T"
    append_updates(db, [("doc", doc.get_update(), 1.0, None)])
    exported = doc_from([on_store(path, admin.export_update, "doc")])
    assert str(exported.get("content", type=Text)) == "body"
    assert on_store(path, admin.export_content, "doc") == {
        "content": "body",
        "meta": {"title": "T"},
    }
    assert on_store(path, admin.export_content, "doc", ["meta"]) == {"meta": {"title": "T"}}
    assert on_store(path, admin.export_text, "doc") == "body"
    with pytest.raises(DocumentNotFoundError):
        on_store(path, admin.export_update, "missing")


def test_import_refuses_bytes_pycrdt_cannot_apply(db: Database, path: Path) -> None:
    with pytest.raises(InvalidUpdateError):
        on_store(path, admin.import_update, "doc", b"\x01\x01\xff\xff")
    assert db.execute("SELECT count(*) FROM updates").fetchone()[0] == 0


def test_times_parse() -> None:
    now = 1_000_000.0
    assert parse_time("now", now=now) == now
    assert parse_time("2h", now=now) == now - 7200
    assert parse_time("1d12h ago", now=now) == now - 1.5 * 86400
    assert parse_time("-90s", now=now) == now - 90
    assert parse_time("@12.5") == 12.5
    assert parse_time("2026-03-01T14:30") == datetime(2026, 3, 1, 14, 30).timestamp()
    assert parse_time("2026-03-01T14:30:00+00:00") == 1772375400.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday-ish")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("@tomorrow")


@pytest.mark.parametrize("text", ["@nan", "@inf", "@-inf", "@1e20", "100000000w"])
def test_times_that_are_no_point_in_time_are_refused(text: str) -> None:
    # NaN compared false with every bound: `--at @nan` skipped the retention check and
    # restored an empty document.
    with pytest.raises(ValueError, match="out of range"):
        parse_time(text)


def test_sessions_split_at_gaps() -> None:
    found = sessions([(1, 10), (2, 10), (100, 5), (101, 5), (500, 1)], gap=60)
    assert [(s.start, s.end, s.updates, s.bytes) for s in found] == [
        (1, 2, 2, 20),
        (100, 101, 2, 10),
        (500, 500, 1, 1),
    ]
