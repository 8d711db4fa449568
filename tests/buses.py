"""The bus services the tests use: the machine's Redis and NATS, or private ones.

The machine's services (Redis on 6379, NATS on 4222) are shared with other test runs: a
test uses a prefix of its own and never restarts them. A test that restarts a broker
starts a private ``redis-server`` or ``nats-server`` on a free port (:class:`Broker`).
A missing service skips the test, or fails it when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port

SHARED = {"redis": "redis://127.0.0.1:6379/0", "nats": "nats://127.0.0.1:4222"}
BINARIES = {"redis": "redis-server", "nats": "nats-server"}


def unavailable(reason: str) -> None:
    """Skip, or under CI=true fail: a missing service there is a broken machine."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def shared_bus(kind: str) -> str:
    """The URL of the machine's ``kind`` service (skipped or failed if it is down)."""
    url = SHARED[kind]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    if not reachable(port):
        unavailable(f"{kind} is not running on 127.0.0.1:{port}")
    return url


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class Broker:
    """A private ``redis-server`` or ``nats-server`` on a free port, restartable on it."""

    def __init__(self, kind: str, workdir: Path) -> None:
        binary = shutil.which(BINARIES[kind])
        if binary is None:
            unavailable(f"{BINARIES[kind]} is not installed")
        assert binary is not None
        self.kind = kind
        self.binary = binary
        self.port = free_port()
        self.log_path = workdir / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0"
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> None:
        if self.kind == "redis":
            args = [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
            args += ["--bind", "127.0.0.1"]
        else:
            args = [self.binary, "-p", str(self.port), "-a", "127.0.0.1"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not reachable(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not start:\n{self.log_path.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
