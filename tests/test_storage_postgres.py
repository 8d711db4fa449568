"""The PostgreSQL store with several nodes on one database, through outages, and from
the admin CLI. (What every backend must do is tests/test_storage_conformance.py.)

Each test gets a database of its own on the machine's PostgreSQL (tests/postgres.py);
two stores on it are two nodes: separate connections, commit threads and counters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from click.testing import CliRunner, Result
from pycrdt import Doc, Text

from collab.cli import cli
from collab.config import Settings
from collab.errors import StoreError
from collab.storage import Store, open_store
from collab.storage.base import DocVersion, StoredUpdates
from collab.updates import decode_state_vector, doc_from
from tests.edits import keystrokes
from tests.postgres import (
    SERVER,
    TcpProxy,
    fresh_database,
    require_postgres,
    terminate_connections,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def node(url: str, **changes: Any) -> Store:
    """A store as one ``collab serve`` node opens it (not yet entered)."""
    settings = Settings(db=url, commit_delay=0.002, compact_rows=100_000, compact_bytes=1 << 30)
    return open_store(dataclasses.replace(settings, **changes))


def text_of(updates: list[bytes]) -> str:
    return str(doc_from(updates).get("content", type=Text))


async def type_into(store: Store, room: str, updates: list[bytes], *, pace: float = 0.0) -> None:
    """Append ``updates`` one by one, ``pace`` seconds apart, as a room fed by a typist
    (a pace gives each commit a few updates, and another node's commits in between)."""
    for update in updates:
        store.append_nowait(room, update)
        await anyio.sleep(pace)
    await store.flush()


# -- several nodes, one document ----------------------------------------------------


async def test_two_nodes_appending_to_one_document_store_each_update_once_gap_free(
    pg_url: str,
) -> None:
    a_updates = keystrokes("a" * 400, Doc())
    b_updates = keystrokes("b" * 400, Doc())
    reported: dict[str, list[StoredUpdates]] = {"a": [], "b": []}
    async with node(pg_url) as a, node(pg_url) as b:
        a.on_stored(reported["a"].append)
        b.on_stored(reported["b"].append)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(type_into, a, "doc", a_updates, pace=0.001))
            tg.start_soon(partial(type_into, b, "doc", b_updates, pace=0.001))
        tail = await a.read_after("doc", 0, 0, limit=10_000)
    assert tail.entries is not None
    assert [e.seq for e in tail.entries] == list(range(1, 801))  # unique, no gaps
    assert sorted(e.update for e in tail.entries) == sorted(a_updates + b_updates)
    seqs = {who: [e.seq for stored in reported[who] for e in stored.entries] for who in reported}
    assert sorted(seqs["a"] + seqs["b"]) == list(range(1, 801))  # what each node was told
    # The commits interleaved: neither node's seqs are one block.
    assert seqs["a"] != list(range(seqs["a"][0], seqs["a"][0] + 400))
    assert seqs["b"] != list(range(seqs["b"][0], seqs["b"][0] + 400))
    assert text_of([e.update for e in tail.entries]).count("a") == 400


