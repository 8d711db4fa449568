"""Graceful restarts: stock y-websocket clients keep typing while the server restarts
(SIGTERM, then start again on the same database), three times in a row; every keystroke
ends up in the document exactly once, and the clients reconnect on their own."""

from __future__ import annotations

import re

import anyio
import pytest
from pycrdt import Text

from collab.client import Client
from tests.conftest import ServerProcess
from tests.jsclient import JSClient, js_client

pytestmark = pytest.mark.node


async def test_typing_through_three_restarts_loses_and_doubles_nothing(
    server: ServerProcess,
) -> None:
    typed: dict[str, list[str]] = {"a": [], "b": []}
    async with js_client(server.ws_url, "typing") as a, js_client(server.ws_url, "typing") as b:
        await a.call("synced")
        await b.call("synced")
        stop = anyio.Event()

        async def type_into(js: JSClient, who: str) -> None:
            i = 0
            while not stop.is_set():
                word = f"<{who}{i}>"
                await js.call("insert", text=word)  # at the end of what it sees
                typed[who].append(word)
                i += 1
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(type_into, a, "a")
            tg.start_soon(type_into, b, "b")
            for _ in range(3):
                await anyio.sleep(0.7)
                await anyio.to_thread.run_sync(server.restart)
            await anyio.sleep(0.7)
            stop.set()

        expected = sorted(typed["a"] + typed["b"])
        with anyio.fail_after(20):
            while True:
                texts = [await a.call("text"), await b.call("text")]
                if texts[0] == texts[1] and sorted(re.findall(r"<[ab]\d+>", texts[0])) == expected:
                    break
                await anyio.sleep(0.1)
        assert await a.call("wsConnected") and await b.call("wsConnected")
        assert len(typed["a"]) > 20 and len(typed["b"]) > 20
    async with Client(server.url("typing")) as reader:  # and the server stored all of it
        await reader.synced()
        stored = str(reader.doc.get("content", type=Text))
        assert sorted(re.findall(r"<[ab]\d+>", stored)) == expected
