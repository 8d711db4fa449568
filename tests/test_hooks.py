"""Extensions (collab.hooks) against the app served on a real socket, one hook at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab.app import build_app
from collab.auth import Access
from collab.config import Settings
from collab.errors import CloseCode
from collab.hooks import (
    AuthenticatePayload,
    ChangePayload,
    DisconnectPayload,
    Extension,
    Hooks,
    Identity,
    LoadPayload,
    Refused,
    StorePayload,
)
from collab.protocol import PermissionDenied, SyncStep1, SyncStep2, SyncUpdate, encode
from collab.storage import open_store
from tests.inprocess import next_message, serving

pytestmark = pytest.mark.anyio


def edit(text: str, client_id: int) -> bytes:
    """An update inserting ``text`` at the start of "content", by a fresh client."""
    doc: Doc = Doc(client_id=client_id)
    doc["content"] = Text(text)
    return doc.get_update()


@asynccontextmanager
async def app_serving(tmp_path: Path, *extensions: object) -> AsyncIterator[str]:
    app = build_app(Settings(db=tmp_path / "c.db", commit_delay=0.0), extensions)
    async with serving(app) as url:
        yield url


async def joined(url: str, name: str = "doc", **kwargs: object) -> ClientConnection:
    ws = await connect(f"{url}/{name}", **kwargs)  # type: ignore[arg-type]
    await next_message(ws, SyncStep1)
    return ws


async def closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    with anyio.fail_after(5):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")


class ByQuery(Extension):
    """?as=reader gets READ, ?as=refused is refused with 4403, ?as=broken raises."""

    def __init__(self) -> None:
        self.seen: list[AuthenticatePayload] = []

    async def on_authenticate(self, payload: AuthenticatePayload) -> Identity | None:
        self.seen.append(payload)
        role = payload.query.get("as", [""])[0]
        if role == "reader":
            return Identity(Access.READ, user="rita")
        if role == "refused":
            raise Refused("not for you", CloseCode.FORBIDDEN)
        if role == "broken":
            raise RuntimeError("the extension has a bug")
        return Identity(Access.WRITE, user="wendy")


async def test_a_read_only_connection_gets_the_document_but_its_edits_are_refused_once(
    tmp_path: Path,
) -> None:
    auth = ByQuery()
    async with app_serving(tmp_path, auth) as url:
        writer = await joined(url)
        reader = await joined(url, "doc?as=reader")
        await reader.send(encode(SyncUpdate(edit("forged", 7))))
        denied = await next_message(reader, PermissionDenied)
        assert denied == PermissionDenied("this connection may read the document but not edit it")
        await reader.send(encode(SyncUpdate(edit("again", 8))))  # told once only
        await writer.send(encode(SyncUpdate(edit("real", 9))))
        update = await next_message(reader, SyncUpdate)
        assert isinstance(update, SyncUpdate)
        doc: Doc = Doc()
        doc.apply_update(update.update)
        assert str(doc.get("content", type=Text)) == "real"
        await writer.close()
        await reader.close()
    assert [p.query.get("as") for p in auth.seen] == [None, ["reader"]]
    assert auth.seen[1].document == "doc"
    async with open_store(Settings(db=tmp_path / "c.db"), create=False) as store:
        stored = await store.read("doc")
    doc = Doc()
    for row in stored.updates:
        doc.apply_update(row)
    assert str(doc.get("content", type=Text)) == "real"


async def test_a_refusing_or_failing_authentication_closes_only_that_connection(
    tmp_path: Path,
) -> None:
    async with app_serving(tmp_path, ByQuery()) as url:
        other = await joined(url)
        refused = await connect(f"{url}/doc?as=refused")
        assert await closed_with(refused) == (4403, "not for you")
        broken = await connect(f"{url}/doc?as=broken")
        assert await closed_with(broken) == (1011, "an extension of the server failed")
        await other.send(encode(SyncUpdate(edit("still here", 3))))
        fresh = await joined(url)
        await fresh.send(encode(SyncStep1(b"\x00")))
        reply = await next_message(fresh, SyncStep2)
        assert isinstance(reply, SyncStep2)
        doc: Doc = Doc()
        doc.apply_update(reply.update)
        assert str(doc.get("content", type=Text)) == "still here"
        await other.close()
        await fresh.close()


class Recorder(Extension):
    def __init__(self, fail_load: int = 0, fail_change: str | None = None) -> None:
        self.loads: list[LoadPayload] = []
        self.changes: list[ChangePayload] = []
        self.stores: list[StorePayload] = []
        self.disconnects: list[DisconnectPayload] = []
        self.fail_load = fail_load
        self.fail_change = fail_change

    async def on_authenticate(self, payload: AuthenticatePayload) -> Identity:
        return Identity(Access.WRITE, user=payload.query.get("user", ["?"])[0])

    async def on_load(self, payload: LoadPayload) -> None:
        self.loads.append(payload)
        if len(self.loads) <= self.fail_load:
            raise RuntimeError("cannot load")

    def on_change(self, payload: ChangePayload) -> None:
        self.changes.append(payload)
        assert payload.origin.identity is not None
        if payload.origin.identity.user == self.fail_change:
            raise RuntimeError("bad change")

    def on_store(self, payload: StorePayload) -> None:
        self.stores.append(payload)

    async def on_disconnect(self, payload: DisconnectPayload) -> None:
        self.disconnects.append(payload)


async def test_load_change_store_and_disconnect_hooks_see_what_happened(tmp_path: Path) -> None:
    recorder = Recorder()
    async with app_serving(tmp_path, recorder) as url:
        ada = await joined(url, "doc?user=ada")
        bob = await joined(url, "doc?user=bob")
        update = edit("hello", 11)
        await ada.send(encode(SyncUpdate(update)))
        await next_message(bob, SyncUpdate)
        with anyio.fail_after(5):
            while not recorder.stores:
                await anyio.sleep(0.01)
        await ada.close()
        await bob.close()
        with anyio.fail_after(5):
            while len(recorder.disconnects) < 2:
                await anyio.sleep(0.01)
    assert [p.document for p in recorder.loads] == ["doc"]  # once, however many joined
    (change,) = recorder.changes
    assert change.document == "doc" and change.origin.kind == "connection"
    assert change.origin.identity == Identity(Access.WRITE, user="ada")
    doc: Doc = Doc()
    doc.apply_update(change.update)
    assert str(doc.get("content", type=Text)) == "hello"
    (stored,) = recorder.stores
    assert stored.document == "doc" and stored.update == change.update
    assert (stored.epoch, stored.first_seq, stored.last_seq) == (0, 1, 1)  # its log position
    assert sorted((d.identity.user, d.close_code) for d in recorder.disconnects) == [
        ("ada", 1000),
        ("bob", 1000),
    ]


async def test_a_failing_load_or_change_hook_closes_only_the_connection_concerned(
    tmp_path: Path,
) -> None:
    recorder = Recorder(fail_load=1, fail_change="mallory")
    async with app_serving(tmp_path, recorder) as url:
        first = await connect(f"{url}/doc?user=ada")
        assert await closed_with(first) == (1011, "an extension of the server failed")
        ada = await joined(url, "doc?user=ada")  # the load is tried again, and succeeds
        mallory = await joined(url, "doc?user=mallory")
        await mallory.send(encode(SyncUpdate(edit("boom", 5))))
        assert await closed_with(mallory) == (1011, "an extension of the server failed")
        # the update is in the doc already: the others get it, and stay connected
        assert isinstance(await next_message(ada, SyncUpdate), SyncUpdate)
        await ada.send(encode(SyncUpdate(edit("fine", 6))))
        await ada.close()
    assert len(recorder.loads) == 2
    assert [c.origin.identity.user for c in recorder.changes if c.origin.identity] == [
        "mallory",
        "ada",
    ]


def test_hooks_skip_what_an_extension_does_not_override_and_refuse_hookless_objects() -> None:
    class OnlyChange(Extension):
        def on_change(self, payload: ChangePayload) -> None:
            pass

    class Duck:
        async def on_load(self, payload: LoadPayload) -> None:
            pass

    hooks = Hooks([OnlyChange(), Duck()])
    assert (len(hooks.on_change), len(hooks.on_load), len(hooks.on_authenticate)) == (1, 1, 0)
    with pytest.raises(TypeError, match="has none of the hooks"):
        Hooks([object()])
