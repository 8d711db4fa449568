"""Slow and partial input: a frame must arrive whole in time, and the bytes held for
incomplete frames are capped in total, under both servers.

Before: 150 connections each holding a partial 15 MiB frame, kept alive by one byte every
5 s, pinned 2.3 GiB indefinitely.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, running_server
from tests.rawws import upgrade


@pytest.fixture(params=["hypercorn", "uvicorn"])
def strict(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from running_server(
        tmp_path,
        request.param,
        "--frame-deadline",
        "2",
        "--max-partial-bytes",
        str(3 * 1024 * 1024),
    )


@pytest.fixture(params=["hypercorn", "uvicorn"])
def capped(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, request.param, "--max-partial-bytes", str(3 * 1024 * 1024))


def handshake(server: ServerProcess, name: str = "slow") -> socket.socket:
    return upgrade(server.port, f"/{name}")[0]


def frame_header(length: int) -> bytes:
    """A final binary frame of ``length`` bytes, masked (as a client must), header only."""
    return bytes([0x82, 0x80 | 127]) + struct.pack(">Q", length) + os.urandom(4)


def close_code(sock: socket.socket, timeout: float) -> int | None:
    """Read until a close frame arrives; return its code (None: the socket just ended)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            i = data.find(b"\x88")  # a server frame is unmasked: 0x88, length, code
            if i >= 0 and len(data) >= i + 4:
                return int(struct.unpack(">H", data[i + 2 : i + 4])[0])
    except (TimeoutError, ConnectionResetError):
        pass
    return None


def test_a_frame_trickling_in_past_the_deadline_is_closed_with_1009(
    strict: ServerProcess,
) -> None:
    sock = handshake(strict)
    try:
        sock.sendall(frame_header(1024 * 1024) + b"\x00" * 1000)
        started = time.monotonic()
        code = None
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b"\x00")  # one byte now and then keeps it alive
            except (BrokenPipeError, ConnectionResetError):
                break
            code = close_code(sock, 0.5)
            if code is not None:
                break
        assert code == 1009
        assert 1.5 < time.monotonic() - started < 6
    finally:
        sock.close()


def test_incomplete_frames_of_all_connections_together_are_capped(
    capped: ServerProcess,
) -> None:
    holders = [handshake(capped, f"hold{i}") for i in range(4)]
    try:
        codes = []
        for sock in holders:
            # just under 1 MiB each, frame headers included
            sock.sendall(frame_header(4 * 1024 * 1024 - 16) + b"\x00" * (1024 * 1024 - 64))
            time.sleep(0.3)
        codes = [close_code(sock, 0.5) for sock in holders]
        # 3 MiB in total: the first three fit (1 MiB each), the fourth is refused
        assert codes[:3] == [None, None, None]
        assert codes[3] == 1009
    finally:
        for sock in holders:
            sock.close()


def test_a_frame_that_stalls_midway_is_closed_at_its_deadline_under_uvicorn(
    tmp_path: Path,
) -> None:
    # hypercorn looks at the deadline when bytes arrive; a frame that stalls there is
    # dropped by its read timeout (two ping intervals). uvicorn's protocol sets a timer.
    for server in running_server(tmp_path, "uvicorn", "--frame-deadline", "2"):
        sock = handshake(server)
        try:
            sock.sendall(frame_header(1024 * 1024) + b"\x00" * 1000)
            started = time.monotonic()
            assert close_code(sock, 8) == 1009
            assert 1.5 < time.monotonic() - started < 6
        finally:
            sock.close()
