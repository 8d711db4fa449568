"""Resource limits against a running ``collab serve``: each is hit, closes only the
offender with its documented code, and keeps the server's memory bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Awareness, Doc, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab.client import Client
from collab.errors import CloseCode
from collab.protocol import AwarenessUpdate, QueryAwareness, SyncStep1, SyncUpdate, decode, encode
from tests.conftest import ServerProcess, running_server


def rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def closed(ws: ClientConnection, timeout: float = 15) -> tuple[int | None, str]:
    with anyio.fail_after(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")


def awareness_entry(client_id: int, clock: int, state: object) -> bytes:
    awareness: Awareness = Awareness(Doc(client_id=client_id))
    awareness._meta[client_id] = {"clock": clock - 1, "lastUpdated": 0}  # type: ignore[attr-defined]
    awareness.set_local_state(state)  # type: ignore[arg-type]
    return awareness.encode_awareness_update([client_id])


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(
        tmp_path,
        "hypercorn",
        "--max-connections-per-address",
        "5",
        "--rate-messages",
        "20",
        "--burst-messages",
        "200",
    )


async def test_a_flood_of_messages_is_closed_with_1008_and_others_carry_on(
    tight: ServerProcess,
) -> None:
    async with Client(tight.url("doc")) as honest:
        await honest.synced()
        async with connect(tight.url("doc")) as flood:
            await flood.recv()
            frame = encode(QueryAwareness())
            for _ in range(260):  # past the burst of 200, faster than 20 a second
                await flood.send(frame)
            assert await closed(flood) == (
                CloseCode.POLICY_VIOLATION,
                "too many messages per second",
            )
        honest.doc.get("content", type=Text).insert(0, "fine")
        async with Client(tight.url("doc")) as other:
            await other.synced()
            await other.wait_for(lambda: str(other.doc.get("content", type=Text)) == "fine")


async def test_connections_past_the_per_address_cap_get_1013(tight: ServerProcess) -> None:
    held = [await connect(tight.url(f"doc{i}")) for i in range(5)]
    try:
        async with connect(tight.url("one-more")) as extra:
            code, reason = await closed(extra)
        assert code == CloseCode.TRY_AGAIN_LATER and "your address" in reason
    finally:
        for ws in held:
            await ws.close()
    with anyio.fail_after(5):  # released on close: a new one is welcome again
        while True:
            async with connect(tight.url("again")) as ws:
                try:
                    if isinstance(decode(await ws.recv()), SyncStep1):
                        break
                except ConnectionClosed:
                    await anyio.sleep(0.1)


async def test_a_frame_past_the_default_limit_is_1009(server: ServerProcess) -> None:
    async with connect(server.url("big"), max_size=None) as ws:
        await ws.recv()
        try:
            await ws.send(encode(SyncUpdate(b"\x00" * (5 * 1024 * 1024))))
        except ConnectionClosed:
            pass
        code, _ = await closed(ws)
    assert code == CloseCode.MESSAGE_TOO_BIG


@pytest.fixture
def everywhere(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on every interface, so that a second client can come from another address."""
    yield from running_server(tmp_path, "hypercorn", "--host", "0.0.0.0", "--anonymous", "write")


async def test_awareness_states_are_capped_and_owned_by_their_connection(
    everywhere: ServerProcess,
) -> None:
    from tests.security.test_names_and_http import non_loopback_address

    server = everywhere
    other_address = f"ws://{non_loopback_address()}:{server.port}/room"
    async with Client(server.url("room")) as watcher:
        await watcher.synced()
        async with connect(server.url("room")) as owner, connect(other_address) as thief:
            await owner.recv()
            await thief.recv()
            await owner.send(encode(AwarenessUpdate(awareness_entry(5, 1, {"name": "Ada"}))))
            await watcher.wait_for(lambda: watcher.awareness.states.get(5) == {"name": "Ada"})
            # a connection from elsewhere may neither overwrite nor remove client 5's state
            await thief.send(encode(AwarenessUpdate(awareness_entry(5, 9, {"name": "Eve"}))))
            await thief.send(encode(AwarenessUpdate(awareness_entry(5, 10, None))))
            await thief.send(encode(AwarenessUpdate(awareness_entry(6, 1, {"name": "Eve"}))))
            await watcher.wait_for(lambda: 6 in watcher.awareness.states)
            assert watcher.awareness.states[5] == {"name": "Ada"}
            # a state of 1 MiB: 1008, and nothing of it reaches anyone
            huge = {"name": "x" * (1024 * 1024)}
            await thief.send(encode(AwarenessUpdate(awareness_entry(6, 2, huge))))
            code, reason = await closed(thief)
            assert code == CloseCode.POLICY_VIOLATION and "awareness state of" in reason
        # the owner left: its state went with it
        await watcher.wait_for(lambda: 5 not in watcher.awareness.states)
        assert json.dumps(watcher.awareness.states).count("x" * 100) == 0


async def test_asking_for_a_large_document_again_and_again_without_reading_stays_bounded(
    server: ServerProcess,
) -> None:
    # 1,000 sync step 1s to a 3 MiB document from a client that never reads: before,
    # each got a fresh copy queued (gigabytes); now one is queued at a time.
    big: Doc = Doc()
    big.get("content", type=Text).insert(0, "x" * (3 * 1024 * 1024))
    async with Client(server.url("large"), big, ack=True) as writer:
        await writer.synced()
        await writer.wait_durable(timeout=30)
    before = rss_mib(server)
    async with connect(server.url("large"), max_queue=1) as greedy:
        frame = encode(SyncStep1(b"\x00"))
        for _ in range(1000):
            await greedy.send(frame)
        await anyio.sleep(2)
        grown = rss_mib(server) - before
    assert grown < 150, f"the server grew by {grown:.0f} MiB"
