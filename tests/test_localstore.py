"""The client's local file: what goes in comes out, bounded, and one document per file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from collab import localstore
from collab.localstore import LocalStore, LocalStoreError

URL = "ws://127.0.0.1:1234/notes/plan"


def edits(n: int) -> tuple[Doc, list[bytes]]:
    doc: Doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("content", type=Text)
    for i in range(n):
        text += f"{i},"
        if i % 3 == 2:
            del text[0:1]  # deletes too: they live in the updates' delete sets
    return doc, updates


def replayed(updates: list[bytes]) -> str:
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("content", type=Text))


def test_appended_updates_come_back_after_reopening(tmp_path: Path) -> None:
    doc, updates = edits(20)
    store = LocalStore.open(tmp_path / "plan.ydoc.db", URL)
    for update in updates:
        store.append(update)
    store.close()
    store = LocalStore.open(tmp_path / "plan.ydoc.db", URL)
    loaded = store.load()
    store.close()
    assert len(loaded) == 1  # squashed on load
    assert replayed(loaded) == str(doc.get("content", type=Text))


def test_the_log_is_squashed_once_it_passes_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localstore, "COMPACT_ROWS", 10)
    doc, updates = edits(35)
    store = LocalStore.open(tmp_path / "plan.ydoc.db", URL)
    for update in updates:
        store.append(update)
    rows = sqlite3.connect(tmp_path / "plan.ydoc.db").execute("SELECT count(*) FROM updates")
    assert rows.fetchone()[0] < 10
    assert replayed(store.load()) == str(doc.get("content", type=Text))
    store.close()


def test_a_file_of_another_document_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "plan.ydoc.db"
    _, updates = edits(3)
    store = LocalStore.open(path, URL)
    store.append(updates[0])
    store.close()
    with pytest.raises(LocalStoreError, match="holds ws://127.0.0.1:1234/notes/plan, not"):
        LocalStore.open(path, "ws://127.0.0.1:1234/notes/other")
    store = LocalStore.open(path, URL)
    assert store.load() == [updates[0]]
    store.close()


@pytest.mark.parametrize("content", [b"shopping list\n" * 100, None])
def test_a_file_that_is_not_a_client_file_is_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "other.db"
    if content is None:  # a SQLite database of something else
        sqlite3.connect(path).execute("CREATE TABLE invoices (id INTEGER)").connection.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(LocalStoreError, match="not a collab client file"):
        LocalStore.open(path, URL)
    assert path.read_bytes() == before
