"""``collab serve --db postgresql://...``: edits survive a restart, and a database outage
does not stop editing, is never acknowledged as saved, and is caught up when it ends.

The server runs as a real process on a database of its own (tests/postgres.py); the
outage is a TCP proxy between the server and PostgreSQL that the test cuts and restores,
so the machine's PostgreSQL keeps running for everyone else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from pycrdt import Text

from collab.cli import cli
from collab.client import Client, covers
from collab.config import Settings
from collab.errors import CloseCode
from collab.storage import open_store
from collab.updates import decode_state_vector, doc_from
from tests.conftest import ServerProcess
from tests.postgres import TcpProxy, fresh_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """The servers a test starts, killed afterwards with their logs printed."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.close()
        print(f"--- collab serve log ({process.log_path}) ---\n{process.log()[-20000:]}")


def serve(started: list[ServerProcess], tmp_path: Path, url: str) -> ServerProcess:
    process = ServerProcess(url, tmp_path / f"server{len(started)}.log", "--commit-delay", "0.01")
    started.append(process)
    process.start()
    return process


def text(client: Client) -> str:
    return str(client.doc.get("content", type=Text))


async def stored_text(url: str, room: str) -> str:
    """The document as PostgreSQL holds it, read past any server."""
    async with open_store(Settings(db=url), create=False, background=False) as store:
        return str(doc_from((await store.load(room)).updates).get("content", type=Text))


async def test_edits_on_postgresql_survive_a_restart(
    pg_url: str, tmp_path: Path, start_server: list[ServerProcess]
) -> None:
    server = serve(start_server, tmp_path, pg_url)
    async with Client(server.url("notes/plan"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "kept in postgres")
        await client.wait_durable()
    await anyio.to_thread.run_sync(server.restart)
    async with Client(server.url("notes/plan")) as reader:
        await reader.synced()
        assert text(reader) == "kept in postgres"
    assert await stored_text(pg_url, "notes/plan") == "kept in postgres"


async def test_editing_goes_on_through_an_outage_and_is_saved_when_it_ends(
    pg_url: str, tmp_path: Path, start_server: list[ServerProcess]
) -> None:
    with TcpProxy() as proxy:
        server = serve(start_server, tmp_path, proxy.url(pg_url.rsplit("/", 1)[1]))
        async with (
            Client(server.url("doc"), ack=True) as writer,
            Client(server.url("doc")) as reader,
        ):
            await writer.synced()
            await reader.synced()
            content = writer.doc.get("content", type=Text)
            content.insert(0, "saved")
            await writer.wait_durable()

            proxy.cut()
            content.insert(len(content), " while the database is away")
            await reader.wait_for(lambda: text(reader) == "saved while the database is away")
            with anyio.fail_after(20):  # the server tried to commit it, and failed
                while "cannot commit" not in server.log():
                    await anyio.sleep(0.05)
            local = decode_state_vector(writer.doc.get_state())
            assert not covers(writer.durable_state, local)  # never acknowledged
            async with Client(server.url("doc")) as joiner:  # the open room serves it
                await joiner.synced()
                assert text(joiner) == "saved while the database is away"
            assert await stored_text(pg_url, "doc") == "saved"

            proxy.restore()
            await writer.wait_durable(timeout=30)  # the retries land, then the ack
            assert covers(writer.durable_state, local)
        assert await stored_text(pg_url, "doc") == "saved while the database is away"


async def test_two_nodes_on_one_database_store_every_edit_once(
    pg_url: str, tmp_path: Path, start_server: list[ServerProcess]
) -> None:
    # No bus between them: each node's room holds its own client's edits, and the shared
    # store holds both, each once, with gap-free seqs.
    nodes = [serve(start_server, tmp_path, pg_url) for _ in range(2)]
    async with (
        Client(nodes[0].url("shared"), ack=True) as a,
        Client(nodes[1].url("shared"), ack=True) as b,
    ):
        await a.synced()
        await b.synced()
        for i in range(40):
            for who, client in (("a", a), ("b", b)):
                content = client.doc.get("content", type=Text)
                content.insert(len(content), f"<{who}{i}>")
            await anyio.sleep(0.005)  # a typist's pace: many commits on each node
        await a.wait_durable()
        await b.wait_durable()
    async with open_store(Settings(db=pg_url), create=False, background=False) as store:
        tail = await store.read_after("shared", 0, 0, limit=10_000)
        stored = doc_from((await store.load("shared")).updates)
    assert tail.entries is not None
    assert [e.seq for e in tail.entries] == list(range(1, len(tail.entries) + 1))
    assert len(tail.entries) == len({e.update for e in tail.entries})  # none stored twice
    words = re.findall(r"<[ab]\d+>", str(stored.get("content", type=Text)))
    assert sorted(words) == sorted(f"<{w}{i}>" for w in "ab" for i in range(40))


async def test_a_delete_closes_the_stale_clients_of_every_node(
    pg_url: str, tmp_path: Path, start_server: list[ServerProcess]
) -> None:
    nodes = [serve(start_server, tmp_path, pg_url) for _ in range(2)]
    async with (
        Client(nodes[0].url("minutes"), ack=True) as a,
        Client(nodes[1].url("minutes"), ack=True) as b,
    ):
        await a.synced()
        await b.synced()
        a.doc.get("content", type=Text).insert(0, "confidential")
        await a.wait_durable()
        deleted = await anyio.to_thread.run_sync(
            lambda: CliRunner().invoke(cli, ["docs", "delete", "minutes", "--yes", "--db", pg_url])
        )
        assert deleted.exit_code == 0, deleted.output
        with anyio.fail_after(15):  # each node's version poll sees the new epoch
            while a.close_code is None or b.close_code is None:
                await anyio.sleep(0.05)
        assert a.close_code == b.close_code == CloseCode.STALE_EPOCH
    async with Client(nodes[1].url("minutes")) as fresh:
        await fresh.synced()
        assert text(fresh) == ""
