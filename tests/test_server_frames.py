"""collab.server.binary_frame: the framing of uvicorn's direct write, read back by another
websocket implementation (wsproto's) at every length class of RFC 6455."""

from __future__ import annotations

import os

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from collab.server import binary_frame


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
