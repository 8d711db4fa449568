"""``collab serve --db postgresql://...``: edits survive a restart, and a database outage
does not stop editing, is never acknowledged as saved, and is caught up when it ends.

The server runs as a real process on a database of its own (tests/postgres.py); the
outage is a TCP proxy between the server and PostgreSQL that the test cuts and restores,
so the machine's PostgreSQL keeps running for everyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Text

from collab.client import Client, covers
from collab.config import Settings
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
