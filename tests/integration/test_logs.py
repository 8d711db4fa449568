"""Structured logs: JSON lines off a terminal, one per connection opened and closed, with
the fields an operator needs and never the document's content or a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Text

from collab.auth import Access, issue_token
from collab.client import Client
from tests.conftest import ServerProcess, running_server

SECRET = "log-test-secret-" * 3


@pytest.fixture
def logged(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, "hypercorn", "--jwt-secret", SECRET, "--log-level", "info")


def events(server: ServerProcess) -> list[dict[str, object]]:
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


async def test_connections_are_logged_as_json_without_content_or_tokens(
    logged: ServerProcess,
) -> None:
    token = issue_token(SECRET, ["notes/*"], Access.WRITE, ttl=600, subject="ada")
    async with Client(logged.url("notes/plan") + "?token=" + token, ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "TOP-SECRET-CONTENT")
        await client.wait_durable()
    with anyio.fail_after(5):
        while not any(e.get("event") == "connection.closed" for e in events(logged)):
            await anyio.sleep(0.05)
    log = logged.log()
    assert "TOP-SECRET-CONTENT" not in log
    assert token not in log and SECRET not in log
    opened = next(e for e in events(logged) if e.get("event") == "connection.opened")
    closed = next(e for e in events(logged) if e.get("event") == "connection.closed")
    assert opened["doc"] == "notes/plan" and opened["user"] == "ada"
    assert closed["doc"] == "notes/plan" and closed["user"] == "ada"
    assert closed["by"] == "client" and isinstance(closed["code"], int)
    assert isinstance(closed["duration"], float) and closed["duration"] > 0
    assert int(str(closed["messages_in"])) >= 2 and int(str(closed["bytes_in"])) > 18
    assert int(str(closed["messages_out"])) >= 2
    assert {"ts", "level", "logger", "msg"} <= set(closed)
