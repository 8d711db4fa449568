"""The HTTP API's routes against a running server, positive and negative: the listing,
a document (now and at a past time), its state vector, history, posted updates, delete."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from pycrdt import Doc, Map, Text

from collab.auth import Access, issue_token
from collab.client import Client
from collab.errors import CloseCode, ConnectionClosedError
from collab.protocol import decode_state_vector
from tests.conftest import ServerProcess, running_server
from tests.integration.test_events import answer_to

NAME = "notes%2F2026%2Fplan"  # notes/2026/plan, one path segment


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        with e:
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
    assert get(url + "/history")[0] == 401
    assert get(url + "/history", {"Authorization": "Bearer " + reader})[0] == 200
    assert get(f"{url}?at=now&token={other}")[0] == 403
    # Writing needs write access, deleting included.
    request = urllib.request.Request(
        url, method="DELETE", headers={"Authorization": "Bearer " + reader}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == 403
    assert get(url, {"Authorization": "Bearer " + reader})[0] == 200  # still there
    writer = issue_token(secret, ["notes/*"], Access.WRITE, ttl=600)
    assert delete(f"{url}?token={writer}")[0] == 200


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


async def test_an_update_posted_over_http_reaches_websocket_clients_and_the_disk(
    server: ServerProcess,
) -> None:
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
    # Past --max-message-size: refused from its Content-Length, before it is read ...
    path = url.removeprefix(server.http_url)
    huge = answer_to(server.port, f"POST {path}", "Content-Length: 4194305")
    assert huge.startswith(b"HTTP/1.1 413") and b"bytes at most" in huge
    # ... or, sent in chunks without one, once that much has arrived.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        host = f"127.0.0.1:{server.port}"
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head.encode())
        chunk = b"\x00" * 65536
        answer = b""
        try:
            for _ in range(80):  # 5 MiB in all
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass  # the server answered and closed before taking it all
        while b"}" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    status, _, body = get(f"{server.http_url}/api/docs/{NAME}")
    assert (status, json.loads(body)) == (200, {})  # loaded by the POST, and still empty
    assert get(url)[0] == 405


def typed(text: str) -> bytes:
    doc: Doc = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def test_the_listing_pages_with_a_cursor_in_every_order(server: ServerProcess) -> None:
    names = ["a", "b/c", "d", "e", "f"]
    for i, name in enumerate(names):
        update = typed("x" * 10 * (i + 1))  # sizes 10 apart: a client id varies by 4
        assert post(f"{server.http_url}/api/docs/{quote(name, safe='')}/updates", update)[0] == 200
    for order, expected in [("name", names), ("updated_at", names[::-1]), ("bytes", names[::-1])]:
        seen: list[str] = []
        pages: list[object] = []  # for the failure message
        after = ""
        for _ in range(10):
            status, _, body = get(
                f"{server.http_url}/api/docs?limit=2&order={order}&after={quote(after)}"
            )
            assert status == 200, body
            page = json.loads(body)
            pages.append(page)
            assert len(page["docs"]) <= 2
            seen += [d["name"] for d in page["docs"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == expected, (order, pages)
    (first,) = json.loads(get(f"{server.http_url}/api/docs?limit=1&order=name")[2])["docs"]
    assert first["name"] == "a" and first["updates"] == 1 and first["bytes"] > 0
    assert first["updated_at"] > 0 and first["created_at"] > 0
    for bad in ("limit=0", "limit=1001", "limit=x", "order=size", "after=%5B1", "page=2"):
        status, _, body = get(f"{server.http_url}/api/docs?{bad}")
        assert status == 400 and json.loads(body)["error"], bad


async def test_delete_closes_its_connections_and_keeps_old_history_out(
    server: ServerProcess,
) -> None:
    url = f"{server.http_url}/api/docs/{NAME}"
    async with Client(server.url("notes/2026/plan"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "to be deleted")
        await client.wait_durable()
        status, body = await anyio.to_thread.run_sync(delete, url)
        assert (status, json.loads(body)) == (200, {"name": "notes/2026/plan", "epoch": 1})
        with pytest.raises(ConnectionClosedError):
            await client.wait_for(lambda: False, timeout=10)
        assert client.close_code == CloseCode.STALE_EPOCH
        old_history = client.doc
    assert get(url)[0] == 404
    # A tab still holding the deleted text is refused when it comes back (4409) ...
    async with Client(server.url("notes/2026/plan"), doc=old_history) as stale:
        with pytest.raises(ConnectionClosedError):
            await stale.wait_for(lambda: False, timeout=10)
        assert stale.close_code == CloseCode.STALE_EPOCH
    status, _, body = get(url)  # ... and nothing of it came back (the room it opened is empty)
    assert status in (200, 404) and "deleted" not in body.decode()
    assert (await anyio.to_thread.run_sync(delete, url))[0] == 404
    assert (await anyio.to_thread.run_sync(delete, url + "?force=1"))[0] == 400
    assert (await anyio.to_thread.run_sync(delete, f"{server.http_url}/api/docs/%00"))[0] == 400


def test_history_and_reading_the_document_at_a_past_time(server: ServerProcess) -> None:
    url = f"{server.http_url}/api/docs/{NAME}"
    writer: Doc = Doc()
    text = writer.get("content", type=Text)
    before = writer.get_state()
    text.insert(0, "first draft")
    assert post(url + "/updates", writer.get_update(before))[0] == 200
    between = time.time()
    while time.time() <= between:
        pass
    before = writer.get_state()
    text += ", revised"
    assert post(url + "/updates", writer.get_update(before))[0] == 200
    status, _, body = get(f"{url}?at=@{between}")
    assert (status, json.loads(body)) == (200, {"content": "first draft"})
    status, _, body = get(f"{url}/state-vector?at=@{between}", {"Accept": "application/json"})
    assert status == 200 and sum(json.loads(body).values()) == len("first draft")
    assert json.loads(get(url)[2]) == {"content": "first draft, revised"}
    status, _, body = get(url + "/history")
    history = json.loads(body)
    assert status == 200 and history["name"] == "notes/2026/plan"
    assert history["readable_from"] is None  # nothing folded away yet
    ((session),) = history["sessions"]
    assert session["updates"] == 2 and session["from"] < between < session["to"]
    status, _, body = get(url + "/history?gap=0")
    assert len(json.loads(body)["sessions"]) == 2
    for bad in ("?at=yesterdayish", "?at=@nan", "?gap=-1", "?roots=content"):
        target = url + ("/history" if "gap" in bad else "") + bad
        status, _, body = get(target)
        assert status == 400 and json.loads(body)["error"], bad
    assert get(f"{server.http_url}/api/docs/missing/history")[0] == 404


def test_api_errors_are_json_even_for_a_wrong_method(server: ServerProcess) -> None:
    request = urllib.request.Request(f"{server.http_url}/api/docs", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    with refused.value as answer:
        assert answer.code == 405 and answer.headers["allow"] == "GET, HEAD"
        assert "not allowed" in json.loads(answer.read())["error"]
    status, headers, body = get(f"{server.http_url}/api/docs/a%0Ab/history")
    assert status == 400 and headers["content-type"] == "application/json"


def delete(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()
