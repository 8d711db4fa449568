"""Shared fixtures: a real ``collab serve`` process on a free port with a temp database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m collab serve`` as a child process; restartable on the same port and db."""

    def __init__(
        self,
        db_path: Path | str,
        log_path: Path,
        *extra_args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.db_path = db_path
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        """The websocket URL of a document, percent-encoded as the stock client does."""
        return f"{self.ws_url}/{quote(name, safe='/')}"

    def start(self, timeout: float = 20) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"collab serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.http_url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"collab serve did not become ready in {timeout} s:\n{self.log()}")

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collab",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                str(self.db_path),
                "--log-level",
                "debug",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **self.env},
        )

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(
                f"collab serve ignored SIGTERM for {timeout} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def running_server(
    tmp_path: Path, asgi_server: str = "uvicorn", *extra_args: str
) -> Iterator[ServerProcess]:
    """Start a collab server with a fresh database; its log is printed if the test fails."""
    process = ServerProcess(
        tmp_path / "data" / "collab.db",
        tmp_path / "server.log",
        "--server",
        asgi_server,
        *extra_args,
    )
    process.start()
    try:
        yield process
    finally:
        process.close()
        print(f"--- collab serve log ({process.log_path}) ---\n{process.log()[-20000:]}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running collab server (under uvicorn, the default) with a fresh database."""
    yield from running_server(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
