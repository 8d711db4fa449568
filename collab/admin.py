"""What the admin commands do, one function each, on the database a server may be using.

Every function here is safe while ``collab serve`` runs on the same file: reads see one
consistent snapshot (WAL), writes take the write lock with ``BEGIN IMMEDIATE`` and wait
up to the busy timeout for the server's current group commit, and anything that changes a
document's content goes through the epoch and generation counters the server polls
(``collab.storage.base``). The CLI (``collab.cli``) only parses arguments and prints.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from collab.errors import CollabError, DocumentNotFoundError, InvalidUpdateError, StoreError
from collab.history import RootKind, resolve_roots, restore_update, root_value
from collab.storage.sqlite import (
    BUSY_TIMEOUT_MS,
    CompactionResult,
    append_updates,
    compact_doc,
    connect,
    delete_doc,
    existing_doc,
    read_at,
    read_doc,
    read_transaction,
    replace_doc,
)
from collab.updates import EMPTY_UPDATE, check_update, doc_from, squash

Progress = Callable[[int], None]


def open_database(path: Path | str) -> Database:
    """Open an existing collab database (never creates one).

    :raises StoreError: no file there, or it is not a collab database.
    """
    return connect(path, create=False)


# -- export and import ------------------------------------------------------------


def export_update(db: Database, room: str, at: float | None = None) -> bytes:
    """The whole document (now, or as it was at ``at``) as one Yjs update.

    :raises DocumentNotFoundError: no such document.
    :raises HistoryUnavailableError: ``at`` is older than the retention window.
    :raises InvalidUpdateError: a stored update cannot be applied.
    """
    if at is None:
        with read_transaction(db):
            existing_doc(db, room)
            updates = read_doc(db, room).updates
    else:
        updates = read_at(db, room, at)
    try:
        return squash(updates) if updates else EMPTY_UPDATE
    except InvalidUpdateError as e:
        raise InvalidUpdateError(
            f"{room!r} holds a stored update that cannot be read ({e}); `collab check` names"
            " it. Replace the document from a backup (docs import --replace) or delete it."
        ) from None


def export_content(
    db: Database, room: str, roots: Sequence[str] = (), at: float | None = None
) -> dict[str, Any]:
    """``{root: content}`` for the named roots (``name`` or ``name:type``), or all roots.

    :raises ValueError: a root spec names an unknown type.
    """
    update = export_update(db, room, at)
    doc = doc_from([update])
    return {
        name: root_value(doc, name, kind)
        for name, kind in resolve_roots(update, roots, default_all=True)
    }


def export_text(db: Database, room: str, root: str = "content", at: float | None = None) -> str:
    """One root's text (a Y.Text, or an XML fragment's markup)."""
    update = export_update(db, room, at)
    ((name, kind),) = resolve_roots(update, [root], default_all=False)
    assert kind is not None  # a named root is text unless detected otherwise
    if kind not in ("text", "xml"):
        raise CollabError(f"root {name!r} of {room!r} is a {kind}, not text: use --format json")
    return str(root_value(doc_from([update]), name, kind))


@dataclass(frozen=True, slots=True)
class ImportResult:
    epoch: int
    replaced: bool


def import_update(db: Database, room: str, update: bytes, *, replace: bool = False) -> ImportResult:
    """Append a Yjs update to a document, or replace its content with it (new epoch).

    Appending merges the update like any client's; a running server picks it up by the
    generation it polls. Replacing retires the old epoch as ``delete`` does.

    :raises InvalidUpdateError: pycrdt cannot apply the bytes; nothing is stored.
    """
    check_update(update)
    if replace:
        return ImportResult(replace_doc(db, room, update), True)
    append_updates(db, [(room, update, time.time(), None)], external=True)
    return ImportResult(read_doc(db, room).epoch, False)


# -- history ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    #: The update appended, or None if the content already equalled the past.
    update: bytes | None
    roots: list[tuple[str, RootKind]]


def restore(db: Database, room: str, at: float) -> RestoreResult:
    """Bring back the content ``room`` had at ``at`` as a new edit on top of it.

    Nothing is rewritten: the edit is appended like a client's update (with a generation
    bump, so a running server reloads it and its clients receive it as an ordinary change).
    Edits made after the current content was read and before the append are kept.

    :raises DocumentNotFoundError: no such document.
    :raises HistoryUnavailableError: ``at`` is older than the retention window.
    :raises StoreError: the document was deleted or replaced meanwhile.
    """
    with read_transaction(db):
        existing_doc(db, room)
        current = read_doc(db, room)
    past = read_at(db, room, at)
    update, roots = restore_update(current.updates, past)
    if update is not None:
        result = append_updates(db, [(room, update, time.time(), current.epoch)], external=True)
        if result.stale:
            raise StoreError(f"{room!r} was deleted or replaced while restoring; nothing changed")
    return RestoreResult(update, roots)


# -- maintenance --------------------------------------------------------------------


def compact(
    db: Database,
    rooms: Sequence[str],
    *,
    retention: float,
    progress: Progress | None = None,
) -> tuple[list[CompactionResult], list[tuple[str, str]]]:
    """Compact each room and prune its history; return the results and the failures.

    :raises StoreError: the database cannot be written (locked for too long, say).
    """
    results: list[CompactionResult] = []
    failures: list[tuple[str, str]] = []
    for room in rooms:
        try:
            result = compact_doc(db, room, retention=retention)
        except InvalidUpdateError as e:
            failures.append((room, str(e)))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot compact {room!r}: {e}") from e
        else:
            if result is not None:
                results.append(result)
        if progress is not None:
            progress(1)
    return results, failures


def delete(db: Database, room: str) -> int:
    """Delete a document (see :func:`collab.storage.sqlite.delete_doc`); return its new epoch."""
    return delete_doc(db, room)


def all_rooms(db: Database) -> list[str]:
    """Every document that is not deleted, by name."""
    return [
        str(r[0])
        for r in db.execute("SELECT name FROM documents WHERE deleted_at IS NULL ORDER BY name")
    ]


@dataclass(frozen=True, slots=True)
class Problem:
    room: str
    #: Where: ``updates seq 12``, ``history seq 3``, ``checkpoint``, ``log replay``, ``database``.
    where: str
    error: str


def check(db: Database, progress: Progress | None = None) -> tuple[int, list[Problem]]:
    """Replay every document; return how many were checked and every problem found.

    Each stored blob (log row, history row, checkpoint) must apply on its own to a fresh
    doc, and each document's log must replay as a whole. ``PRAGMA quick_check`` covers
    the file itself.
    """
    problems: list[Problem] = []
    checked = 0
    try:
        result = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            problems.extend(Problem("-", "database", line) for line in result)
        for room in all_rooms(db):
            try:
                problems.extend(_check_room(db, room))
            except DocumentNotFoundError:
                pass  # deleted while the check ran
            else:
                checked += 1
            if progress is not None:
                progress(1)
    except sqlite3.DatabaseError as e:
        # A damaged file can fail any read ("database disk image is malformed"): report
        # it and stop, rather than end with a traceback.
        problems.append(Problem("-", "database", str(e)))
    return checked, problems


def _check_room(db: Database, room: str) -> list[Problem]:
    with read_transaction(db):
        id_ = existing_doc(db, room).id
        blobs = [
            (f"{table} seq {seq}", bytes(data))
            for table, seq, data in db.execute(
                "SELECT 'updates', seq, data FROM updates WHERE doc_id = ?"
                " UNION ALL SELECT 'history', seq, data FROM history WHERE doc_id = ?"
                " UNION ALL SELECT 'checkpoint', 0, data FROM checkpoints WHERE doc_id = ?"
                " ORDER BY 1, 2",
                [id_, id_, id_],
            )
        ]
    problems = []
    for where, data in blobs:
        try:
            check_update(data)
        except InvalidUpdateError as e:
            problems.append(Problem(room, where.replace("checkpoint seq 0", "checkpoint"), str(e)))
    if not problems:
        try:
            doc_from([data for where, data in blobs if where.startswith("updates")])
        except InvalidUpdateError as e:
            problems.append(Problem(room, "log replay", str(e)))
    return problems


def backup(
    source: Path | str,
    target: Path | str,
    *,
    force: bool = False,
    pages_per_step: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the database to ``target`` with SQLite's online backup; return its size.

    The copy is one consistent snapshot even while a server writes: the source connection
    holds a single read transaction for the whole copy, so the backup never sees (or
    restarts for) later commits, and under WAL the server's writes do not wait for it. The
    copy is written to ``<target>.partial`` and renamed when complete and checked.

    :raises StoreError: the target exists (without ``force``) or either file fails.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise StoreError(f"no database at {str(source)!r}")
    if target.exists() and target.resolve() == source.resolve():
        raise StoreError("the backup target is the database itself")
    if target.exists() and not force:
        raise StoreError(f"{str(target)!r} exists; pass --force to overwrite it")
    if target.is_dir():
        raise StoreError(f"{str(target)!r} is a directory; give a file name")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot
            dst = sqlite3.connect(partial)
            try:

                def step(status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                src.backup(dst, pages=pages_per_step, progress=step)
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise StoreError(f"the copy failed its integrity check: {check}")
            finally:
                dst.close()
            src.execute("COMMIT")
        finally:
            src.close()
        os.replace(partial, target)
    except sqlite3.DatabaseError as e:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {e}") from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size


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
    "open_database",
    "restore",
]
