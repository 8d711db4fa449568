"""Drive tests/js/yclient.mjs (the real yjs + y-websocket under Node) from Python tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

JS_DIR = Path(__file__).resolve().parent / "js"


def node_available() -> None:
    """Fail (never skip) when the JS clients cannot run: scripts/test installs them."""
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed; run ./scripts/test, which installs it")
    if not (JS_DIR / "node_modules" / "y-websocket").exists():
        raise RuntimeError("tests/js/node_modules is missing; run `cd tests/js && npm ci`")


class JSClient:
    """One stock ``WebsocketProvider`` in a Node process."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._lines = self._read_lines()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    async def _read_lines(self):  # type: ignore[no-untyped-def]
        assert self.process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout):
            buffer += chunk
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                yield json.loads(line)

    async def call(self, cmd: str, timeout: float = 15, **args: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        assert self.process.stdin is not None
        await self.process.stdin.send(
            (json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n").encode()
        )
        with anyio.fail_after(timeout):
            async for message in self._lines:
                if message.get("id") == request_id:
                    if not message["ok"]:
                        raise AssertionError(f"JS client {cmd} failed: {message['error']}")
                    return message["result"]
                self.events.append(message)
        raise AssertionError("JS client exited")


class js_client:  # noqa: N801 - used like a function: async with js_client(url, room)
    def __init__(self, server_url: str, room: str, *flags: str) -> None:
        self.args = ["node", str(JS_DIR / "yclient.mjs"), server_url, room, *flags]

    async def __aenter__(self) -> JSClient:
        node_available()
        self.process = await anyio.open_process(self.args, cwd=JS_DIR)
        self.client = JSClient(self.process)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            await self.process.aclose()
