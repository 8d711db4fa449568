"""Presence that tells the truth, with the stock y-websocket client: a peer that comes
back is listed again at once, and one that vanished is gone within seconds."""

from __future__ import annotations

import os
import time

import anyio
import pytest

from tests.conftest import ServerProcess
from tests.jsclient import js_client

pytestmark = pytest.mark.node


async def names(js: object) -> set[str]:
    states = await js.call("awareness")  # type: ignore[attr-defined]
    return {s["user"]["name"] for s in states.values() if s and "user" in s}


async def test_a_peer_that_reconnects_is_listed_again_within_a_second(
    server: ServerProcess,
) -> None:
    async with js_client(server.ws_url, "room") as ada, js_client(server.ws_url, "room") as bea:
        await ada.call("synced")
        await bea.call("synced")
        await ada.call("setAwareness", state={"user": {"name": "Ada"}})
        await bea.call("setAwareness", state={"user": {"name": "Bea"}})
        with anyio.fail_after(5):
            while await names(ada) != {"Ada", "Bea"}:
                await anyio.sleep(0.05)
        await bea.call("disconnect")
        with anyio.fail_after(5):  # the server removed Bea's state when she left
            while "Bea" in await names(ada):
                await anyio.sleep(0.05)
        await bea.call("connect")
        await bea.call("synced")
        started = time.monotonic()
        with anyio.fail_after(5):
            while "Bea" not in await names(ada):
                await anyio.sleep(0.05)
        assert time.monotonic() - started < 1.0  # not at the next renewal, 15 s later


async def test_peers_are_listed_again_within_a_second_after_a_server_restart(
    server: ServerProcess,
) -> None:
    async with js_client(server.ws_url, "room") as ada, js_client(server.ws_url, "room") as bea:
        await ada.call("synced")
        await bea.call("synced")
        await ada.call("setAwareness", state={"user": {"name": "Ada"}})
        await bea.call("setAwareness", state={"user": {"name": "Bea"}})
        with anyio.fail_after(5):
            while await names(ada) != {"Ada", "Bea"}:
                await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(server.restart)
        started = time.monotonic()
        with anyio.fail_after(10):
            while True:
                if await ada.call("wsConnected") and await bea.call("wsConnected"):
                    break
                await anyio.sleep(0.05)
        reconnected = time.monotonic()
        with anyio.fail_after(10):
            while await names(ada) != {"Ada", "Bea"} or await names(bea) != {"Ada", "Bea"}:
                await anyio.sleep(0.05)
        assert time.monotonic() - reconnected < 1.0, time.monotonic() - started


async def test_a_peer_whose_network_vanished_is_gone_within_seconds(
    server: ServerProcess,
) -> None:
    # The default ping interval: a peer that answers no ping (its network went away, no
    # close frame) is dropped, and its presence removed for everyone.
    from collab.protocol import AwarenessUpdate, encode
    from tests.integration.test_liveness import RawWebSocket

    async with js_client(server.ws_url, "room") as ada:
        await ada.call("synced")
        ghost = RawWebSocket(server.port, "/room")
        try:
            state = b'{"user":{"name":"Gus"}}'
            payload = b"\x01\x63\x01" + bytes([len(state)]) + state  # client 99, clock 1
            frame = encode(AwarenessUpdate(payload))
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(frame))
            ghost.sock.sendall(bytes([0x82, 0x80 | len(frame)]) + mask + masked)
            with anyio.fail_after(5):
                while "Gus" not in await names(ada):
                    await anyio.sleep(0.05)
            vanished = time.monotonic()  # from now on it reads nothing and answers nothing
            with anyio.fail_after(20):
                while "Gus" in await names(ada):
                    await anyio.sleep(0.1)
            assert time.monotonic() - vanished < 10
        finally:
            ghost.sock.close()
