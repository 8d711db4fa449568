"""The change feed's parts: event ids, a stream peer's bounded outbox, and the race between
reading the store and live commits, forced in an app served in this process."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Awareness, Doc, Text

from collab.app import CollabApp, build_app
from collab.config import Settings
from collab.errors import CloseCode
from collab.hooks import ANONYMOUS_WRITER
from collab.limits import RateLimit
from collab.protocol import AwarenessUpdate, SyncStep1, SyncUpdate, encode
from collab.storage.base import LogEntry, StoredUpdates
from collab.transport.feed import (
    SLOW_REASON,
    BadEventIdError,
    EventStreams,
    StreamPeer,
    event_id,
    parse_event_id,
)
from collab.transport.http import HTTPWriter
from tests.eventfeed import feed
from tests.inprocess import serving


@pytest.mark.parametrize("position", [(0, 0), (3, 1042), (10**17, 10**18 - 1)])
def test_event_ids_round_trip(position: tuple[int, int]) -> None:
    assert parse_event_id(event_id(*position)) == position


@pytest.mark.parametrize(
    "text",
    ["", "3", "3-", "-3", "3-4-5", "a-1", "1-b", " 1-2", "1_0-2", "\u0663-1", "1" * 19 + "-1"],
)
def test_bad_event_ids_are_refused(text: str) -> None:
    with pytest.raises(BadEventIdError, match="EPOCH-SEQ"):
        parse_event_id(text)


def peer(
    *, awareness: bool = True, queue_size: int = 100, queue_bytes: int = 1 << 20
) -> StreamPeer:
    return StreamPeer(
        "doc",
        identity=ANONYMOUS_WRITER,
        label="test",
        address="127.0.0.1",
        awareness=awareness,
        queue_size=queue_size,
        queue_bytes=queue_bytes,
        rate=RateLimit.from_settings(Settings(), 0.0),
    )


def stored(*seqs: int, size: int = 10) -> StoredUpdates:
    return StoredUpdates("doc", 0, [LogEntry(seq, b"x" * size, 0.0) for seq in seqs])


def awareness_frame() -> bytes:
    awareness = Awareness(Doc())
    awareness.set_local_state({"user": {"name": "Ada"}})
    return encode(AwarenessUpdate(awareness.encode_awareness_update([awareness.client_id])))


def test_a_stream_peer_queues_awareness_when_asked_and_no_websocket_sync() -> None:
    listening, silent = peer(), peer(awareness=False)
    for p in (listening, silent):
        p.send_nowait(encode(SyncStep1(b"\x00")))
        p.send_nowait(awareness_frame())
        p.send_nowait(encode(SyncUpdate(b"\x00\x00")))
    (event,) = listening.take()
    assert isinstance(event, bytes) and event.startswith(b"event: awareness\ndata: ")
    assert silent.take() == []
    assert (listening.relayed, silent.relayed) == (1, 1)  # each counted the relayed update


def test_a_stream_peer_past_its_frame_or_byte_bound_is_closed_as_too_slow() -> None:
    few = peer(queue_size=3)
    for seq in range(1, 5):
        few.stored_nowait(stored(seq))
    assert (few.close_code, few.close_reason) == (CloseCode.TOO_SLOW, SLOW_REASON)
    assert few.take() == []  # what it held is dropped: it resumes from the store
    few.stored_nowait(stored(5))
    assert few.take() == []
    small = peer(queue_bytes=1000)
    small.stored_nowait(stored(1, size=600))
    assert small.close_code is None
    small.stored_nowait(stored(2, size=600))  # 2 x 600 bytes is 1600 in base64
    assert small.close_code == CloseCode.TOO_SLOW


def test_commits_reach_the_streams_of_their_document_and_sessions_name_open_ones() -> None:
    streams = EventStreams()
    mine, other = peer(), peer()
    other.room = "other"
    streams.add(mine)
    streams.add(other)
    streams.on_stored(stored(1, 2))
    assert [len(i.entries) for i in mine.take() if isinstance(i, StoredUpdates)] == [2]
    assert other.take() == []
    assert streams.session(mine.session) is mine and len(streams) == 2
    mine.close_nowait(CloseCode.GOING_AWAY, "bye")
    assert streams.session(mine.session) is None  # closing: its session is over
    streams.discard(mine)
    streams.discard(other)
    assert len(streams) == 0


# -- the race between reading the store and live commits, forced -----------------------


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[CollabApp, str]]:
    app = build_app(Settings(db=tmp_path / "collab.db", sse_keepalive=0.2))
    async with app.running(), serving(app) as ws_url:
        yield app, ws_url.replace("ws://", "http://")


async def write(app: CollabApp, name: str, doc: Doc[Any], chars: str) -> None:
    """Type ``chars`` into ``doc`` as a client would, one stored row each."""
    room = await app.rooms.open(name)
    text = doc.get("content", type=Text)
    for char in chars:
        before = doc.get_state()
        text += char
        room.receive(
            HTTPWriter(ANONYMOUS_WRITER, "test", "127.0.0.1"), SyncUpdate(doc.get_update(before))
        )
        room.flush()
        await app.store.flush()


def once_before(
    original: Callable[..., Awaitable[Any]], action: Callable[[], Awaitable[None]]
) -> Callable[..., Awaitable[Any]]:
    """``original``, which runs ``action`` first, the first time it is called."""
    done = False

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if not done:
            done = True
            await action()
        return await original(*args, **kwargs)

    return wrapped


async def test_an_update_committed_while_the_catch_up_reads_the_store_is_sent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path) as (app, http_url):
        doc: Doc[Any] = Doc()
        await write(app, "race", doc, "abc")
        async with feed(http_url, "race", last_event_id="0-0") as first:
            await first.until("synced")
        # Committed after the stream subscribed, before its read: the read returns it, and
        # the commit reports it to the stream too.
        monkeypatch.setattr(
            app.store,
            "read_after",
            once_before(app.store.read_after, lambda: write(app, "race", doc, "d")),
        )
        async with feed(http_url, "race", resume=first) as again:
            await again.until("synced")
            await write(app, "race", doc, "e")
            await again.until_text("abcde")
            assert again.positions == [("update", f"0-{n}") for n in (4, 5)]


async def test_a_snapshot_names_the_position_it_covers_when_a_commit_lands_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path) as (app, http_url):
        doc: Doc[Any] = Doc()
        await write(app, "race", doc, "abc")
        # Between the log position read and the document read: the first snapshot read is
        # of a log that moved on, so it is read again.
        monkeypatch.setattr(
            app.store, "read", once_before(app.store.read, lambda: write(app, "race", doc, "d"))
        )
        async with feed(http_url, "race") as f:
            await f.until("synced")
            assert f.positions == [("snapshot", "0-4")] and f.text() == "abcd"
            await write(app, "race", doc, "e")
            await f.until_text("abcde")
            assert f.positions[1:] == [("update", "0-5")]


async def test_a_snapshot_holds_the_whole_document_even_with_an_empty_log(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, http_url):
        async with feed(http_url, "never-written") as f:
            event = await f.until("snapshot")
            assert (event.id, base64.b64decode(event.data)) == ("0-0", b"\x00\x00")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{http_url}/api/docs")).json()["docs"] == []  # none stored
