"""Access control against a running ``collab serve``: Origin and Host, tokens, viewers.

Each rule has its positive and negative case; tokens are issued with ``collab.auth``,
signed with the secret the server was started with.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collab.auth import Access, issue_token
from collab.client import Client
from collab.errors import CloseCode
from collab.protocol import SyncStep1, SyncStep2, SyncUpdate, decode, encode
from tests.conftest import ServerProcess, running_server
from tests.inprocess import decode_as_client
from tests.jsclient import js_client

SECRET = "s3cret-" * 6  # 42 bytes: HS256 wants 32 or more


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that needs tokens (no anonymous access) and allows one extra origin."""
    yield from running_server(
        tmp_path,
        "hypercorn",
        "--jwt-secret",
        SECRET,
        "--allowed-origin",
        "https://app.example",
    )


def token(*docs: str, access: str = "write", ttl: float = 600, sub: str = "ada") -> str:
    return issue_token(SECRET, list(docs), Access.parse(access), ttl=ttl, subject=sub)


def text_update(text: str) -> bytes:
    doc: Doc = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


async def close_of(url: str, *frames: bytes, **kwargs: object) -> tuple[int | None, str]:
    async with connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        try:
            for frame in frames:
                await ws.send(frame)
            with anyio.fail_after(10):
                while True:
                    await ws.recv()
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# -- Origin and Host -----------------------------------------------------------------


