"""The storage contract, checked on every backend through the protocols alone.

Each test gets a :class:`Backend` (and most an opened :class:`~collab.storage.base.Store`)
for every entry of ``BACKENDS``, and talks to it only through ``open_store`` and the
``UpdateLog`` / ``DocumentStore`` protocols: no SQL, no backend module. A new backend
adds one entry to ``BACKENDS`` (a fresh, empty store per test) and must pass unchanged.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Text

from collab import admin
from collab.config import Settings
from collab.errors import DocumentNotFoundError, InvalidUpdateError, StoreError
from collab.storage import Store, open_store
from collab.storage.base import (
    DOC_ORDERS,
    CompactionResult,
    DocInfo,
    DocOrder,
    DocVersion,
    HistoryUnavailableError,
    ImportResult,
    StoredUpdates,
)
from collab.updates import (
    check_update,
    decode_state_vector,
    doc_from,
    state_vector_overlaps,
    update_overlaps,
)
from tests.edits import keystrokes
from tests.postgres import database_for_suite


@dataclasses.dataclass(frozen=True)
class Backend:
    """One storage backend under test: the settings that open a fresh store of it."""

    name: str
    settings: Settings
    #: Whether what it stores outlives closing it (``:memory:`` keeps nothing).
    persistent: bool

    def open(self, **changes: Any) -> Store:
        """A store of this backend (not yet entered), with some settings changed."""
        return open_store(dataclasses.replace(self.settings, **changes))


#: Settings every backend is tested with: quick commits, no compaction unless asked for.
BASE = Settings(commit_delay=0.005, compact_rows=100_000, compact_bytes=1 << 30)


def _sqlite_file(tmp_path: Path) -> Backend:
    return Backend("sqlite-file", dataclasses.replace(BASE, db=f"sqlite:///{tmp_path}/c.db"), True)


def _sqlite_memory(tmp_path: Path) -> Backend:
    return Backend("sqlite-memory", dataclasses.replace(BASE, db=":memory:"), False)


def _postgresql(tmp_path: Path) -> Backend:
    # A database of its own per test, on the machine's PostgreSQL (tests/postgres.py).
    return Backend("postgresql", dataclasses.replace(BASE, db=database_for_suite()), True)


#: name -> how to make a fresh, empty store of that backend for one test.
BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
    "postgresql": _postgresql,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as opened:
        yield opened


def typed(text: str, doc: Doc[Any] | None = None) -> tuple[Doc[Any], bytes]:
    """A client (``doc``, or a new one) types ``text`` at the start: the doc and its update."""
    doc = doc if doc is not None else Doc()
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, text)
    return doc, doc.get_update(before)


def text_of(updates: list[bytes]) -> str:
    return str(doc_from(updates).get("content", type=Text))


async def store_all(store: Store, room: str, updates: list[bytes], epoch: int | None = None) -> int:
    ticket = 0
    for update in updates:
        ticket = store.append_nowait(room, update, epoch=epoch)
    await store.flush()
    return ticket


def after_now() -> float:
    """A time strictly after every update stored so far and before any stored next."""
    now = time.time()
    while time.time() <= now:
        pass
    return now


# -- the update log: appends, loads, group commit -----------------------------------


async def test_appended_updates_load_back_into_the_same_document(store: Store) -> None:
    doc: Doc[Any] = Doc()
    updates = keystrokes("hello, store", doc)
    await store_all(store, "notes/2026/café", updates)
    stored = await store.load("notes/2026/café")
    assert text_of(stored.updates) == "hello, store"
    assert doc_from(stored.updates).get_state() == doc.get_state()
    assert (stored.epoch, stored.generation, stored.retired_state_vectors) == (0, 0, [])
    assert (await store.load("notes/2026")).updates == []  # names are not prefixes
    assert (await store.load("never-written")).updates == []


async def test_a_burst_shares_one_commit_and_flush_waits_for_it(backend: Backend) -> None:
    async with backend.open(commit_delay=0.05) as store:
        loop_thread = threading.get_ident()
        commits: list[tuple[int, float, int]] = []
        store.on_commit(lambda ticket, at: commits.append((ticket, at, threading.get_ident())))
        start = time.monotonic()
        tickets = [store.append_nowait("doc", update) for update in keystrokes("x" * 100)]
        assert tickets == list(range(tickets[0], tickets[0] + 100))  # one more per append
        assert store.durable_ticket < tickets[0]  # the burst waits for its commit
        await store.flush()
        assert store.durable_ticket >= tickets[-1]
        assert len(commits) <= 2  # grouped: not one commit per append
        assert commits[-1][0] == tickets[-1]
        assert all(thread == loop_thread for _, _, thread in commits)  # on the loop
        assert all(start <= at <= time.monotonic() for _, at, _ in commits)
        more = [store.append_nowait("other", update) for update in keystrokes("yz")]
        await store.flush()
        durable = [ticket for ticket, _, _ in commits]
        assert durable == sorted(set(durable))  # grows, never repeats
        assert durable[-1] == store.durable_ticket == more[-1]


async def test_a_load_waits_for_the_rooms_queued_appends(backend: Backend) -> None:
    async with backend.open(commit_delay=0.3) as store:
        _, update = typed("just typed")
        ticket = store.append_nowait("doc", update)
        stored = await store.load("doc")  # before the commit delay is over
        assert stored.updates == [update]
        assert store.durable_ticket >= ticket


async def test_closing_the_store_commits_everything_even_when_cancelled(backend: Backend) -> None:
    _, update = typed("last words")
    with anyio.CancelScope() as scope:
        async with backend.open(commit_delay=10) as store:
            ticket = store.append_nowait("doc", update)
            scope.cancel()
    assert store.durable_ticket == ticket
    with pytest.raises(StoreError):
        store.append_nowait("doc", update)
    if backend.persistent:
        async with backend.open() as reopened:
            assert (await reopened.load("doc")).updates == [update]


# -- compaction ---------------------------------------------------------------------


async def test_compaction_keeps_the_document_in_one_row(store: Store) -> None:
    doc: Doc[Any] = Doc()
    updates = keystrokes("squash me, keep me", doc)
    await store_all(store, "doc", updates)
    result = await store.compact("doc")
    assert isinstance(result, CompactionResult)
    assert (result.room, result.rows_before) == ("doc", len(updates))
    stored = await store.load("doc")
    assert text_of(stored.updates) == "squash me, keep me"
    assert doc_from(stored.updates).get_state() == doc.get_state()
    info = await store.info("doc")
    assert (info.rows, info.updates) == (1, len(updates))
    assert await store.compact("doc") is None  # nothing left to squash
    assert await store.compact("never-written") is None


async def test_an_update_appended_during_compaction_is_kept(store: Store) -> None:
    doc: Doc[Any] = Doc()
    await store_all(store, "doc", keystrokes("a" * 3000, doc))
    during = 0
    async with anyio.create_task_group() as tg:
        done = anyio.Event()

        async def compact() -> None:
            await store.compact("doc")
            done.set()

        tg.start_soon(compact)
        while not done.is_set():  # group commits keep landing while it runs
            (update,) = keystrokes("b", doc)
            store.append_nowait("doc", update)
            during += 1
            await anyio.sleep(0.001)
    await store.flush()
    assert during > 1
    assert text_of((await store.load("doc")).updates) == "a" * 3000 + "b" * during


async def test_the_store_compacts_a_long_log_by_itself(backend: Backend) -> None:
    async with backend.open(compact_rows=20) as store:
        await store_all(store, "doc", keystrokes("0123456789" * 5))
        with anyio.fail_after(10):
            while (await store.info("doc")).rows > 21:
                await anyio.sleep(0.01)
        assert text_of((await store.load("doc")).updates) == "0123456789" * 5


# -- the change feed: log positions ------------------------------------------------


async def test_each_commit_reports_what_it_stored_with_consecutive_positions(
    store: Store,
) -> None:
    reported: list[StoredUpdates] = []
    order: list[str] = []
    store.on_stored(lambda stored: (reported.append(stored), order.append("stored")))
    store.on_commit(lambda _ticket, _at: order.append("commit"))
    doc: Doc[Any] = Doc()
    first = keystrokes("abc", doc)
    await store_all(store, "doc", first)
    other = keystrokes("x")
    await store_all(store, "other", other)
    second = keystrokes("de", doc)
    await store_all(store, "doc", second)
    entries = [e for r in reported if r.room == "doc" for e in r.entries]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.update for e in entries] == first + second
    assert {r.epoch for r in reported} == {0}
    assert [e.seq for r in reported if r.room == "other" for e in r.entries] == [1]
    assert order.index("stored") < order.index("commit")  # a feed sees it before any ack
    assert all(e.created_at <= time.time() for e in entries)


async def test_read_after_gives_every_update_after_a_position_one_by_one(store: Store) -> None:
    doc: Doc[Any] = Doc()
    updates = keystrokes("hello", doc)
    await store_all(store, "doc", updates)
    tail = await store.read_after("doc", 0, 2, limit=100)
    assert (tail.epoch, tail.last_seq) == (0, 5)
    assert tail.entries is not None
    assert [e.seq for e in tail.entries] == [3, 4, 5]
    assert [e.update for e in tail.entries] == updates[2:]
    page = await store.read_after("doc", 0, 0, limit=2)
    assert page.entries is not None and [e.seq for e in page.entries] == [1, 2]
    assert (await store.read_after("doc", 0, 5, limit=100)).entries == []
    never = await store.read_after("never-written", 0, 0, limit=100)
    assert (never.epoch, never.last_seq, never.entries) == (0, 0, [])
    for epoch, seq in [(0, 6), (1, 0), (0, -1)]:  # ahead of the log, another epoch
        assert (await store.read_after("doc", epoch, seq, limit=100)).entries is None


async def test_read_after_reaches_across_a_compaction_while_history_is_kept(
    backend: Backend,
) -> None:
    doc: Doc[Any] = Doc()
    async with backend.open(retention=3600.0) as store:
        updates = keystrokes("abcdef", doc)
        await store_all(store, "doc", updates)
        await store.compact("doc")
        more = keystrokes("gh", doc)
        await store_all(store, "doc", more)
        tail = await store.read_after("doc", 0, 3, limit=100)
        assert tail.entries is not None
        assert [e.seq for e in tail.entries] == [4, 5, 6, 7, 8]
        assert [e.update for e in tail.entries] == updates[3:] + more
    async with backend.open(retention=0.0) as store:
        await store_all(store, "kept-nothing", keystrokes("abcdef"))
        await store.compact("kept-nothing")
        squashed = await store.read_after("kept-nothing", 0, 3, limit=100)
        assert (squashed.last_seq, squashed.entries) == (6, None)  # start from the whole
        assert (await store.read_after("kept-nothing", 0, 6, limit=100)).entries == []


async def test_read_after_a_delete_starts_the_new_epochs_log_at_one(store: Store) -> None:
    await store_all(store, "doc", keystrokes("old"), epoch=0)
    await store.delete("doc")
    assert (await store.read_after("doc", 0, 3, limit=100)).entries is None
    deleted = await store.read_after("doc", 1, 0, limit=100)
    assert (deleted.epoch, deleted.last_seq, deleted.entries) == (1, 0, [])
    (update,) = keystrokes("n")
    await store_all(store, "doc", [update], epoch=1)
    tail = await store.read_after("doc", 1, 0, limit=100)
    assert tail.entries is not None and [(e.seq, e.update) for e in tail.entries] == [(1, update)]


# -- epochs: deleted stays deleted ----------------------------------------------------


async def test_delete_starts_a_new_epoch_and_keeps_the_retired_state_vector(store: Store) -> None:
    client, update = typed("secret")
    await store_all(store, "doc", [update], epoch=0)
    assert await store.delete("doc") == 1
    stored = await store.load("doc")
    assert stored.updates == []
    assert stored.epoch == 1
    (retired,) = stored.retired_state_vectors
    assert decode_state_vector(retired) == decode_state_vector(client.get_state())
    assert await store.versions(["doc"]) == {"doc": DocVersion(epoch=1, generation=0)}
    with pytest.raises(DocumentNotFoundError, match="was deleted"):
        await store.delete("doc")
    with pytest.raises(DocumentNotFoundError, match="no document"):
        await store.delete("never-existed")
    for read in (store.read, store.info, store.history, store.stored_blobs):
        with pytest.raises(DocumentNotFoundError):
            await read("doc")
    assert await store.names() == []
    assert await store.list_docs() == []
    (listed,) = await store.list_docs(include_deleted=True)
    assert listed.name == "doc" and listed.deleted_at is not None and listed.epoch == 1


async def test_appends_under_a_retired_epoch_are_refused_reported_first_and_never_stored(
    backend: Backend,
) -> None:
    async with backend.open(commit_delay=0.05) as store:
        _, first = typed("old content")
        await store_all(store, "doc", [first], epoch=0)
        await store.delete("doc")
        events: list[tuple[str, object]] = []
        store.on_stale(lambda room, epoch: events.append(("stale", (room, epoch))))
        store.on_commit(lambda ticket, _at: events.append(("commit", ticket)))
        _, late = typed("late edit of the old doc")
        _, fresh = typed("written after the delete")
        store.append_nowait("doc", late, epoch=0)  # a room loaded before the delete
        last = store.append_nowait("other", fresh, epoch=0)
        await store.flush()
        assert events == [("stale", ("doc", 0)), ("commit", last)]
        assert (await store.load("doc")).updates == []
        assert (await store.load("other")).updates == [fresh]
        # A room loaded after the delete carries the new epoch and is stored.
        await store_all(store, "doc", [fresh], epoch=1)
        assert (await store.load("doc")).updates == [fresh]
        assert [kind for kind, _ in events].count("stale") == 1


async def test_a_deleted_documents_content_never_comes_back(store: Store) -> None:
    old_client, old_update = typed("deleted text")
    await store_all(store, "doc", [old_update], epoch=0)
    await store.compact("doc")  # in the log, in history, everywhere
    await store.delete("doc")
    # The name is used again by a client that reloaded: a new doc, a new client id.
    new_client, new_update = typed("new text")
    await store_all(store, "doc", [new_update], epoch=1)
    stored = await store.load("doc")
    assert text_of(stored.updates) == "new text"
    assert all("deleted" not in text_of([blob.data]) for blob in await store.stored_blobs("doc"))
    assert text_of(await store.read_at("doc", time.time())) == "new text"
    # A tab left open on the old document is recognised by what it holds ...
    (retired,) = stored.retired_state_vectors
    assert state_vector_overlaps(old_client.get_state(), retired)
    assert update_overlaps(old_client.get_update(), retired)
    # ... and the new client, offline edits included, is not.
    assert not state_vector_overlaps(new_client.get_state(), retired)
    assert not update_overlaps(new_client.get_update(), retired)


async def test_replace_retires_the_old_epoch(store: Store) -> None:
    old_client, update = typed("old")
    await store_all(store, "doc", [update], epoch=0)
    _, replacement = typed("new")
    assert await store.replace("doc", replacement) == ImportResult(epoch=1, replaced=True)
    stored = await store.load("doc")
    assert text_of(stored.updates) == "new"
    assert stored.epoch == 1
    assert decode_state_vector(stored.retired_state_vectors[0]) == decode_state_vector(
        old_client.get_state()
    )
    assert await store.replace("fresh", replacement) == ImportResult(epoch=0, replaced=True)
    assert text_of((await store.load("fresh")).updates) == "new"


# -- generations: another writer ------------------------------------------------------


async def test_an_append_by_another_writer_bumps_the_generation(store: Store) -> None:
    client, update = typed("x")
    await store_all(store, "a", [update])
    await store_all(store, "b", [update])
    unchanged = {"a": DocVersion(0, 0), "b": DocVersion(0, 0), "unknown": DocVersion(0, 0)}
    assert await store.versions(["a", "b", "unknown"]) == unchanged  # the server's own
    _, imported = typed("imported ", client)
    assert await store.append("b", imported) == ImportResult(epoch=0, replaced=False)
    await store.delete("a")
    assert await store.versions(["a", "b", "unknown"]) == {
        "a": DocVersion(epoch=1, generation=0),
        "b": DocVersion(epoch=0, generation=1),
        "unknown": DocVersion(0, 0),
    }
    stored = await store.load("b")
    assert stored.generation == 1
    assert text_of(stored.updates) == "imported x"
    assert await store.versions([]) == {}
    assert len(await store.versions(f"doc-{i}" for i in range(1200))) == 1200
    # An append guarded by an epoch the document has left is refused, and not stored.
    assert await store.append("a", update, epoch=0) is None
    assert (await store.load("a")).updates == []


# -- history and restore --------------------------------------------------------------


async def test_the_past_can_be_read_and_restored_as_a_new_edit(store: Store) -> None:
    client: Doc[Any] = Doc()
    text = client.get("content", type=Text)
    start = after_now()
    await store_all(store, "doc", keystrokes("the good version", client))
    good = after_now()
    before = client.get_state()
    text.insert(len(text), " and then a mistake")
    await store_all(store, "doc", [client.get_update(before)])
    assert text_of(await store.read_at("doc", good)) == "the good version"
    assert text_of(await store.read_at("doc", start)) == ""
    history = await store.history("doc")
    assert len(history.raw) == len("the good version") + 1
    assert all(start <= at for at, _ in history.raw)
    # History within the retention window survives compaction.
    await store.compact("doc")
    assert text_of(await store.read_at("doc", good)) == "the good version"
    rows_before = (await store.info("doc")).rows
    result = await admin.restore(store, "doc", good)
    assert result.update is not None and result.roots == [("content", "text")]
    stored = await store.read("doc")
    assert text_of(stored.updates) == "the good version"
    assert stored.generation == 1  # a running server reloads it
    assert (await store.info("doc")).rows == rows_before + 1  # appended, nothing rewritten
    client.apply_update(result.update)  # a client that kept the mistake merges it
    assert str(text) == "the good version"
    # A retention of 0 folds all history into the base: the past is gone.
    await store.compact("doc", retention=0)
    with pytest.raises(HistoryUnavailableError):
        await store.read_at("doc", good)
    assert text_of((await store.read("doc")).updates) == "the good version"


# -- listing --------------------------------------------------------------------------


def sort_key(order: DocOrder) -> Callable[[DocInfo], tuple[Any, ...]]:
    keys: dict[DocOrder, Callable[[DocInfo], tuple[Any, ...]]] = {
        "updated_at": lambda d: (-d.updated_at, d.name),
        "name": lambda d: (d.name,),
        "bytes": lambda d: (-d.bytes, d.name),
        "updates": lambda d: (-d.updates, d.name),
        "history": lambda d: (-d.history_bytes, d.name),
    }
    return keys[order]


async def test_listing_pages_through_every_document_in_every_order(store: Store) -> None:
    names = ["b", "a", "notes/x", "é", "c", "d", "gone"]
    for i, name in enumerate(names):
        await store_all(store, name, keystrokes("x" * (1 + i % 3)))  # ties in every size
    await store.compact("c")  # history bytes for one of them
    await store.delete("gone")
    assert await store.names() == sorted(set(names) - {"gone"})
    for order in DOC_ORDERS:
        everything = await store.list_docs(order=order)
        assert [d.name for d in everything] != []
        assert everything == sorted(everything, key=sort_key(order)), order
        assert {d.name for d in everything} == set(names) - {"gone"}
        pages: list[DocInfo] = []
        after: str | None = None
        while True:
            page = await store.list_docs(2, order=order, after=after)
            if not page:
                break
            assert len(page) <= 2
            pages += page
            after = page[-1].cursor(order)
        assert pages == everything, order
        with_deleted = await store.list_docs(order=order, include_deleted=True)
        assert {d.name for d in with_deleted} == set(names)
    listed = {d.name: d for d in await store.list_docs()}
    assert await store.info("notes/x") == listed["notes/x"]
    assert listed["c"].rows == 1 and listed["c"].history_bytes > 0
    assert listed["d"].updates == listed["d"].rows == 1 + names.index("d") % 3
    with pytest.raises(ValueError, match="not a cursor"):
        await store.list_docs(order="bytes", after="b")


async def test_a_listing_waits_for_queued_appends_at_most_flush_timeout(backend: Backend) -> None:
    async with backend.open(commit_delay=1.0) as store:
        store.append_nowait("queued", typed("x")[1])
        with anyio.fail_after(0.8):
            assert await store.list_docs(flush_timeout=0.01) == []
        assert [d.name for d in await store.list_docs()] == ["queued"]  # waits for it


# -- what the admin commands use ------------------------------------------------------


async def test_the_admin_functions_work_on_the_protocol(store: Store) -> None:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "imported")
    result = await admin.import_update(store, "doc", doc.get_update())
    assert result == ImportResult(epoch=0, replaced=False)
    assert await admin.export_text(store, "doc") == "imported"
    assert await admin.export_content(store, "doc") == {"content": "imported"}
    with pytest.raises(InvalidUpdateError):
        await admin.import_update(store, "other", b"\x01\x05\xff\xff\xff")
    assert await store.names() == ["doc"]  # nothing stored for the garbage
    await store_all(store, "doc", keystrokes(" and typed", doc))
    results, failures = await admin.compact(store, await admin.all_rooms(store), retention=3600)
    assert failures == [] and [r.room for r in results] == ["doc"]
    assert await admin.export_text(store, "doc") == "imported and typed"
    assert await admin.check(store) == (1, [])
    assert await admin.delete(store, "doc") == 1
    with pytest.raises(DocumentNotFoundError):
        await admin.export_update(store, "doc")


async def test_integrity_data_names_every_stored_blob(store: Store) -> None:
    doc: Doc[Any] = Doc()
    updates = keystrokes("checked", doc)
    await store_all(store, "doc", updates)
    await store.compact("doc")  # one log row, the raw rows kept as history
    await store_all(store, "doc", keystrokes("!", doc))
    blobs = await store.stored_blobs("doc")
    assert len({blob.where for blob in blobs}) == len(blobs)  # each names its place
    for blob in blobs:
        check_update(blob.data)
    log = [blob.data for blob in blobs if blob.in_log]
    assert len(log) == 2
    assert text_of(log) == "checked!"
    assert len([blob for blob in blobs if not blob.in_log]) == len(updates)
    assert await store.check_integrity() == []
