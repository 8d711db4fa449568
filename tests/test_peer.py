"""WebSocketPeer: eager writes, the outbox behind a stalled one, and how it ends (no server)."""

from __future__ import annotations

import asyncio
import gc
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


async def wait_for_frames(wire: Wire, count: int) -> None:
    with anyio.fail_after(5):
        while len(wire.frames) < count:
            await anyio.sleep(0.001)


async def test_a_write_happens_at_once_when_nothing_is_in_flight() -> None:
    wire = Wire()
    peer = make_peer(wire)
    peer.send_nowait(b"a")
    peer.send_nowait(b"b")
    assert wire.frames == [b"a", b"b"]  # written inside send_nowait, no task involved
    assert peer.stop_writing() is None  # an idle peer has no drainer


async def test_frames_behind_a_stalled_write_go_out_in_order() -> None:
    wire = Wire()
    wire.open.clear()  # flow control: the socket is paused
    peer = make_peer(wire)
    for i in range(5):
        peer.send_nowait(bytes([i]))  # the first starts and stalls; the rest queue
    await anyio.sleep(0.01)
    assert wire.frames == []
    wire.open.set()
    await wait_for_frames(wire, 5)
    with anyio.fail_after(5):
        while peer.stalled:
            await anyio.sleep(0.001)
    peer.send_nowait(b"later")  # the drainer has ended: eager again
    assert wire.frames == [bytes([i]) for i in range(5)] + [b"later"]


async def test_a_frame_sent_while_draining_keeps_its_place() -> None:
    wire = Wire()
    wire.open.clear()
    peer = make_peer(wire)
    peer.send_nowait(b"first")
    peer.send_nowait(b"second")
    wire.open.set()
    await wait_for_frames(wire, 1)  # the drainer is at work
    peer.send_nowait(b"third")
    await wait_for_frames(wire, 3)
    assert wire.frames == [b"first", b"second", b"third"]


async def test_a_close_in_the_turn_a_write_stalled_still_ends_that_write() -> None:
    # The drainer is cancelled before its first step, so its body never runs; the stalled
    # write must still be closed, or what it holds (hypercorn's send lock) stays held.
    lock = asyncio.Lock()
    wire = Wire()
    wire.open.clear()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await wire.send(message)

    peer = WebSocketPeer(send, queue_size=8, wants_ack=False, label="test peer")
    peer.send_nowait(b"stalls")
    assert lock.locked()
    drainer = peer.stop_writing()
    assert drainer is not None
    with anyio.fail_after(5):
        await asyncio.gather(drainer, return_exceptions=True)
    assert not lock.locked()
    assert not peer.stalled


async def test_a_full_outbox_closes_the_peer_as_too_slow() -> None:
    wire = Wire()
    wire.open.clear()  # the client stopped reading
    peer = make_peer(wire, queue_size=3)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            for i in range(10):
                peer.send_nowait(bytes([i]))
            await anyio.sleep(5)  # cancelled by the close, long before this
    assert peer.close_code == CloseCode.TOO_SLOW
    assert not peer.stalled  # the stalled write was ended, not left hanging
    assert peer.stop_writing() is None
    peer.send_nowait(b"after close")  # ignored, no error
    assert wire.frames == []


async def test_a_failed_write_stops_the_reading_side_too() -> None:
    wire = Wire()
    wire.broken = OSError("connection reset")
    peer = make_peer(wire)
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            peer.send_nowait(b"x")
            await anyio.sleep(5)
    assert peer.stop_writing() is None  # failed inside send_nowait: no drainer was made


async def test_a_write_that_fails_after_stalling_is_handled_by_the_drainer() -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    wire = Wire()
    wire.open.clear()
    wire.broken = OSError("connection reset")
    peer = make_peer(wire)
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            peer.send_nowait(b"x")  # stalls
            assert peer.stalled
            wire.open.set()  # ... then fails
            await anyio.sleep(5)
    await anyio.sleep(0.01)
    gc.collect()
    assert not peer.stalled
    assert unhandled == []  # the drainer handled the error; nothing left for the loop


@pytest.mark.parametrize("before_attach", [True, False])
async def test_close_before_or_after_attach_cancels_the_reader(before_attach: bool) -> None:
    peer = make_peer(Wire())
    if before_attach:
        peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            if not before_attach:
                peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
            peer.close_nowait(CloseCode.TOO_SLOW, "a second close changes nothing")
            await anyio.sleep(5)
    assert (peer.close_code, peer.close_reason) == (
        CloseCode.GOING_AWAY,
        "server is shutting down",
    )


async def test_a_close_after_the_reader_left_is_harmless() -> None:
    peer = make_peer(Wire())
    async with asyncio.timeout(None) as reading:
        peer.attach(reading)
        peer.attach(None)  # the reading loop ended on its own
    peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
    assert not reading.expired()


async def test_an_outside_cancellation_is_not_mistaken_for_a_close() -> None:
    peer = make_peer(Wire())

    async def read() -> None:
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            await anyio.sleep(5)

    task = asyncio.get_running_loop().create_task(read())
    await anyio.sleep(0.01)
    task.cancel()  # the ASGI server cancelling the app, say
    peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")
    await asyncio.wait([task])
    assert task.cancelled()  # still a cancellation, not a TimeoutError
