"""Interop: the real JS ``yjs`` + ``y-websocket`` provider against a running collab."""

from __future__ import annotations

import anyio
import pytest
from pycrdt import Text

from collab.client import Client
from tests.conftest import ServerProcess
from tests.jsclient import js_client

pytestmark = pytest.mark.node


async def test_two_js_clients_converge_on_text_map_and_array(server: ServerProcess) -> None:
    async with (
        js_client(server.ws_url, "js-shared") as a,
        js_client(server.ws_url, "js-shared") as b,
    ):
        await a.call("synced")
        await b.call("synced")
        await a.call("insert", index=0, text="hello")
        await b.call("waitText", equals="hello")
        await b.call("insert", index=5, text=" world")
        await a.call("mapSet", key="from-a", value=1)
        await b.call("mapSet", key="from-b", value={"nested": [1, 2]})
        await a.call("arrayPush", values=["a1", "a2"])
        await b.call("arrayPush", values=["b1"])
        await a.call("waitText", equals="hello world")
        with anyio.fail_after(10):
            while len(await a.call("array")) < 3 or len(await b.call("map")) < 2:
                await anyio.sleep(0.02)
        assert (
            await a.call("map")
            == await b.call("map")
            == {"from-a": 1, "from-b": {"nested": [1, 2]}}
        )
        array_a, array_b = await a.call("array"), await b.call("array")
        assert array_a == array_b and sorted(array_a) == ["a1", "a2", "b1"]


async def test_js_and_python_clients_share_a_document(server: ServerProcess) -> None:
    async with js_client(server.ws_url, "mixed") as js, Client(server.url("mixed")) as py:
        await js.call("synced")
        await py.synced()
        await js.call("insert", index=0, text="from node; ")
        text = py.doc.get("content", type=Text)
        await py.wait_for(lambda: str(text) == "from node; ")
        text += "from python"
        await js.call("waitText", equals="from node; from python")


async def test_js_late_joiner_and_restart_with_kill(server: ServerProcess) -> None:
    async with js_client(server.ws_url, "kill-me") as a, Client(server.url("kill-me")) as observer:
        await a.call("synced")
        for i in range(30):
            await a.call("insert", text=f"{i} ")
        expected = await a.call("text")
        # Once another client has it, the server has received it.
        await observer.wait_for(lambda: str(observer.doc.get("content", type=Text)) == expected)
    await anyio.sleep(1.2)  # the promise covers what was received more than 1 s before a kill
    server.kill()
    server.start()
    async with js_client(server.ws_url, "kill-me") as late:
        await late.call("synced")
        assert await late.call("text") == expected


async def test_js_offline_edit_merges_without_duplicates(server: ServerProcess) -> None:
    async with (
        js_client(server.ws_url, "offline-js") as a,
        js_client(server.ws_url, "offline-js") as b,
    ):
        await a.call("synced")
        await b.call("synced")
        await a.call("insert", index=0, text="base.")
        await b.call("waitText", equals="base.")
        await a.call("disconnect")
        await a.call("insert", index=0, text="A-offline ")
        await b.call("insert", index=5, text=" B-online")
        await anyio.sleep(0.2)
        await a.call("connect")
        await a.call("waitText", equals="A-offline base. B-online")
        await b.call("waitText", equals="A-offline base. B-online")


async def test_js_client_reconnects_after_server_restart(server: ServerProcess) -> None:
    async with js_client(server.ws_url, "bounce") as a:
        await a.call("synced")
        await a.call("insert", text="before")
        await anyio.sleep(0.2)
        server.stop()
        await a.call("insert", text=" during")
        server.start()
        async with js_client(server.ws_url, "bounce") as b:
            await b.call("synced")
            await b.call("waitText", equals="before during", timeout=15)


async def test_awareness_appears_and_disappears_when_the_connection_closes(
    server: ServerProcess,
) -> None:
    async with js_client(server.ws_url, "presence") as watcher:
        await watcher.call("synced")
        async with js_client(server.ws_url, "presence") as visitor:
            await visitor.call("synced")
            visitor_id = str(await visitor.call("clientId"))
            await visitor.call("setAwareness", state={"user": {"name": "Zoë", "color": "#e91e63"}})
            zoe = {"user": {"name": "Zoë", "color": "#e91e63"}}
            with anyio.fail_after(5):
                # its first state ({}, sent on connect) may arrive first: wait for Zoë's
                while (await watcher.call("awareness")).get(visitor_id) != zoe:
                    await anyio.sleep(0.02)
            assert (await watcher.call("awareness"))[visitor_id] == zoe
        # The visitor's process is killed: no goodbye message, the server must tell.
        with anyio.fail_after(5):
            while visitor_id in await watcher.call("awareness"):
                await anyio.sleep(0.02)


async def test_new_client_receives_current_awareness_on_connect(server: ServerProcess) -> None:
    async with js_client(server.ws_url, "presence2") as first:
        await first.call("synced")
        first_id = str(await first.call("clientId"))
        await first.call("setAwareness", state={"user": {"name": "first"}})
        await anyio.sleep(0.2)
        async with js_client(server.ws_url, "presence2") as second:
            await second.call("synced")
            with anyio.fail_after(5):
                while first_id not in await second.call("awareness"):
                    await anyio.sleep(0.02)
