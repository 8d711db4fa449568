"""Integrity and backups: `check` finds what cannot be replayed; backups are one moment."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from pycrdt import Text

from collab import admin
from collab.errors import StoreError
from collab.storage.sqlite import (
    append_updates,
    backup_database,
    compact_doc,
    connect,
    delete_doc,
    doc_names,
    read_doc,
)
from collab.updates import doc_from
from tests.edits import keystrokes
from tests.stores import on_store


def test_check_passes_a_healthy_database(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    append_updates(db, [("a", u, 1.0, None) for u in keystrokes("hello")])
    append_updates(db, [("b", u, 1.0, None) for u in keystrokes("world")])
    compact_doc(db, "a")
    assert on_store(tmp_path / "c.db", admin.check) == (2, [])


def test_check_names_the_document_and_row_that_cannot_be_replayed(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = connect(path)
    append_updates(db, [("good", u, 1.0, None) for u in keystrokes("fine")])
    append_updates(db, [("bad", u, 1.0, None) for u in keystrokes("broken")])
    db.close()
    with sqlite3.connect(path) as raw:  # corruption from outside, as a bad disk or tool would
        raw.execute(
            "UPDATE updates SET data = ? WHERE seq = 3"
            " AND doc_id = (SELECT id FROM documents WHERE name = 'bad')",
            [b"\x01\x05\xff\xff\xff"],
        )
    checked, problems = on_store(path, admin.check)
    assert checked == 2
    assert [(p.room, p.where) for p in problems] == [("bad", "updates seq 3")]


def test_check_looks_at_history_and_checkpoints_too(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = connect(path)
    append_updates(db, [("doc", u, float(i), None) for i, u in enumerate(keystrokes("abcdef"))])
    compact_doc(db, "doc", retention=2, now=5)
    db.execute("UPDATE history SET data = x'0102' WHERE seq = 5")
    db.execute("UPDATE checkpoints SET data = x'0103'")
    _, problems = on_store(tmp_path / "c.db", admin.check)
    assert sorted(p.where for p in problems) == ["checkpoint", "history seq 5"]


def test_backup_is_consistent_while_a_writer_commits(tmp_path: Path) -> None:
    source, target = tmp_path / "c.db", tmp_path / "backup.db"
    db = connect(source)
    # Big enough that the backup takes many steps while the writer commits between them.
    append_updates(db, [("filler", bytes(2000), 1.0, None)] * 2000)
    updates = keystrokes("x" * 3000)
    stop, started = threading.Event(), threading.Event()
    written = [0]

    def writer() -> None:
        other = connect(source)
        for update in updates:
            if stop.is_set():
                break
            append_updates(other, [("live", update, 1.0, None)])
            written[0] += 1
            if written[0] == 20:
                started.set()
        other.close()

    thread = threading.Thread(target=writer)
    steps: list[tuple[int, int]] = []
    thread.start()
    try:
        assert started.wait(10)
        backup_database(
            source, target, pages_per_step=16, progress=lambda d, t: steps.append((d, t))
        )
        written_during = written[0]
    finally:
        stop.set()
        thread.join()
    assert len(steps) > 10
    assert all(total == steps[0][1] for _, total in steps)  # never restarted
    assert [done for done, _ in steps] == sorted(done for done, _ in steps)
    copy = connect(target)
    live = read_doc(copy, "live").updates
    # A prefix of the writer's commits, each whole: the state of one moment, though the
    # writer went on committing while the copy was made.
    assert 20 <= len(live) < written_during
    assert live == updates[: len(live)]
    assert str(doc_from(live).get("content", type=Text)) == "x" * len(live)
    assert on_store(target, admin.check)[1] == []


def test_backup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    source, target = tmp_path / "c.db", tmp_path / "b.db"
    connect(source).close()
    target.write_bytes(b"precious")
    with pytest.raises(StoreError, match="--force"):
        on_store(source, admin.backup, str(target))
    assert target.read_bytes() == b"precious"
    on_store(source, admin.backup, str(target), force=True)
    assert connect(target, create=False).execute("SELECT count(*) FROM documents").fetchone() == (
        0,
    )
    with pytest.raises(StoreError, match="itself"):
        on_store(source, admin.backup, str(source), force=True)
    with pytest.raises(StoreError, match="no database"):
        on_store(tmp_path / "missing.db", admin.backup, str(tmp_path / "x.db"))


def test_check_skips_a_document_deleted_while_it_runs(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    for name in ("a", "b", "c"):
        append_updates(db, [(name, u, 1.0, None) for u in keystrokes(name)])
    rooms = on_store(tmp_path / "c.db", admin.all_rooms)

    def delete_the_last(_: int) -> None:
        if rooms[-1] in doc_names(db):
            delete_doc(db, rooms[-1])  # another process, while the check runs

    checked, problems = on_store(tmp_path / "c.db", admin.check, progress=delete_the_last)
    assert (checked, problems) == (2, [])
