"""Pings: a peer that stops answering them is dropped, one that answers stays (--ping-interval)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from collab.protocol import SyncStep1, SyncStep2, decode, encode
from tests.conftest import ServerProcess, running_server
from tests.rawws import upgrade

PING_INTERVAL = 1  # seconds; the server drops a peer silent for about two of them
OPCODE_CLOSE, OPCODE_PING = 0x8, 0x9


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, request.param, "--ping-interval", str(PING_INTERVAL))


class RawWebSocket:
    """A websocket client written by hand, so that it can leave pings unanswered."""

    def __init__(self, port: int, path: str) -> None:
        self.sock, self.buffer = upgrade(port, path, timeout=5)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): (opcode, payload)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)


def test_a_peer_that_never_answers_pings_is_dropped(server: ServerProcess) -> None:
    client = RawWebSocket(server.port, "/liveness")
    pings = 0
    ended_by = None
    deadline = time.monotonic() + 20 * PING_INTERVAL
    try:
        while time.monotonic() < deadline:
            opcode, _ = client.read_frame()  # read, and never answer
            if opcode == OPCODE_PING:
                pings += 1
            elif opcode == OPCODE_CLOSE:
                ended_by = "close frame"
                break
    except (EOFError, ConnectionResetError):
        ended_by = "connection closed"
    except TimeoutError:
        pass  # recv timed out: still connected
    finally:
        client.sock.close()
    assert pings >= 1, "the server sent no ping"
    assert ended_by is not None, "a peer that answered no ping is still connected"


def test_a_peer_that_answers_pings_stays(server: ServerProcess) -> None:
    with connect(server.url("liveness"), max_size=None) as ws:  # answers pings by itself
        time.sleep(5 * PING_INTERVAL)  # well past the two silent intervals that drop a peer
        ws.send(encode(SyncStep1(b"\x00")))
        replies = [decode(ws.recv(timeout=5)) for _ in range(2)]
        assert any(isinstance(m, SyncStep2) for m in replies), replies