async def test_two_nodes_compacting_one_document_while_both_append_lose_nothing(
    pg_url: str,
) -> None:
    a_doc: Doc[Any] = Doc()
    b_doc: Doc[Any] = Doc()
    a_updates = keystrokes("x" * 600, a_doc)
    b_updates = keystrokes("y" * 600, b_doc)
    compacted = {"a": 0, "b": 0}
    async with node(pg_url) as a, node(pg_url) as b:
        await type_into(a, "doc", a_updates[:100])
        done = anyio.Event()

        async def compact_until_done(store: Store, who: str) -> None:
            while not done.is_set():
                if await store.compact("doc") is not None:
                    compacted[who] += 1
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(compact_until_done, a, "a")
            tg.start_soon(compact_until_done, b, "b")
            async with anyio.create_task_group() as typing:
                typing.start_soon(partial(type_into, a, "doc", a_updates[100:], pace=0.001))
                typing.start_soon(partial(type_into, b, "doc", b_updates, pace=0.001))
            done.set()
        stored = (await a.load("doc")).updates
        info = await b.info("doc")
        # Every update is still kept raw once, in the log or in history (retention 7 days).
        tail = await b.read_after("doc", 0, 0, limit=10_000)
    assert compacted["a"] + compacted["b"] >= 2
    assert len(stored) < 1200  # it was compacted ...
    assert info.updates == 1200  # ... its rows stand for each update once ...
    doc = doc_from(stored)  # ... and holds everything
    expected = doc_from(a_updates + b_updates)
    # (Decoded: the encoding lists clients in no fixed order.)
    assert decode_state_vector(doc.get_state()) == decode_state_vector(expected.get_state())
    assert str(doc.get("content", type=Text)) == str(expected.get("content", type=Text))
    assert tail.entries is not None
    assert [e.seq for e in tail.entries] == list(range(1, 1201))
    assert sorted(e.update for e in tail.entries) == sorted(a_updates + b_updates)


async def test_an_append_under_an_epoch_another_node_retired_is_refused(pg_url: str) -> None:
    (old,) = keystrokes("o")
    (late,) = keystrokes("l")
    async with node(pg_url) as a, node(pg_url) as b:
        stale: list[tuple[str, int]] = []
        a.on_stale(lambda room, epoch: stale.append((room, epoch)))
        a.append_nowait("doc", old, epoch=0)
        await a.flush()
        assert (await a.load("doc")).epoch == 0
        assert await b.delete("doc") == 1  # another node (or its HTTP API) deletes it
        assert await a.versions(["doc"]) == {"doc": DocVersion(1, 0)}  # a's poll sees it
        a.append_nowait("doc", late, epoch=0)  # a room of a loaded before the delete
        await a.flush()
        assert stale == [("doc", 0)]
        assert (await b.load("doc")).updates == []
        # An import on one node bumps the generation every node polls.
        (imported,) = keystrokes("i")
        await b.append("other", imported)
        assert (await a.versions(["other"]))["other"] == DocVersion(0, 1)


# -- the database away for a while --------------------------------------------------


