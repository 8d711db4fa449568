"""WebSocketPeer: its outbox, its sender, and how it ends (no server needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from collab.errors import CloseCode
from collab.transport.peer import WebSocketPeer


class Wire:
    """An ASGI ``send`` that records frames and can be held or broken."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.open = asyncio.Event()
        self.open.set()
        self.broken: Exception | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.open.wait()
        if self.broken is not None:
            raise self.broken
        self.frames.append(message["bytes"])


def make_peer(wire: Wire, queue_size: int = 8) -> WebSocketPeer:
    return WebSocketPeer(wire.send, queue_size=queue_size, wants_ack=False, label="test peer")


async def test_frames_go_out_in_order_as_they_are_queued() -> None:
    wire = Wire()
    peer = make_peer(wire)
    sender = asyncio.get_running_loop().create_task(peer.run_sender())
    for i in range(5):
        peer.send_nowait(bytes([i]))
    await anyio.sleep(0.01)
    peer.send_nowait(b"later")  # after the sender went back to sleep
    with anyio.fail_after(5):
        while len(wire.frames) < 6:
            await anyio.sleep(0.001)
    assert wire.frames == [bytes([i]) for i in range(5)] + [b"later"]
    sender.cancel()


async def test_a_full_outbox_closes_the_peer_as_too_slow() -> None:
    wire = Wire()
    wire.open.clear()  # the client stopped reading
    peer = make_peer(wire, queue_size=3)
    sender = asyncio.get_running_loop().create_task(peer.run_sender())
    with anyio.CancelScope() as reading:
        peer.attach(reading)
        for i in range(10):
            peer.send_nowait(bytes([i]))
        await anyio.sleep(5)  # cancelled by the close, long before this
    assert reading.cancel_called
    assert peer.close_code == CloseCode.TOO_SLOW
    peer.send_nowait(b"after close")  # ignored, no error
    sender.cancel()


async def test_a_failed_write_stops_the_reading_side_too() -> None:
    wire = Wire()
    wire.broken = OSError("connection reset")
    peer = make_peer(wire)
    sender = asyncio.get_running_loop().create_task(peer.run_sender())
    with anyio.fail_after(5), anyio.CancelScope() as reading:
        peer.attach(reading)
        peer.send_nowait(b"x")
        await anyio.sleep(5)
    assert reading.cancel_called
    await asyncio.wait([sender])
    assert sender.exception() is None  # handled, not left for the loop to complain about


@pytest.mark.parametrize("before_attach", [True, False])
async def test_close_before_or_after_attach_cancels_the_reader(before_attach: bool) -> None:
    peer = make_peer(Wire())
    if before_attach:
        peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
    with anyio.CancelScope() as reading:
        peer.attach(reading)
        if not before_attach:
            peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
        await anyio.sleep(5)
    assert reading.cancel_called
    assert (peer.close_code, peer.close_reason) == (
        CloseCode.GOING_AWAY,
        "server is shutting down",
    )


async def test_a_write_happens_at_once_when_nothing_is_in_flight() -> None:
    wire = Wire()
    peer = make_peer(wire)
    peer.send_nowait(b"a")
    peer.send_nowait(b"b")
    assert wire.frames == [b"a", b"b"]  # no sender task has run: written in send_nowait


async def test_a_stalled_write_is_finished_by_the_sender_before_the_queue() -> None:
    wire = Wire()
    wire.open.clear()  # flow control: the socket is paused
    peer = make_peer(wire)
    peer.send_nowait(b"first")  # starts, then waits inside the server's send
    peer.send_nowait(b"second")
    peer.send_nowait(b"third")
    sender = asyncio.get_running_loop().create_task(peer.run_sender())
    await anyio.sleep(0.01)
    assert wire.frames == []
    wire.open.set()
    with anyio.fail_after(5):
        while len(wire.frames) < 3:
            await anyio.sleep(0.001)
    peer.send_nowait(b"fourth")  # the sender is idle again: eager
    assert wire.frames == [b"first", b"second", b"third", b"fourth"]
    sender.cancel()
