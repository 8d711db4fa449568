"""A client that stops reading: its frames pile up in its outbox, not in the server's
memory without bound, and it is closed with 4500 while the others carry on. Under uvicorn
frames go to the socket by the direct write (collab.uvicorn_protocol) until flow
control pauses it; this is the test that the pause is honoured."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Doc, Text
from websockets.sync.client import ClientConnection, connect

from collab.protocol import SyncUpdate, decode, encode
from tests.conftest import ServerProcess, running_server
from tests.rawws import upgrade

QUEUE_BYTES = 1024 * 1024


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(
        tmp_path, request.param, "--send-queue-bytes", str(QUEUE_BYTES), "--log-level", "info"
    )


def silent_client(port: int, path: str) -> socket.socket:
    """Upgrade, then never read again (a small receive buffer, so it fills soon)."""
    return upgrade(port, path, receive_buffer=4096)[0]


def closes_of(server: ServerProcess) -> list[dict[str, object]]:
    events = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"connection.closed"' in line:
            events.append(json.loads(line))
    return events


def test_a_client_that_stops_reading_is_closed_as_too_slow_and_the_others_carry_on(
    server: ServerProcess,
) -> None:
    silent = silent_client(server.port, "/pile")
    chunk, count = "x" * 8000, 1000  # 8 MB: past the silent client's buffers and outbox
    received: list[int] = []

    def read_everything(reader: ClientConnection) -> None:
        replica = Doc()
        content = replica.get("content", type=Text)
        while len(content) < len(chunk) * count:
            update = getattr(decode(reader.recv(timeout=30)), "update", None)
            if update:
                replica.apply_update(update)
        received.append(len(content))

    try:
        with (
            connect(server.url("pile"), max_size=None) as writer,
            connect(server.url("pile"), max_size=None) as reader,
        ):
            reading = threading.Thread(target=read_everything, args=(reader,), daemon=True)
            reading.start()
            doc = Doc()
            text = doc.get("content", type=Text)
            for _ in range(count):
                before = doc.get_state()
                text.insert(len(text), chunk)
                writer.send(encode(SyncUpdate(doc.get_update(before))))
            reading.join(60)
            assert received == [len(chunk) * count], "the reading client fell behind"
        deadline = time.monotonic() + 10
        while not any(e.get("code") == 4500 for e in closes_of(server)):
            assert time.monotonic() < deadline, f"no 4500 close: {closes_of(server)}"
            time.sleep(0.1)
        assert [e["doc"] for e in closes_of(server) if e.get("code") == 4500] == ["pile"]
    finally:
        silent.close()
