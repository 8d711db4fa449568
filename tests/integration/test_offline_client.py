"""The offline-first client against a real server whose connection is cut and restored:
the server stopped and started again, a proxy that drops every connection, and a client
process killed while offline and started again later. Also the exact "saved": a
delete-only edit while the server cannot commit."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from pycrdt import Doc, Text

from collab import client as client_module
from collab.client import Client, ConnectionState, ServerUnreachableError
from collab.errors import CollabError
from tests.conftest import ROOT, ServerProcess, free_port, running_server


def stored_text(server: ServerProcess, name: str) -> str:
    """The document as the server's database file holds it (read directly, not served)."""
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute(
            "SELECT data FROM updates JOIN documents ON documents.id = updates.doc_id"
            " WHERE documents.name = ? ORDER BY seq",
            (name,),
        ).fetchall()
    doc: Doc = Doc()
    for (data,) in rows:
        doc.apply_update(bytes(data))
    return str(doc.get("content", type=Text))


async def served_text(server: ServerProcess, name: str) -> str:
    async with Client(server.url(name)) as reader:
        await reader.synced()
        return str(reader.doc.get("content", type=Text))


@asynccontextmanager
async def write_lock(server: ServerProcess) -> AsyncIterator[None]:
    """Hold the database's write lock, so that the server cannot commit meanwhile."""
    db = sqlite3.connect(server.db_path, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


# -- exact "saved" ------------------------------------------------------------------


async def test_a_delete_only_edit_is_saved_exactly_when_it_is_on_disk(
    server: ServerProcess,
) -> None:
    async with (
        Client(server.url("deletes"), ack=True) as writer,
        Client(server.url("deletes")) as watcher,
    ):
        await writer.synced()
        await watcher.synced()
        text = writer.doc.get("content", type=Text)
        text += "keep this, not this"
        await writer.wait_durable()
        async with write_lock(server):
            del text[len("keep this") : len("keep this, not this")]
            # The server has it (relayed to the watcher) but cannot commit it.
            await watcher.wait_for(
                lambda: str(watcher.doc.get("content", type=Text)) == "keep this"
            )
            assert not writer.is_durable
            assert stored_text(server, "deletes") == "keep this, not this"
        await writer.wait_durable(timeout=30)
        assert stored_text(server, "deletes") == "keep this"


# -- the connection cut and restored --------------------------------------------------


async def test_the_client_comes_back_after_a_server_restart(server: ServerProcess) -> None:
    async with Client(server.url("restart"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        text += "before. "
        await client.wait_durable()
        await anyio.to_thread.run_sync(server.stop)
        await client.wait_for(lambda: client.state is ConnectionState.OFFLINE)
        text += "while down. "
        del text[0 : len("before. ")]
        await anyio.to_thread.run_sync(server.start)
        await client.synced(timeout=30)
        await client.wait_durable(timeout=30)
        # At least one more connection: one may also have reached the old process while it
        # was shutting down (closed at once with 1001) before the new one answered.
        assert client.connections >= 2
    assert stored_text(server, "restart") == "while down. "
    assert await served_text(server, "restart") == "while down. "


class DroppingProxy:
    """A TCP proxy in front of the server that can drop every connection and refuse new
    ones (:meth:`cut`) until :meth:`restore`: a network that comes and goes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.down = False
        self.accepted = 0
        self._scopes: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    def url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{name}"

    def cut(self) -> None:
        self.down = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.down = False

    async def _handle(self, downstream: SocketStream) -> None:
        async with downstream:
            if self.down:
                return  # accepted and closed at once: the handshake fails
            self.accepted += 1
            async with await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, downstream, upstream, tg.cancel_scope)
                        tg.start_soon(self._pipe, upstream, downstream, tg.cancel_scope)
                self._scopes.discard(scope)

    @staticmethod
    async def _pipe(source: SocketStream, sink: SocketStream, both: anyio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        both.cancel()


@asynccontextmanager
async def dropping_proxy(server: ServerProcess) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(server.port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        yield proxy
        tg.cancel_scope.cancel()


async def test_a_dropped_connection_resyncs_both_ways_and_brings_presence_back(
    server: ServerProcess,
) -> None:
    async with (
        dropping_proxy(server) as proxy,
        Client(proxy.url("flaky"), ack=True, max_backoff=0.5) as roaming,
        Client(server.url("flaky")) as office,
    ):
        await roaming.synced()
        await office.synced()
        roaming.set_awareness({"user": "roaming"})
        mine = roaming.doc.get("content", type=Text)
        theirs = office.doc.get("content", type=Text)
        mine += "one two three"
        await office.wait_for(lambda: str(theirs) == "one two three")
        await office.wait_for(lambda: {"user": "roaming"} in office.others.values())

        proxy.cut()
        await roaming.wait_for(lambda: roaming.state is not ConnectionState.CONNECTED)
        # The server noticed too: the roaming client's presence is gone for the others.
        await office.wait_for(lambda: {"user": "roaming"} not in office.others.values())
        del mine[len("one") : len("one two")]  # "one three": a delete while offline
        mine.insert(0, "[r] ")
        theirs += " [o]"  # and an edit the roaming client misses meanwhile
        assert roaming.state is not ConnectionState.CONNECTED
        proxy.restore()

        expected = "[r] one three [o]"
        await roaming.wait_for(lambda: str(mine) == expected, timeout=30)
        await office.wait_for(lambda: str(theirs) == expected, timeout=30)
        await roaming.wait_durable(timeout=30)
        await office.wait_for(lambda: {"user": "roaming"} in office.others.values())
        assert roaming.connections == 2
        assert proxy.accepted >= 2
    assert stored_text(server, "flaky") == expected


async def test_a_client_process_killed_offline_delivers_its_edits_exactly_once_later(
    server: ServerProcess, tmp_path: Path
) -> None:
    local = tmp_path / "plan.ydoc.db"
    url = server.url("plan")
    async with Client(url, ack=True, local=local) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "draft: hello")
        await client.wait_durable()
    await anyio.to_thread.run_sync(server.stop)

    writer = await anyio.open_process(
        [sys.executable, "-m", "tests.integration.offline_writer", url, str(local), "edit-offline"],
        cwd=ROOT,
    )
    try:
        assert writer.stdout is not None
        output = b""
        with anyio.fail_after(30):
            while b"\n" not in output:
                output += await writer.stdout.receive()
        assert output.decode().strip() == "edited hello world"
    finally:
        writer.send_signal(signal.SIGKILL)
        await writer.wait()
    assert writer.returncode == -signal.SIGKILL

    await anyio.to_thread.run_sync(server.start)
    for _ in range(2):  # started again later, twice: nothing arrives a second time
        delivered = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "tests.integration.offline_writer", url, str(local)]
                + ["deliver"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=90,
            )
        )
        assert delivered.returncode == 0, delivered.stderr
        assert delivered.stdout == "hello world\n"
        assert stored_text(server, "plan") == "hello world"
    assert await served_text(server, "plan") == "hello world"


async def test_an_outbox_past_its_bound_resyncs_instead_of_growing(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_OUTBOX_BYTES", 4096)
    async with Client(server.url("flood"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        for i in range(2000):  # ~60 KB of frames queued in one turn: far past 4 KiB
            text += f"{i % 10}"
        await client.wait_durable(timeout=30)
        assert client.connections >= 2
    assert stored_text(server, "flood") == "".join(str(i % 10) for i in range(2000))


# -- the local file ---------------------------------------------------------------------


async def test_a_local_file_keeps_the_document_between_runs_with_no_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    local = tmp_path / "notes.ydoc.db"
    async with Client(server.url("notes"), ack=True, local=local) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "online")
        await client.wait_durable()
    await anyio.to_thread.run_sync(server.stop)
    async with Client(server.url("notes"), local=local) as client:
        assert str(client.doc.get("content", type=Text)) == "online"  # before any network
        assert client.state is not ConnectionState.CONNECTED


async def test_a_local_file_of_another_document_is_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    local = tmp_path / "one.ydoc.db"
    async with Client(server.url("one"), local=local) as client:
        await client.synced()
    with pytest.raises(CollabError, match="holds .*/one, not .*/two"):
        async with Client(server.url("two"), local=local):
            pass


# -- closing --------------------------------------------------------------------------


async def test_leaving_closes_with_a_close_handshake(tmp_path: Path) -> None:
    # uvicorn reports the code of the client's close frame; hypercorn (0.17) reports 1006
    # for every close a client starts, handshake or not, so it cannot tell here.
    for server in running_server(tmp_path, "uvicorn"):
        async with Client(server.url("polite")) as client:
            await client.synced()
        with anyio.fail_after(10):
            while "connection.closed" not in server.log():
                await anyio.sleep(0.05)
        (closed,) = [
            json.loads(line) for line in server.log().splitlines() if "connection.closed" in line
        ]
        assert (closed["code"], closed["by"]) == (1000, "client")


async def test_a_name_the_server_refuses_closes_the_client_for_good(server: ServerProcess) -> None:
    async with Client(server.ws_url + "/bad%00name") as client:
        await client.wait_for(lambda: client.state is ConnectionState.CLOSED)
        assert client.close_code == 4400
        assert client.connections == 1  # no retry: 4400-4499 say do not reconnect


async def test_an_unreachable_server_fails_at_once_without_reconnect() -> None:
    with pytest.raises(ServerUnreachableError, match="connection refused"):
        async with Client(f"ws://127.0.0.1:{free_port()}/x", reconnect=False):
            pass
