"""Compaction: the squashed row stands for the rows it replaced, atomically and off the lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from collab.errors import InvalidUpdateError
from collab.storage.sqlite import (
    SQLiteLog,
    compact_doc,
    connect,
    read_compaction,
    read_doc,
    swap_compaction,
)
from collab.storage.sqlite import queries as queries_module
from collab.storage.sqlite import store as store_module
from collab.updates import doc_from, squash
from tests.conftest import ROOT
from tests.edits import keystrokes


def text_of(updates: list[bytes], root: str = "content") -> str:
    return str(doc_from(updates).get(root, type=Text))


def rows(path: Path, room: str = "doc") -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return [
            (int(seq), int(merged))
            for seq, merged in db.execute(
                "SELECT seq, merged FROM updates JOIN documents d ON d.id = doc_id"
                " WHERE d.name = ? ORDER BY seq",
                [room],
            )
        ]


async def test_compaction_keeps_the_document_and_leaves_one_row(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    updates = keystrokes("hello, compaction")
    async with SQLiteLog(path, commit_delay=0, compact_rows=10_000) as log:
        for update in updates:
            log.append_nowait("doc", update)
        await log.flush()
        result = await log.compact("doc")
        assert result is not None and result.rows_before == len(updates)
        stored = await log.load("doc")
    assert len(stored.updates) == 1
    assert text_of(stored.updates) == "hello, compaction"
    assert doc_from(stored.updates).get_state() == doc_from(updates).get_state()
    assert rows(path) == [(len(updates), len(updates))]


async def test_the_log_compacts_a_document_by_itself_past_compact_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0, compact_rows=20) as log:
        doc: Doc[Any] = Doc()
        for _ in range(5):
            for update in keystrokes("0123456789", doc):
                log.append_nowait("doc", update)
            await log.flush()
        with anyio.fail_after(10):
            while len(rows(path)) > 21:
                await anyio.sleep(0.01)
        assert text_of((await log.load("doc")).updates) == "0123456789" * 5
    assert rows(path)[0][1] > 1  # the first row stands for many


async def test_compaction_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0, compact_rows=10_000, compact_bytes=2000) as log:
        doc: Doc[Any] = Doc()
        for update in keystrokes("x" * 200, doc):
            log.append_nowait("doc", update)
        await log.flush()
        with anyio.fail_after(10):
            while len(rows(path)) > 100:
                await anyio.sleep(0.01)


async def test_group_commits_go_on_while_a_compaction_squashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.db"
    started, release = threading.Event(), threading.Event()

    def slow_squash(updates: list[bytes]) -> bytes:
        started.set()
        assert release.wait(10)
        return squash(updates)

    monkeypatch.setattr(store_module, "squash", slow_squash)
    doc: Doc[Any] = Doc()
    first = keystrokes("before ", doc)
    after = keystrokes("during", doc)
    async with SQLiteLog(path, commit_delay=0, compact_rows=10_000) as log:
        for update in first:
            log.append_nowait("doc", update)
        await log.flush()
        async with anyio.create_task_group() as tg:
            tg.start_soon(log.compact, "doc")
            await anyio.to_thread.run_sync(started.wait)
            # The squash holds no lock: these commit while it is stuck.
            for update in after:
                log.append_nowait("doc", update)
            with anyio.fail_after(5):
                await log.flush()
            release.set()
        stored = await log.load("doc")
    assert text_of(stored.updates) == "before during"
    assert rows(path) == [(len(first), len(first))] + [
        (len(first) + i, 1) for i in range(1, len(after) + 1)
    ]


def test_compaction_is_skipped_when_the_rows_changed_meanwhile(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    queries_module.append_updates(db, [("doc", u, 1.0, None) for u in keystrokes("abc")])
    job = read_compaction(db, "doc")
    assert job is not None
    compact_doc(db, "doc")  # another compaction got there first
    assert swap_compaction(db, job, squash(job.updates)) is None
    assert text_of(read_doc(db, "doc").updates) == "abc"


def test_an_error_inside_the_swap_rolls_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = connect(tmp_path / "c.db")
    queries_module.append_updates(db, [("doc", u, 1.0, None) for u in keystrokes("abc")])
    job = read_compaction(db, "doc")
    assert job is not None

    def fail(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(queries_module, "_keep_base", fail)
    with pytest.raises(sqlite3.OperationalError):
        swap_compaction(db, job, squash(job.updates))
    assert not db.conn.in_transaction
    assert [len(r) for r in [read_doc(db, "doc").updates]] == [3]


CRASH = textwrap.dedent(
    """
    import os, sys
    from collab.storage.sqlite import connect, compact_doc
    db = connect(sys.argv[1])
    target = sys.argv[2]
    def trace(sql):
        if sql.lstrip().upper().startswith(target):
            os._exit(3)
    db.conn.set_trace_callback(trace)
    compact_doc(db, "doc")
    os._exit(0)
    """
)


@pytest.mark.parametrize(
    ("crash_at", "rows_after"),
    [
        ("DELETE FROM UPDATES", "old"),  # after the history copy, before the delete
        ("INSERT INTO UPDATES", "old"),  # after the delete, before the squashed row
        ("COMMIT", "old"),  # everything written but not committed
    ],
)
def test_a_crash_in_the_middle_leaves_the_old_rows(
    tmp_path: Path, crash_at: str, rows_after: str
) -> None:
    path = tmp_path / "c.db"
    db = connect(path)
    updates = keystrokes("crash test")
    queries_module.append_updates(db, [("doc", u, 1.0, None) for u in updates])
    db.close()
    result = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), crash_at],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr.decode()
    assert rows(path) == [(i, 1) for i in range(1, len(updates) + 1)]
    db = connect(path)
    assert text_of(read_doc(db, "doc").updates) == "crash test"
    assert db.execute("SELECT count(*) FROM history").fetchone()[0] == 0


def test_after_commit_the_new_row_is_there(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = connect(path)
    queries_module.append_updates(db, [("doc", u, 1.0, None) for u in keystrokes("done")])
    db.close()
    # Killed right after its transaction: the process never got to close the database.
    crash_after = CRASH.replace('compact_doc(db, "doc")', 'compact_doc(db, "doc"); os._exit(3)')
    result = subprocess.run(
        [sys.executable, "-c", crash_after, str(path), "NEVER"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr.decode()
    assert rows(path) == [(4, 4)]
    assert text_of(read_doc(connect(path), "doc").updates) == "done"


def test_updates_waiting_for_missing_dependencies_survive_compaction(tmp_path: Path) -> None:
    doc: Doc[Any] = Doc()
    first, second, third = keystrokes("abc", doc)
    db = connect(tmp_path / "c.db")
    # The first keystroke never arrived (yet): the other two wait for it.
    queries_module.append_updates(db, [("doc", u, 1.0, None) for u in (second, third)])
    compact_doc(db, "doc")
    assert len(read_doc(db, "doc").updates) == 1
    queries_module.append_updates(db, [("doc", first, 2.0, None)])
    assert text_of(read_doc(db, "doc").updates) == "abc"


def test_a_corrupt_row_stops_compaction_and_changes_nothing(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    queries_module.append_updates(
        db,
        [("doc", u, 1.0, None) for u in keystrokes("ab")] + [("doc", b"\x01\x01\xff", 1.0, None)],
    )
    with pytest.raises(InvalidUpdateError):
        compact_doc(db, "doc")
    assert len(read_doc(db, "doc").updates) == 3


async def test_a_document_that_cannot_be_compacted_is_logged_not_retried_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0, compact_rows=3) as log:
        for i in range(5):
            log.append_nowait("bad", b"\x01\x01\xff" + bytes([i]))
        await log.flush()
        with anyio.fail_after(5):
            while "cannot compact 'bad'" not in caplog.text:
                await anyio.sleep(0.01)
        assert len((await log.load("bad")).updates) == 5


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "set"]),
        st.integers(0, 40),
        st.text("ab xy\n", min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits, st.sets(st.integers(0, 40), max_size=4))
def test_compacting_at_any_points_loads_the_same_document(
    tmp_path: Path, edit_list: list[tuple[str, int, str]], compact_at: set[int]
) -> None:
    doc: Doc[Any] = Doc()
    text, meta = doc.get("content", type=Text), doc.get("meta", type=Map)
    path = tmp_path / f"p{abs(hash((tuple(edit_list), tuple(sorted(compact_at)))))}.db"
    db = connect(path)
    try:
        for i, (kind, position, chars) in enumerate(edit_list):
            before = doc.get_state()
            if kind == "insert":
                text.insert(min(position, len(text)), chars)
            elif kind == "delete" and len(text):
                start = min(position, len(text) - 1)
                del text[start : min(start + len(chars), len(text))]
            else:
                meta[chars] = position
            queries_module.append_updates(db, [("doc", doc.get_update(before), float(i), None)])
            if i in compact_at:
                compact_doc(db, "doc", retention=0 if i % 2 else 3600, now=float(i))
        loaded = doc_from(read_doc(db, "doc").updates)
        assert str(loaded.get("content", type=Text)) == str(text)
        assert loaded.get("meta", type=Map).to_py() == meta.to_py()
        assert loaded.get_state() == doc.get_state()
    finally:
        db.close()
        path.unlink()