class CommitFailures(logging.Handler):
    """Counts the commit thread's "cannot commit ..., retrying" lines."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("cannot commit"):
            with self._lock:
                self.count += 1


@pytest.fixture
def commit_failures() -> Iterator[CommitFailures]:
    handler = CommitFailures()
    logger = logging.getLogger("collab.storage")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def wait_for_failures(failures: CommitFailures, count: int) -> None:
    with anyio.fail_after(20):
        while failures.count < count:
            await anyio.sleep(0.01)


async def test_commits_wait_out_an_outage_unacknowledged_and_land_when_it_ends(
    pg_url: str, commit_failures: CommitFailures
) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    doc: Doc[Any] = Doc()
    before, during = keystrokes("on disk", doc), keystrokes(" in memory", doc)
    with TcpProxy() as proxy:
        async with node(proxy.url(dbname)) as store:
            commits: list[int] = []
            store.on_commit(lambda ticket, _at: commits.append(ticket))
            await type_into(store, "doc", before)
            durable = store.durable_ticket
            proxy.cut()
            tickets = [store.append_nowait("doc", update) for update in during]
            await wait_for_failures(commit_failures, 2)  # it tried, and tried again
            assert store.durable_ticket == durable  # nothing acknowledged meanwhile
            assert commits[-1] == durable
            async with node(pg_url) as direct:  # the database itself has only the first part
                assert text_of((await direct.load("doc")).updates) == "on disk"
            proxy.restore()
            with anyio.fail_after(30):
                await store.flush()
            assert store.durable_ticket == tickets[-1]
    async with node(pg_url) as direct:
        stored = (await direct.load("doc")).updates
    assert text_of(stored) == "on disk in memory"
    assert decode_state_vector(doc_from(stored).get_state()) == decode_state_vector(doc.get_state())


async def test_terminated_connections_are_made_again(
    pg_url: str, commit_failures: CommitFailures
) -> None:
    async with node(pg_url) as store:
        await type_into(store, "doc", keystrokes("one"))
        assert text_of((await store.load("doc")).updates) == "one"
        assert terminate_connections(pg_url) >= 2  # the commit thread's and the pool's
        await type_into(
            store, "doc", keystrokes("two", doc_from((await store.load("doc")).updates))
        )
        assert text_of((await store.load("doc")).updates) == "onetwo"


async def test_opening_fails_clearly(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/collab_no_such_database"
    with pytest.raises(StoreError, match="collab_no_such_database"):
        async with node(missing):
            pass
    with pytest.raises(StoreError, match="no collab database"):  # the CLI never creates one
        async with open_store(Settings(db=pg_url), create=False, background=False):
            pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(StoreError, match="not a collab database.*invoices"):
        async with node(pg_url):
            pass


async def test_nodes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    opened: list[list[str]] = []
    all_open = anyio.Event()

    async def open_one() -> None:
        async with node(pg_url) as store:
            opened.append(await store.names())
            if len(opened) == 3:
                all_open.set()
            await all_open.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(open_one)
    assert opened == [[], [], []]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT name FROM collab_migrations").fetchall()
    assert len(rows) == 1


# -- the admin CLI ------------------------------------------------------------------


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--db", db])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


async def stored(url: str, room: str, text: str) -> None:
    async with node(url) as store:
        await type_into(store, room, keystrokes(text))


def test_the_admin_commands_work_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    anyio.run(stored, pg_url, "notes", "hello postgres")
    anyio.run(stored, pg_url, "other", "x")
    listed = ok(run(pg_url, "docs", "list"))
    assert "notes" in listed and "other" in listed
    assert ok(run(pg_url, "docs", "export", "notes", "--format", "text")) == "hello postgres\n"
    assert "compacted 1 of 2 documents" in ok(run(pg_url, "docs", "compact", "--all"))
    assert "checked 2 documents: none failed" in ok(run(pg_url, "check"))
    backup = tmp_path / "copy.db"
    assert "backed up" in ok(run(pg_url, "backup", str(backup)))
    assert run(pg_url, "backup", str(backup)).exit_code == 1  # exists: --force to overwrite
    ok(run(pg_url, "docs", "delete", "notes", "--yes"))
    assert "notes" not in ok(run(pg_url, "docs", "list"))
    # The backup is a SQLite collab database of the moment before the delete.
    copy = str(backup)
    assert ok(run(copy, "docs", "export", "notes", "--format", "text")) == "hello postgres\n"
    assert "checked 2 documents: none failed" in ok(run(copy, "check"))
    with sqlite3.connect(backup) as raw:
        assert raw.execute("SELECT count(*) FROM history").fetchone()[0] == len("hello postgres")
    missing = run(pg_url.rsplit("/", 1)[0] + "/collab_no_such_database", "docs", "list")
    assert missing.exit_code == 1 and "collab_no_such_database" in missing.output
    assert "Traceback" not in missing.output


def test_check_reports_a_broken_seq_counter(pg_url: str) -> None:
    anyio.run(stored, pg_url, "doc", "abc")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE documents SET last_seq = 1")  # as a bad hand edit would
    result = run(pg_url, "check")
    assert result.exit_code != 0
    assert "last_seq is 1 but its newest row has seq 3" in result.output


def test_the_commit_latency_benchmark_runs(tmp_path: Path) -> None:
    require_postgres()
    out = tmp_path / "latency.json"
    bench = Path(__file__).resolve().parent.parent / "bench" / "commit_latency.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLLAB_BENCH_POSTGRES": SERVER},
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert set(results["commit"]) == {
        f"{backend}/{rows}"
        for backend in ("sqlite-normal", "sqlite-full", "postgresql")
        for rows in (1, 10, 100)
    }
    assert set(results["store"]) == {"sqlite-normal", "postgresql", "postgresql-two-nodes"}
    assert all(r["samples_per_run"] > 0 for r in results["commit"].values())