async def test_a_page_of_another_site_cannot_open_a_websocket(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.url("doc"), origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    # its own origin (the page it serves) and clients without Origin are welcome
    own = f"http://127.0.0.1:{server.port}"
    async with connect(server.url("doc"), origin=own) as ws:  # type: ignore[arg-type]
        assert isinstance(decode(await ws.recv()), SyncStep1)
    async with connect(server.url("doc")) as ws:
        assert isinstance(decode(await ws.recv()), SyncStep1)


async def test_an_allowed_origin_may_and_others_may_not(secured: ServerProcess) -> None:
    url = secured.url("notes/a") + "?token=" + token("notes/*")
    async with connect(url, origin="https://app.example") as ws:  # type: ignore[arg-type]
        assert isinstance(decode(await ws.recv()), SyncStep1)
    with pytest.raises(InvalidStatus):
        async with connect(url, origin="https://app.example.evil"):  # type: ignore[arg-type]
            pass


async def test_a_host_name_that_is_not_the_servers_is_refused(server: ServerProcess) -> None:
    # DNS rebinding: evil.example resolves to 127.0.0.1, and the browser sends its name
    status, _ = http_get(f"{server.http_url}/healthz", {"Host": "evil.example"})
    assert status == 403
    assert http_get(f"{server.http_url}/healthz", {"Host": f"localhost:{server.port}"})[0] == 200
    with pytest.raises(InvalidStatus):
        async with connect(server.url("doc"), additional_headers={"Host": "evil.example"}):
            pass


# -- tokens --------------------------------------------------------------------------


async def test_no_token_is_4401_and_a_token_for_other_documents_4403(
    secured: ServerProcess,
) -> None:
    assert (await close_of(secured.url("notes/a")))[0] == CloseCode.UNAUTHORIZED
    forged = issue_token("another-secret-" * 3, ["*"], Access.WRITE, ttl=60)
    code, reason = await close_of(secured.url("notes/a") + "?token=" + forged)
    assert code == CloseCode.UNAUTHORIZED and "signature" in reason.lower()
    code, reason = await close_of(secured.url("handbook") + "?token=" + token("notes/*"))
    assert (code, reason) == (CloseCode.FORBIDDEN, "the token does not cover this document")


async def test_a_write_token_writes_and_a_read_token_only_reads(secured: ServerProcess) -> None:
    writer_url = secured.url("notes/plan") + "?token=" + token("notes/*")
    reader_url = secured.url("notes/plan") + "?token=" + token("notes/plan", access="read")
    async with connect(writer_url) as writer, connect(reader_url) as reader:
        await writer.recv()
        await reader.recv()
        await writer.send(encode(SyncUpdate(text_update("from the writer"))))
        await reader.send(encode(SyncUpdate(text_update("from the reader"))))
        with anyio.fail_after(5):
            seen = [decode_as_client(await reader.recv()) for _ in range(2)]
        kinds = sorted(type(m).__name__ for m in seen)
        assert kinds == ["PermissionDenied", "SyncUpdate"]
    async with connect(writer_url) as again:
        await again.recv()
        await again.send(encode(SyncStep1(b"\x00")))
        reply = decode(await again.recv())
        assert isinstance(reply, SyncStep2)
        doc: Doc = Doc()
        doc.apply_update(reply.update)
        assert str(doc.get("content", type=Text)) == "from the writer"


async def test_a_token_in_the_websocket_subprotocol_is_accepted(secured: ServerProcess) -> None:
    protocols = ["collab", "token." + token("notes/*")]
    async with connect(secured.url("notes/a"), subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "collab"
        assert isinstance(decode(await ws.recv()), SyncStep1)


async def test_a_connection_ends_when_its_token_expires(secured: ServerProcess) -> None:
    url = secured.url("notes/a") + "?token=" + token("notes/*", ttl=2)
    started = time.monotonic()
    code, reason = await close_of(url)
    assert (code, reason) == (CloseCode.UNAUTHORIZED, "token expired")
    assert 1.0 < time.monotonic() - started < 10


def test_the_document_list_shows_only_what_the_token_may_read(secured: ServerProcess) -> None:
    async def write(name: str) -> None:
        url = secured.url(name) + "?token=" + token("*")
        async with connect(url) as ws:
            await ws.recv()
            await ws.send(encode(SyncUpdate(text_update(name))))
            await ws.send(encode(SyncStep1(b"\x00")))
            await ws.recv()

    for name in ("notes/a", "notes/b", "secret/plans"):
        anyio.run(write, name)
    time.sleep(0.3)  # committed within --commit-delay
    url = f"{secured.http_url}/api/docs"
    assert http_get(url)[0] == 401
    status, body = http_get(url, {"Authorization": "Bearer " + token("notes/*", access="read")})
    assert status == 200
    assert sorted(d["name"] for d in json.loads(body)["docs"]) == ["notes/a", "notes/b"]
    status, body = http_get(url, {"Authorization": "Bearer " + token("*")})
    assert len(json.loads(body)["docs"]) == 3


@pytest.mark.node
async def test_the_stock_client_works_as_a_viewer(secured: ServerProcess) -> None:
    async with Client(
        secured.url("notes/shared") + "?token=" + token("notes/*"), ack=True
    ) as writer:
        await writer.synced()
        writer.doc.get("content", type=Text).insert(0, "hello viewer")
        await writer.wait_durable()
        viewer_token = token("notes/shared", access="read", sub="vera")
        async with js_client(secured.ws_url, "notes/shared", f"--token={viewer_token}") as js:
            await js.call("synced")
            assert await js.call("text") == "hello viewer"
            await js.call("insert", index=0, text="viewer says ")  # refused by the server
            writer.doc.get("content", type=Text).insert(12, "!")
            await js.call("waitText", contains="hello viewer!")
            await js.call("setAwareness", state={"user": {"name": "Vera"}})
            await writer.wait_for(
                lambda: any(
                    s.get("user", {}).get("name") == "Vera"
                    for s in writer.awareness.states.values()
                )
            )
        await anyio.sleep(0.3)
        assert str(writer.doc.get("content", type=Text)) == "hello viewer!"
    async with Client(secured.url("notes/shared") + "?token=" + token("notes/*")) as reader:
        await reader.synced()
        assert str(reader.doc.get("content", type=Text)) == "hello viewer!"
