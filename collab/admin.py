"""What the admin commands do, one async function each, on a :class:`DocumentStore`.

Every function here is safe while ``collab serve`` uses the same store: the store reads
one consistent snapshot, waits for the server's current group commit before it writes,
and anything that changes a document's content goes through the epoch and generation
counters the server polls (``collab.storage.base``). What is Yjs here (validating an
import, squashing an export, the restore edit, replaying for ``check``) runs on the bytes
the store returns, so these functions work on any backend. The CLI (``collab.cli``) only
parses arguments, runs them with ``anyio.run`` and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from collab.errors import CollabError, DocumentNotFoundError, InvalidUpdateError, StoreError
from collab.history import RootKind, resolve_roots, restore_update, root_value
from collab.storage.base import (
    CompactionResult,
    DatabaseError,
    DocumentStore,
    ImportResult,
    StoredBlob,
)
from collab.structs import (
    MAX_DEPTH,
    NestingTracker,
    StructError,
    conflicting_structs,
    max_depth,
)
from collab.updates import EMPTY_UPDATE, check_update, doc_from, squash

Progress = Callable[[int], None]


# -- export and import ------------------------------------------------------------


async def export_update(store: DocumentStore, room: str, at: float | None = None) -> bytes:
    """The whole document (now, or as it was at ``at``) as one Yjs update.

    :raises DocumentNotFoundError: no such document.
    :raises HistoryUnavailableError: ``at`` is older than the retention window.
    :raises InvalidUpdateError: a stored update cannot be applied.
    """
    if at is None:
        updates = (await store.read(room)).updates
    else:
        updates = await store.read_at(room, at)
    try:
        return await to_thread.run_sync(squash, updates) if updates else EMPTY_UPDATE
    except InvalidUpdateError as e:
        raise InvalidUpdateError(
            f"{room!r} holds a stored update that cannot be read ({e}); `collab check` names"
            " it. Replace the document from a backup (docs import --replace) or delete it."
        ) from None


async def export_content(
    store: DocumentStore, room: str, roots: Sequence[str] = (), at: float | None = None
) -> dict[str, Any]:
    """``{root: content}`` for the named roots (``name`` or ``name:type``), or all roots.

    :raises ValueError: a root spec names an unknown type.
    """
    return content_of(await export_update(store, room, at), roots)


def content_of(update: bytes, roots: Sequence[str] = ()) -> dict[str, Any]:
    """``{root: content}`` of a document given as one update (see :func:`export_content`).

    :raises ValueError: a root spec names an unknown type.
    """
    doc = doc_from([update])
    return {
        name: root_value(doc, name, kind)
        for name, kind in resolve_roots(update, roots, default_all=True)
    }


def root_names(update: bytes) -> set[str]:
    """The names of the root types a document (as one update) holds."""
    return set(doc_from([update]).keys())


async def export_text(
    store: DocumentStore, room: str, root: str = "content", at: float | None = None
) -> str:
    """One root's text (a Y.Text, or an XML fragment's markup)."""
    update = await export_update(store, room, at)
    ((name, kind),) = resolve_roots(update, [root], default_all=False)
    assert kind is not None  # a named root is text unless detected otherwise
    if kind not in ("text", "xml"):
        raise CollabError(f"root {name!r} of {room!r} is a {kind}, not text: use --format json")
    return str(root_value(doc_from([update]), name, kind))


async def import_update(
    store: DocumentStore, room: str, update: bytes, *, replace: bool = False
) -> ImportResult:
    """Append a Yjs update to a document, or replace its content with it (new epoch).

    Appending merges the update like any client's; a running server picks it up by the
    generation it polls. Replacing retires the old epoch as ``delete`` does.

    :raises InvalidUpdateError: pycrdt cannot apply the bytes; nothing is stored.
    """
    check_update(update)
    if replace:
        return await store.replace(room, update)
    result = await store.append(room, update)
    assert result is not None  # only an append guarded by an epoch is refused
    return result


# -- history ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    #: The update appended, or None if the content already equalled the past.
    update: bytes | None
    roots: list[tuple[str, RootKind]]


async def restore(store: DocumentStore, room: str, at: float) -> RestoreResult:
    """Bring back the content ``room`` had at ``at`` as a new edit on top of it.

    Nothing is rewritten: the edit is appended like a client's update (with a generation
    bump, so a running server reloads it and its clients receive it as an ordinary change).
    Edits made after the current content was read and before the append are kept.

    :raises DocumentNotFoundError: no such document.
    :raises HistoryUnavailableError: ``at`` is older than the retention window.
    :raises StoreError: the document was deleted or replaced meanwhile.
    """
    current = await store.read(room)
    past = await store.read_at(room, at)
    update, roots = await to_thread.run_sync(restore_update, current.updates, past)
    if update is not None:
        if await store.append(room, update, epoch=current.epoch) is None:
            raise StoreError(f"{room!r} was deleted or replaced while restoring; nothing changed")
    return RestoreResult(update, roots)


# -- maintenance --------------------------------------------------------------------


async def compact(
    store: DocumentStore,
    rooms: Sequence[str],
    *,
    retention: float,
    progress: Progress | None = None,
) -> tuple[list[CompactionResult], list[tuple[str, str]]]:
    """Compact each room and prune its history; return the results and the failures.

    :raises StoreError: the store cannot be written (locked for too long, say).
    """
    results: list[CompactionResult] = []
    failures: list[tuple[str, str]] = []
    for room in rooms:
        try:
            result = await store.compact(room, retention=retention)
        except InvalidUpdateError as e:
            failures.append((room, str(e)))
        else:
            if result is not None:
                results.append(result)
        if progress is not None:
            progress(1)
    return results, failures


async def delete(store: DocumentStore, room: str) -> int:
    """Delete a document (see :meth:`DocumentStore.delete`); return its new epoch."""
    return await store.delete(room)


async def all_rooms(store: DocumentStore) -> list[str]:
    """Every document that is not deleted, by name."""
    return await store.names()


@dataclass(frozen=True, slots=True)
class Problem:
    room: str
    #: Where: ``updates seq 12``, ``history seq 3``, ``checkpoint``, ``log replay``, ``database``.
    where: str
    error: str


async def check(
    store: DocumentStore, progress: Progress | None = None
) -> tuple[int, list[Problem]]:
    """Replay every document; return how many were checked and every problem found.

    Each stored blob (log row, history row, checkpoint) must apply on its own to a fresh
    doc, and each document's log must replay as a whole. The store's own integrity check
    (SQLite's ``PRAGMA quick_check``) covers the file itself.
    """
    problems: list[Problem] = []
    checked = 0
    try:
        problems.extend(Problem("-", "database", line) for line in await store.check_integrity())
        for room in await store.names():
            try:
                blobs = await store.stored_blobs(room)
            except DocumentNotFoundError:
                pass  # deleted while the check ran
            else:
                problems.extend(await to_thread.run_sync(_check_blobs, room, blobs))
                checked += 1
            if progress is not None:
                progress(1)
    except StoreError as e:
        # A damaged file can fail any read ("database disk image is malformed"): report
        # it and stop, rather than end with a traceback.
        problems.append(
            Problem("-", "database", e.reason if isinstance(e, DatabaseError) else str(e))
        )
    return checked, problems


#: Most conflicting struct ids reported per document by ``collab check``.
MAX_CONFLICTS_SHOWN = 5


def _check_blobs(
    room: str, blobs: list[StoredBlob], max_depth_allowed: int = MAX_DEPTH
) -> list[Problem]:
    # The structs are read in Python first: pycrdt crashes (SIGSEGV) on some hostile
    # updates (deep Any values, and a delete of a deeply nested tree), and a check must
    # report those, not die of them.
    problems = []
    readable = []
    for blob in blobs:
        try:
            depth = max_depth(blob.data)
        except StructError as e:
            problems.append(Problem(room, blob.where, f"not a valid Yjs update: {e}"))
            continue
        if depth > max_depth_allowed:
            problems.append(Problem(room, blob.where, _too_deep(depth, max_depth_allowed)))
            continue
        try:
            check_update(blob.data)
        except InvalidUpdateError as e:
            problems.append(Problem(room, blob.where, str(e)))
            continue
        readable.append(blob)
    log_blobs = [blob for blob in readable if blob.in_log]
    tracker = NestingTracker(max_depth=2**31)  # measures; the limit is applied below
    for blob in log_blobs:
        tracker.commit(tracker.check(blob.data))
    if tracker.deepest > max_depth_allowed:
        problems.append(Problem(room, "log", _too_deep(tracker.deepest, max_depth_allowed)))
    if problems:
        return problems  # replaying it whole could crash, or fail for a known reason
    conflicts = conflicting_structs(blob.data for blob in log_blobs)
    for conflict in conflicts[:MAX_CONFLICTS_SHOWN]:
        problems.append(
            Problem(
                room,
                f"{log_blobs[conflict.first].where} and {log_blobs[conflict.second].where}",
                f"two different {conflict.reason}s for struct ids {conflict.client}:"
                f"{conflict.clock}..{conflict.clock + conflict.length - 1} (a forged update)",
            )
        )
    if len(conflicts) > MAX_CONFLICTS_SHOWN:
        more = len(conflicts) - MAX_CONFLICTS_SHOWN
        problems.append(Problem(room, "log", f"{more} more conflicting struct ranges"))
    if not problems:
        try:
            doc_from([blob.data for blob in log_blobs])
        except InvalidUpdateError as e:
            problems.append(Problem(room, "log replay", str(e)))
    return problems


def _too_deep(depth: int, limit: int) -> str:
    return (
        f"shared types nest {depth} deep, past the limit of {limit}: the server keeps the"
        " document read-only (deleting the nested part would crash the CRDT core);"
        " export what you need and delete the document"
    )


async def backup(
    store: DocumentStore,
    target: str,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the store to ``target`` (SQLite: its online backup); return the copy's size.

    :raises StoreError: the target exists (without ``force``) or the copy failed.
    """
    return await store.backup(target, force=force, progress=progress)


__all__ = [
    "ImportResult",
    "Problem",
    "RestoreResult",
    "all_rooms",
    "backup",
    "check",
    "compact",
    "delete",
    "export_content",
    "export_text",
    "export_update",
    "import_update",
    "restore",
]
