"""Per-document size quota and the cap on open documents, on rooms without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from collab.config import Settings
from collab.errors import CloseCode
from collab.protocol import SyncUpdate
from collab.rooms import QuotaError, Room, RoomManager, TooManyDocumentsError
from collab.storage.sqlite import SQLiteLog
from tests.test_rooms import FakePeer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteLog]:
    async with SQLiteLog(tmp_path / "collab.db", commit_delay=0.001) as log:
        yield log


def edit(doc: Doc, change: str, text: str = "", at: int = 0, length: int = 0) -> bytes:
    before = doc.get_state()
    content = doc.get("content", type=Text)
    if change == "insert":
        content.insert(at, text)
    else:
        del content[at : at + length]
    return doc.get_update(before)


async def test_a_document_past_its_quota_refuses_growth_and_stays_as_it_was(
    store: SQLiteLog,
) -> None:
    room = Room("q", Doc(), store, max_document_bytes=8 * 1024)
    writer = FakePeer()
    room.join(writer)
    client: Doc = Doc()
    room.receive(writer, SyncUpdate(edit(client, "insert", "a" * 6000)))
    before = room.doc.get_update()
    with pytest.raises(QuotaError) as refused:
        room.receive(writer, SyncUpdate(edit(client, "insert", "b" * 4000, at=6000)))
    assert refused.value.close_code == CloseCode.POLICY_VIOLATION
    assert room.doc.get_update() == before
    room.close()


async def test_deleting_frees_the_quota_it_used(store: SQLiteLog) -> None:
    room = Room("q", Doc(), store, max_document_bytes=8 * 1024)
    writer = FakePeer()
    room.join(writer)
    client: Doc = Doc()
    for _ in range(5):  # 30,000 bytes written, never more than 6,000 held
        room.receive(writer, SyncUpdate(edit(client, "insert", "a" * 6000)))
        room.receive(writer, SyncUpdate(edit(client, "delete", at=0, length=6000)))
    assert str(room.doc.get("content", type=Text)) == ""
    room.close()


async def test_idle_documents_are_unloaded_to_make_room_and_busy_ones_are_not(
    store: SQLiteLog,
) -> None:
    manager = RoomManager(store, Settings(max_open_documents=3, idle_unload=1000))
    first = await manager.open("a")
    busy = [await manager.open(name) for name in ("b", "c")]
    for room in busy:
        room.join(FakePeer())
    first.empty_since = 0.0  # idle the longest
    await manager.open("d")  # "a" goes
    assert sorted(manager.rooms) == ["b", "c", "d"]
    manager.rooms["d"].join(FakePeer())
    with pytest.raises(TooManyDocumentsError):
        await manager.open("e")
    assert sorted(manager.rooms) == ["b", "c", "d"]
