"""A websocket upgrade written by hand: for tests whose client must misbehave in ways a
real client library will not (trickle a frame, never read, leave pings unanswered)."""

from __future__ import annotations

import base64
import os
import socket


def upgrade(
    port: int, path: str, *, timeout: float = 10, receive_buffer: int | None = None
) -> tuple[socket.socket, bytes]:
    """Open ``path`` on 127.0.0.1:``port`` as a websocket: the socket, and whatever the
    server sent after its 101 response (the first frames, if any).

    ``receive_buffer`` sets SO_RCVBUF before connecting (small: a client that fills up).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"the server closed before answering the upgrade: {received!r}")
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest
