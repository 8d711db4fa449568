"""The HTTP API's document routes against a running server: GET /api/docs/{name} and
/api/docs/{name}/state-vector, positive and negative."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from collab.auth import Access, issue_token
from collab.client import Client
from collab.protocol import decode_state_vector
from tests.conftest import ServerProcess, running_server

NAME = "notes%2F2026%2Fplan"  # notes/2026/plan, one path segment


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def write_plan(server: ServerProcess) -> Doc:
    async with Client(server.url("notes/2026/plan"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "the plan")
        client.doc.get("meta", type=Map)["title"] = "Plan"
        await client.wait_durable()
        return client.doc


async def test_a_document_as_json_as_an_update_and_its_state_vector(
    server: ServerProcess,
) -> None:
    doc = await write_plan(server)
    url = f"{server.http_url}/api/docs/{NAME}"
    for when in ("loaded", "after a restart"):
        status, headers, body = get(url)
        assert status == 200, body
        assert json.loads(body) == {"content": "the plan", "meta": {"title": "Plan"}}
        etag = headers["etag"]
        assert get(url, {"If-None-Match": etag})[0] == 304
        status, _, body = get(url + "?root=content")
        assert json.loads(body) == {"content": "the plan"}
        status, headers, body = get(url, {"Accept": "application/octet-stream"})
        assert headers["content-type"] == "application/octet-stream"
        copy: Doc = Doc()
        copy.apply_update(body)
        assert str(copy.get("content", type=Text)) == "the plan"
        status, _, body = get(url + "/state-vector", {"Accept": "application/json"})
        assert {int(k): v for k, v in json.loads(body).items()} == decode_state_vector(
            doc.get_state()
        )
        status, _, body = get(url + "/state-vector")
        assert decode_state_vector(body) == decode_state_vector(doc.get_state())
        if when == "loaded":
            server.restart()
    # an edit changes the ETag
    async with Client(server.url("notes/2026/plan"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "new: ")
        await client.wait_durable()
    assert get(url, {"If-None-Match": etag})[0] == 200


def test_bad_requests_get_clear_4xx(server: ServerProcess) -> None:
    base = f"{server.http_url}/api/docs"
    status, headers, body = get(f"{base}/missing")
    assert status == 404 and "no document named 'missing'" in json.loads(body)["error"]
    status, _, body = get(f"{base}/evil%E2%80%AEname")
    assert status == 400 and "U+202E" in json.loads(body)["error"]
    assert get(f"{base}/a/b/c")[0] == 404
    assert get(f"{base}/x/other-thing")[0] == 404


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, "hypercorn", "--jwt-secret", "api-secret-" * 4)


async def test_the_document_routes_need_read_access(secured: ServerProcess) -> None:
    secret = "api-secret-" * 4
    token = issue_token(secret, ["notes/*"], Access.WRITE, ttl=600)
    async with Client(secured.url("notes/2026/plan") + "?token=" + token, ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "secret plan")
        await client.wait_durable()
    url = f"{secured.http_url}/api/docs/{NAME}"
    assert get(url)[0] == 401
    other = issue_token(secret, ["handbook"], Access.READ, ttl=600)
    assert get(url, {"Authorization": "Bearer " + other})[0] == 403
    reader = issue_token(secret, ["notes/*"], Access.READ, ttl=600)
    status, _, body = get(url, {"Authorization": "Bearer " + reader})
    assert status == 200 and json.loads(body)["content"] == "secret plan"


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def test_an_update_posted_over_http_reaches_websocket_clients_and_the_disk(
    server: ServerProcess,
) -> None:
    import anyio

    writer: Doc = Doc()
    writer.get("content", type=Text).insert(0, "posted")
    url = f"{server.http_url}/api/docs/{NAME}/updates"
    async with Client(server.url("notes/2026/plan")) as watcher:
        await watcher.synced()
        status, body = await anyio.to_thread.run_sync(post, url, writer.get_update())
        assert status == 200, body
        assert decode_state_vector(body) == decode_state_vector(writer.get_state())
        await watcher.wait_for(lambda: str(watcher.doc.get("content", type=Text)) == "posted")
    server.stop()  # answered only once on disk: nothing is lost by stopping right now
    server.start()
    status, _, body = get(f"{server.http_url}/api/docs/{NAME}")
    assert json.loads(body)["content"] == "posted"


def test_an_invalid_posted_update_is_400_and_changes_nothing(server: ServerProcess) -> None:
    url = f"{server.http_url}/api/docs/{NAME}/updates"
    status, body = post(url, b"\x01\x02garbage")
    assert status == 400 and json.loads(body)["error"]
    assert post(url, b"")[0] == 400
    status, _, body = get(f"{server.http_url}/api/docs/{NAME}")
    assert (status, json.loads(body)) == (200, {})  # loaded by the POST, and still empty
    assert get(url)[0] == 405
