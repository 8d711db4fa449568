"""Deleted stays deleted: clients holding a retired epoch's history cannot bring it back."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest
from pycrdt import Doc, Text

from collab.client import Client
from collab.errors import CloseCode
from tests.conftest import ROOT, ServerProcess
from tests.jsclient import js_client


def delete(server: ServerProcess, name: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "collab",
            "docs",
            "delete",
            name,
            "--yes",
            "--db",
            str(server.db_path),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


async def test_delete_closes_open_clients_and_stale_reconnects_are_refused(
    server: ServerProcess,
) -> None:
    old = Doc()
    async with Client(server.url("minutes"), old, ack=True) as client:
        await client.synced()
        old.get("content", type=Text).insert(0, "confidential draft")
        await client.wait_durable()
        await anyio.to_thread.run_sync(delete, server, "minutes")
        with anyio.fail_after(10):
            while client.close_code is None:
                await anyio.sleep(0.05)
        assert client.close_code == CloseCode.STALE_EPOCH
        assert "reload" in client.close_reason

    # The stale tab comes back with its old history (and a new keystroke): refused.
    old.get("content", type=Text).insert(0, "edited offline: ")
    async with Client(server.url("minutes"), old) as stale:
        with anyio.fail_after(10):
            while stale.close_code is None:
                await anyio.sleep(0.05)
    assert stale.close_code == CloseCode.STALE_EPOCH

    # A fresh client, even one that wrote offline, is welcome; nothing old came back.
    fresh = Doc()
    fresh.get("content", type=Text).insert(0, "new minutes")
    async with Client(server.url("minutes"), fresh, ack=True) as client:
        await client.synced()
        await client.wait_durable()
    server.restart()
    async with Client(server.url("minutes")) as reader:
        await reader.synced()
        assert str(reader.doc.get("content", type=Text)) == "new minutes"


@pytest.mark.node
async def test_stock_client_stops_reconnecting_after_a_delete(server: ServerProcess) -> None:
    async with js_client(server.ws_url, "gone") as js:
        await js.call("synced")
        await js.call("insert", text="old text")
        async with Client(server.url("gone")) as watcher:
            await watcher.synced()
            await watcher.wait_for(lambda: str(watcher.doc.get("content", type=Text)) == "old text")
        await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(delete, server, "gone")
        with anyio.fail_after(10):
            while not await js.call("closes"):
                await anyio.sleep(0.1)
        await anyio.sleep(1.5)  # long enough for several reconnect attempts
        closes = await js.call("closes")
        assert [c["code"] for c in closes] == [CloseCode.STALE_EPOCH]
        assert await js.call("wsConnected") is False


async def test_import_while_a_client_is_connected_reaches_it_as_an_edit(
    server: ServerProcess, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    async with Client(server.url("shared-notes")) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        text += "typed live. "
        source = Doc()
        source.get("content", type=Text).insert(0, "imported. ")
        path = tmp_path / "import.ydoc"
        path.write_bytes(source.get_update())
        await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "collab",
                    "docs",
                    "import",
                    "shared-notes",
                    str(path),
                    "--db",
                    str(server.db_path),
                ],
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
        )
        await client.wait_for(lambda: "imported. " in str(text) and "typed live. " in str(text))
        assert client.close_code is None
