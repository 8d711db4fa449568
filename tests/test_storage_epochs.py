"""Deleted stays deleted: epochs, retired state vectors, stale appends, generations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Text

from collab import admin
from collab.errors import DocumentNotFoundError
from collab.storage.base import DocVersion
from collab.storage.sqlite import (
    SQLiteLog,
    append_updates,
    connect,
    delete_doc,
    list_docs,
    read_doc,
)
from collab.updates import (
    decode_state_vector,
    doc_from,
    state_vector_overlaps,
    update_overlaps,
)
from tests.stores import on_store


def typed(text: str, doc: Doc[Any] | None = None) -> tuple[Doc[Any], bytes]:
    doc = doc if doc is not None else Doc()
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, text)
    return doc, doc.get_update(before)


async def test_delete_bumps_the_epoch_and_keeps_the_retired_state_vector(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    client, update = typed("secret")
    async with SQLiteLog(path, commit_delay=0) as log:
        log.append_nowait("doc", update, epoch=0)
        await log.flush()
        db = connect(path)
        assert await admin.delete(log, "doc") == 1
        stored = await log.load("doc")
    assert stored.updates == []
    assert stored.epoch == 1
    assert len(stored.retired_state_vectors) == 1
    retired = decode_state_vector(stored.retired_state_vectors[0])
    assert retired == decode_state_vector(client.get_state())
    assert list_docs(db) == []  # deleted documents are not listed ...
    assert list_docs(db, include_deleted=True)[0].deleted_at is not None  # ... unless asked
    async with SQLiteLog(path, background=False) as other:
        with pytest.raises(DocumentNotFoundError, match="was deleted"):
            await admin.delete(other, "doc")
        with pytest.raises(DocumentNotFoundError, match="no document"):
            await admin.delete(other, "never-existed")


async def test_appends_under_a_retired_epoch_are_refused_and_reported_first(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    _, first = typed("old content")
    async with SQLiteLog(path, commit_delay=0.05) as log:
        log.append_nowait("doc", first, epoch=0)
        await log.flush()
        delete_doc(connect(path), "doc")  # another process deletes it
        events: list[tuple[str, object]] = []
        log.on_stale(lambda room, epoch: events.append(("stale", (room, epoch))))
        log.on_commit(lambda ticket, _at: events.append(("commit", ticket)))
        _, late = typed("late edit of the old doc")
        _, fresh = typed("written after the delete")
        log.append_nowait("doc", late, epoch=0)  # a room loaded before the delete
        log.append_nowait("other", fresh, epoch=0)
        await log.flush()
        assert events == [("stale", ("doc", 0)), ("commit", 3)]
        assert (await log.load("doc")).updates == []
        assert (await log.load("other")).updates == [fresh]
        # A room loaded after the delete carries epoch 1 and is stored.
        log.append_nowait("doc", fresh, epoch=1)
        await log.flush()
        assert (await log.load("doc")).updates == [fresh]
        assert len(events) == 3  # one more commit, nothing stale


async def test_versions_report_epoch_and_generation(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0) as log:
        _, update = typed("x")
        log.append_nowait("a", update)
        log.append_nowait("b", update)
        await log.flush()
        async with SQLiteLog(path, background=False) as other:  # another process
            await admin.delete(other, "a")
            await admin.import_update(other, "b", typed("imported")[1])
        versions = await log.versions(["a", "b", "unknown"])
        assert versions == {
            "a": DocVersion(epoch=1, generation=0),
            "b": DocVersion(epoch=0, generation=1),
            "unknown": DocVersion(0, 0),
        }
        assert await log.versions([]) == {}
        many = await log.versions(f"doc-{i}" for i in range(1200))  # more than one query
        assert len(many) == 1200


def test_import_replace_starts_a_new_epoch(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    old, update = typed("old")
    append_updates(db, [("doc", update, 1.0, 0)])
    _, replacement = typed("new")
    result = on_store(tmp_path / "c.db", admin.import_update, "doc", replacement, replace=True)
    assert result.epoch == 1 and result.replaced
    stored = read_doc(db, "doc")
    assert str(doc_from(stored.updates).get("content", type=Text)) == "new"
    assert decode_state_vector(stored.retired_state_vectors[0]) == decode_state_vector(
        old.get_state()
    )


def test_an_append_after_delete_revives_the_name_in_the_new_epoch(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    append_updates(db, [("doc", typed("one")[1], 1.0, 0)])
    delete_doc(db, "doc")
    result = append_updates(db, [("doc", typed("two")[1], 2.0, 1)])
    assert result.stale == []
    assert [d.name for d in list_docs(db)] == ["doc"]
    assert str(doc_from(read_doc(db, "doc").updates).get("content", type=Text)) == "two"


async def test_appends_without_an_epoch_are_never_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0) as log:
        log.append_nowait("doc", typed("a")[1])
        await log.flush()
        delete_doc(connect(path), "doc")
        log.append_nowait("doc", typed("b")[1])
        with anyio.fail_after(5):
            await log.flush()
        assert len((await log.load("doc")).updates) == 1


def test_history_from_a_retired_epoch_is_recognised_and_new_edits_are_not(
    tmp_path: Path,
) -> None:
    db = connect(tmp_path / "c.db")
    stale, update = typed("old epoch")
    append_updates(db, [("doc", update, 1.0, 0)])
    delete_doc(db, "doc")
    (retired,) = read_doc(db, "doc").retired_state_vectors
    # The stale client reconnects: its sync step 1 and its step 2 both give it away ...
    assert state_vector_overlaps(stale.get_state(), retired)
    assert update_overlaps(stale.get_update(), retired)
    # ... while a client that reloaded (a new doc, a new client id) is not stale, even
    # with offline edits of its own.
    fresh, edit = typed("new epoch")
    assert not state_vector_overlaps(fresh.get_state(), retired)
    assert not update_overlaps(edit, retired)
    assert not state_vector_overlaps(b"\x00", retired)
