"""The SQLite update log: group commit, ordering, replay, durability of the queue."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab.config import Settings
from collab.errors import StoreError
from collab.rooms import build_doc
from collab.storage import open_store
from collab.storage.sqlite import SQLiteLog, connect, list_docs


def edits_to_updates(edits: list[tuple[int, str, int]]) -> tuple[list[bytes], str]:
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates = []
    for position, insert, delete in edits:
        before = doc.get_state()
        if insert:
            text.insert(min(position, len(text)), insert)
        elif len(text):
            start = min(position, len(text) - 1)
            del text[start : min(start + delete, len(text))]
        updates.append(doc.get_update(before))
    return updates, str(text)


async def test_a_burst_is_one_transaction(tmp_path: Path) -> None:
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0.05) as log:
        commits: list[int] = []
        log.on_commit(lambda ticket, _at: commits.append(ticket))
        tickets = [log.append_nowait("doc", b"\x00\x00" + bytes([i])) for i in range(100)]
        await log.flush()
        assert tickets == list(range(1, 101))
        assert commits == [100]
        assert log.durable_ticket == 100


async def test_log_keeps_order_and_documents_apart(tmp_path: Path) -> None:
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0) as log:
        for i in range(10):
            log.append_nowait("a", bytes([i]))
            log.append_nowait("b", bytes([100 + i]))
            if i == 5:
                await log.flush()
        assert (await log.load("a")).updates == [bytes([i]) for i in range(10)]
        assert (await log.load("b")).updates == [bytes([100 + i]) for i in range(10)]
        assert (await log.load("never-written")).updates == []


@pytest.mark.timeout(30)
async def test_a_name_with_a_nul_is_its_own_document_and_commits(tmp_path: Path) -> None:
    # SQLite's JSON functions cut strings at a NUL: a lookup through them found "a" for
    # "a\0b", or no row at all, and the second commit to "a\0b" failed forever.
    async with SQLiteLog(tmp_path / "c.db", commit_delay=0) as log:
        log.append_nowait("a", b"1")
        log.append_nowait("a\0b", b"2")
        await log.flush()
        log.append_nowait("a\0b", b"3")
        log.append_nowait("c", b"4")
        with anyio.fail_after(5):
            await log.flush()
        assert (await log.load("a")).updates == [b"1"]
        assert (await log.load("a\0b")).updates == [b"2", b"3"]
        assert (await log.load("c")).updates == [b"4"]


async def test_leaving_the_block_commits_everything_even_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with anyio.CancelScope() as scope:
        async with SQLiteLog(path, commit_delay=10) as log:
            log.append_nowait("doc", b"last words")
            scope.cancel()
            await anyio.sleep(1)
    async with SQLiteLog(path) as log:
        assert (await log.load("doc")).updates == [b"last words"]


async def test_list_docs_reports_sizes(tmp_path: Path) -> None:
    async with SQLiteLog(tmp_path / "c.db") as log:
        log.append_nowait("small", b"12")
        log.append_nowait("big", b"1234")
        log.append_nowait("big", b"56")
        docs = {d.name: d for d in await log.list_docs()}
    assert docs["big"].bytes == 6 and docs["big"].updates == 2
    assert docs["small"].bytes == 2 and docs["small"].updates == 1


def test_schema_is_created_once_and_reopens(tmp_path: Path) -> None:
    db = connect(tmp_path / "c.db")
    db.close()
    db = connect(tmp_path / "c.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert list_docs(db) == []
    db.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        connect(path)


edits = st.lists(
    st.tuples(st.integers(0, 50), st.text("abc xyz\n", max_size=5), st.integers(1, 5)),
    min_size=1,
    max_size=30,
)


@pytest.mark.parametrize("create", [True, False])
def test_a_database_of_another_program_is_refused_and_left_alone(
    tmp_path: Path, create: bool
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE people (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a collab database .*people"):
        connect(path, create=create)
    assert path.read_bytes() == before  # not switched to WAL, no tables added
    connect(tmp_path / "ours.db").close()
    connect(tmp_path / "ours.db", create=False).close()  # collab's own reopens


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits)
def test_stored_log_replays_to_the_same_state(
    tmp_path: Path, edit_list: list[tuple[int, str, int]]
) -> None:
    updates, expected = edits_to_updates(edit_list)
    path = tmp_path / f"replay-{abs(hash(tuple(edit_list)))}.db"

    async def main() -> None:
        async with SQLiteLog(path, commit_delay=0) as log:
            for update in updates:
                log.append_nowait("doc", update)
        async with SQLiteLog(path) as log:
            stored = await log.load("doc")
        assert str(build_doc("doc", stored.updates).get("content", type=Text)) == expected

    anyio.run(main)
    path.unlink()


def test_corrupt_stored_update_is_reported_not_served(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot be applied"):
        build_doc("doc", [b"\x01\x01\xff\xff"])


def test_other_processes_can_read_while_the_log_is_open(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def main() -> None:
        async with SQLiteLog(path, commit_delay=0) as log:
            log.append_nowait("doc", b"x")
            await log.flush()
            with sqlite3.connect(path) as other:
                assert other.execute("SELECT count(*) FROM updates").fetchone()[0] == 1

    anyio.run(main)


def poison(path: Path, room: str) -> None:
    """Make every insert of ``room``'s updates fail with a constraint error."""
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON updates WHEN NEW.doc_id IN"
            f" (SELECT id FROM documents WHERE name = '{room}')"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )


@pytest.mark.timeout(30)
async def test_a_room_that_cannot_be_stored_does_not_hold_back_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    async with SQLiteLog(path, commit_delay=0) as log:
        log.append_nowait("poison", b"0")  # the document row exists from here on
        await log.flush()
    poison(path, "poison")
    failed: list[str] = []
    async with SQLiteLog(path, commit_delay=0.05) as log:
        log.on_failed(failed.append)
        log.append_nowait("fine", b"1")
        log.append_nowait("poison", b"2")
        log.append_nowait("fine", b"3")
        with anyio.fail_after(5):
            await log.flush()
        assert failed == ["poison"]
        log.append_nowait("fine", b"4")
        with anyio.fail_after(5):
            await log.flush()
        assert (await log.load("fine")).updates == [b"1", b"3", b"4"]
        assert (await log.load("poison")).updates == [b"0"]


# -- open_store: the store URL picks the backend --------------------------------------


@pytest.mark.parametrize(
    ("db", "path"),
    [
        ("data/c.db", "data/c.db"),
        ("sqlite:///data/c.db", "data/c.db"),
        ("SQLite:///data/c.db", "data/c.db"),
        (":memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_open_store_reads_paths_and_sqlite_urls(db: str, path: str) -> None:
    store = open_store(Settings(db=db))
    assert isinstance(store, SQLiteLog) and str(store.path) == path


def test_open_store_takes_absolute_paths_and_settings(tmp_path: Path) -> None:
    store = open_store(Settings(db=f"sqlite:///{tmp_path}/c.db", commit_delay=0.5))
    assert isinstance(store, SQLiteLog)
    assert (store.path, store.commit_delay) == (f"{tmp_path}/c.db", 0.5)
    plain = open_store(Settings(db=tmp_path / "c.db"), create=False, background=False)
    assert isinstance(plain, SQLiteLog)
    assert (plain.path, plain.create, plain.background) == (str(tmp_path / "c.db"), False, False)


async def test_a_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store(Settings(db="sqlite:///data/c.db", commit_delay=0)) as store:
        store.append_nowait("doc", b"x")
    assert (tmp_path / "data" / "c.db").is_file()


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("mysql://localhost/collab", "unknown store URL scheme 'mysql'.*sqlite://"),
        ("redis://x", "supported are a file path, :memory: and sqlite://, postgresql://"),
        ("postgresql://x/y?bogus=1", "is not a PostgreSQL URL.*bogus"),
        ("sqlite://host/c.db", "not a SQLite URL: write sqlite:///relative"),
        ("sqlite:///", "no database given"),
    ],
)
def test_an_unknown_store_url_is_a_clear_error(db: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(Settings(db=db))


async def test_an_in_memory_store_backs_up_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    steps: list[tuple[int, int]] = []
    async with open_store(Settings(db=":memory:", commit_delay=0)) as store:
        store.append_nowait("doc", b"kept")
        await store.flush()
        size = await store.backup(str(target), progress=lambda d, t: steps.append((d, t)))
        assert (await store.load("doc")).updates == [b"kept"]  # the store carries on
    assert size == target.stat().st_size and steps and steps[-1][0] == steps[-1][1]
    async with SQLiteLog(target, create=False) as copy:
        assert (await copy.load("doc")).updates == [b"kept"]
