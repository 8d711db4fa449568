"""collab.uvicorn_protocol: the framing of uvicorn's direct write, read back by another
websocket implementation (wsproto's) at every length class of RFC 6455; and the light
queue and flag that stand in for asyncio's in each connection."""

from __future__ import annotations

import asyncio
import os

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from collab.uvicorn_protocol import Flag, Inbox, binary_frame


@pytest.mark.parametrize("length", [1, 125, 126, 127, 65535, 65536, 1_000_000])
def test_a_frame_reads_back_as_one_final_binary_message(length: int) -> None:
    payload = os.urandom(length)
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(binary_frame(payload))
    frames = list(reader.received_frames())
    assert len(frames) == 1
    (frame,) = frames
    assert frame.opcode is Opcode.BINARY
    assert frame.frame_finished and frame.message_finished
    assert bytes(frame.payload) == payload


def test_an_empty_payload_is_a_two_byte_frame() -> None:
    assert binary_frame(b"") == b"\x82\x00"  # wsproto reports no frame for it to read back


def test_the_same_payload_twice_is_framed_once_and_a_new_one_afresh() -> None:
    a, b = os.urandom(300), os.urandom(300)
    assert binary_frame(a) is binary_frame(a)
    assert binary_frame(b).endswith(b) and binary_frame(a).endswith(a)


async def test_the_inbox_hands_out_messages_in_order_and_wakes_its_reader() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(reader, 1) == 3


async def test_a_cancelled_reader_leaves_the_inbox_usable() -> None:
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait("next")
    assert await asyncio.wait_for(inbox.get(), 1) == "next"


async def test_the_flag_holds_writers_while_cleared() -> None:
    flag = Flag(True)
    await asyncio.wait_for(flag.wait(), 1)  # set: no wait
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert flag.is_set()
