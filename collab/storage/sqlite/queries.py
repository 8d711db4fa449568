"""Every SQL statement collab runs on its tables, one function per operation.

Each function takes the connection and does its work in one transaction of its own
(``BEGIN IMMEDIATE`` to write, one snapshot to read; see :mod:`.schema`), so it is
correct whichever thread or process calls it. The store (:mod:`.store`) runs them on its
one connection; the tests and the benchmarks call them directly.

Compaction. Past ``compact_rows`` rows or ``compact_bytes`` bytes (counted by
:class:`collab.storage.commit.CompactionScheduler`), a document is compacted in three
steps: read the rows up to seq N (``read_compaction``, holding the connection, a short
read), squash them into one update *without* holding it (group commits go on meanwhile),
then swap in one transaction (``swap_compaction``): check that the rows up to N and the
epoch are what was read (else skip: someone else compacted or deleted), move the raw rows
to ``history``, delete rows up to N and insert the squashed row with seq N. Rows appended
meanwhile have seqs above N and are untouched. A crash before COMMIT leaves the old rows,
after it the new.

History. Raw rows stay in ``history`` for ``retention`` seconds; then they are squashed into
the document's one ``checkpoints`` row (its *base*: every update up to the newest one it
covers) and ``documents.history_from`` records the earliest time the document can still be
read at. The invariant that makes "the document at time T" the merge of every stored blob
created at or before T, for any T >= history_from: each update is either a raw row
(log or history) or inside a blob created no later than history_from. Compaction and
pruning keep it; see ``_keep_base`` and ``swap_prune``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from collab.errors import DocumentNotFoundError
from collab.storage.base import (
    CompactionResult,
    DocInfo,
    DocOrder,
    DocVersion,
    HistoryRead,
    HistoryUnavailableError,
    ImportResult,
    LogEntry,
    LogTail,
    StoredBlob,
    StoredDoc,
    parse_cursor,
)
from collab.storage.commit import AppendResult
from collab.storage.sqlite.schema import read_transaction, write_transaction
from collab.updates import squash, state_vector_of

#: Default retention of raw history, in seconds (7 days).
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: Names per ``IN (...)`` query; SQLite allows at least 999 parameters.
_NAMES_PER_QUERY = 500
#: Rows per multi-row ``INSERT``: 4 parameters each, within SQLite's oldest 999 limit.
_ROWS_PER_INSERT = 240


# -- reading ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocRow:
    id: int
    name: str
    epoch: int
    generation: int
    deleted_at: float | None
    history_from: float | None
    updated_at: float


def doc_row(db: Database, room: str) -> DocRow | None:
    row = db.execute(
        "SELECT id, name, epoch, generation, deleted_at, history_from, updated_at"
        " FROM documents WHERE name = ?",
        [room],
    ).fetchone()
    return None if row is None else DocRow(*row)


def doc_id(db: Database, room: str, *, create: bool) -> int | None:
    row = db.execute("SELECT id FROM documents WHERE name = ?", [room]).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        return None
    now = time.time()
    cursor = db.execute(
        "INSERT INTO documents (name, created_at, updated_at) VALUES (?, ?, ?)", [room, now, now]
    )
    return int(cursor.lastrowid or 0)


def existing_doc(db: Database, room: str) -> DocRow:
    """The document's row, if it exists and is not deleted.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    row = doc_row(db, room)
    if row is None:
        raise DocumentNotFoundError(f"no document named {room!r}")
    if row.deleted_at is not None:
        raise DocumentNotFoundError(f"document {room!r} was deleted at {_when(row.deleted_at)}")
    return row


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@dataclass(frozen=True, slots=True)
class LogRead:
    stored: StoredDoc
    #: Raw rows (and their bytes) since the last compaction.
    tail_rows: int
    tail_bytes: int


def read_log(db: Database, room: str) -> LogRead:
    """The document's log with its compaction counters (what a server's load reads)."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return LogRead(StoredDoc(updates=[]), 0, 0)
        rows = db.execute(
            "SELECT data, merged FROM updates WHERE doc_id = ? ORDER BY seq", [row.id]
        ).fetchall()
        retired = db.execute(
            "SELECT state_vector FROM retired_epochs WHERE doc_id = ? ORDER BY epoch", [row.id]
        ).fetchall()
    updates = [bytes(r[0]) for r in rows]
    raw = [u for u, (_, merged) in zip(updates, rows, strict=True) if merged == 1]
    stored = StoredDoc(
        updates=updates,
        epoch=row.epoch,
        generation=row.generation,
        retired_state_vectors=[bytes(r[0]) for r in retired],
    )
    return LogRead(stored, len(raw), sum(map(len, raw)))


def read_doc(db: Database, room: str) -> StoredDoc:
    """Read one document's log, oldest first, with its epoch and retired state vectors."""
    return read_log(db, room).stored


def read_existing(db: Database, room: str) -> StoredDoc:
    """:func:`read_doc` of a document that exists and is not deleted.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    with read_transaction(db):
        existing_doc(db, room)
        return read_doc(db, room)


def read_versions(db: Database, rooms: Iterable[str]) -> dict[str, DocVersion]:
    """The epoch and generation of each room (``DocVersion()`` for unknown names)."""
    names = list(dict.fromkeys(rooms))
    found: dict[str, DocVersion] = {}
    for start in range(0, len(names), _NAMES_PER_QUERY):
        chunk = names[start : start + _NAMES_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        for name, epoch, generation in db.execute(
            f"SELECT name, epoch, generation FROM documents WHERE name IN ({marks})", chunk
        ):
            found[name] = DocVersion(epoch, generation)
    return {name: found.get(name, DocVersion()) for name in names}


#: :data:`DocOrder` -> (the column a listing sorts on, descending?).
_LIST_ORDERS: dict[DocOrder, tuple[str, bool]] = {
    "updated_at": ("updated_at", True),
    "name": ("name", False),
    "bytes": ("bytes", True),
    "updates": ("updates", True),
    "history": ("history_bytes", True),
}


def list_docs(
    db: Database,
    limit: int | None = None,
    order: DocOrder = "updated_at",
    *,
    after: str | None = None,
    include_deleted: bool = False,
) -> list[DocInfo]:
    """Documents with their size, most recently changed first (or in ``order``).

    ``bytes`` and ``rows`` count the log a load reads; ``updates`` is how many updates it
    stands for; ``history_bytes`` is what the retention window keeps besides. ``after``
    is the :meth:`DocInfo.cursor` of the last document of the previous page.

    :raises ValueError: ``after`` is not a cursor for ``order``.
    """
    column, descending = _LIST_ORDERS[order]
    where: list[str] = []
    params: list[Any] = []
    if after is not None:
        cursor = parse_cursor(order, after)
        if isinstance(cursor, str):
            where.append("name > ?")
            params.append(cursor)
        else:
            key, name = cursor
            where.append(
                f"({column} {'<' if descending else '>'} ? OR ({column} = ? AND name > ?))"
            )
            params.extend([key, key, name])
    sql = f"""
        SELECT * FROM (
            SELECT d.name, d.updated_at, d.created_at, d.epoch,
                   coalesce(u.bytes, 0) AS bytes,
                   coalesce(u.updates, 0) AS updates,
                   coalesce(u.rows, 0) AS rows,
                   coalesce(h.bytes, 0) + coalesce(c.bytes, 0) AS history_bytes,
                   d.deleted_at
            FROM documents d
            LEFT JOIN (SELECT doc_id, sum(length(data)) AS bytes, sum(merged) AS updates,
                              count(*) AS rows
                       FROM updates GROUP BY doc_id) u ON u.doc_id = d.id
            LEFT JOIN (SELECT doc_id, sum(length(data)) AS bytes FROM history GROUP BY doc_id) h
                   ON h.doc_id = d.id
            LEFT JOIN (SELECT doc_id, length(data) AS bytes FROM checkpoints) c ON c.doc_id = d.id
            {"" if include_deleted else "WHERE d.deleted_at IS NULL"}
        )
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY {column}{" DESC" if descending else ""}, name
    """
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [DocInfo(*row) for row in db.execute(sql, params)]


def doc_info(db: Database, room: str) -> DocInfo:
    """One document's listing entry.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    with read_transaction(db):
        row = existing_doc(db, room)
        found = db.execute(
            """
            SELECT d.name, d.updated_at, d.created_at, d.epoch,
                   (SELECT coalesce(sum(length(data)), 0) FROM updates WHERE doc_id = d.id),
                   (SELECT coalesce(sum(merged), 0) FROM updates WHERE doc_id = d.id),
                   (SELECT count(*) FROM updates WHERE doc_id = d.id),
                   (SELECT coalesce(sum(length(data)), 0) FROM history WHERE doc_id = d.id)
                   + (SELECT coalesce(sum(length(data)), 0) FROM checkpoints
                      WHERE doc_id = d.id),
                   d.deleted_at
            FROM documents d WHERE d.id = ?
            """,
            [row.id],
        ).fetchone()
    return DocInfo(*found)


def doc_names(db: Database) -> list[str]:
    """Every document that is not deleted, by name."""
    return [
        str(r[0])
        for r in db.execute("SELECT name FROM documents WHERE deleted_at IS NULL ORDER BY name")
    ]


# -- appending ----------------------------------------------------------------------


def append_updates(
    db: Database,
    batch: Sequence[tuple[str, bytes, float, int | None]],
    *,
    external: bool = False,
    count: Iterable[str] = (),
) -> AppendResult:
    """Append ``(room, update, received_at, epoch)`` rows in one transaction.

    Rows whose ``epoch`` is not the document's current epoch are not written (``None``
    matches any epoch). ``external`` appends (from another process than the server) bump
    the document's generation so a running server notices them.

    A handful of statements per batch, however many rooms and rows it holds: the server
    commits from a thread, and every statement hands the GIL back and forth with a busy
    event loop (each hand-off can wait the interpreter's 5 ms switch interval).
    """
    rooms = list(dict.fromkeys(room for room, *_ in batch))
    stale: dict[tuple[str, int], None] = {}
    with write_transaction(db):
        heads = _doc_heads(db, rooms)
        for room in rooms:
            if room not in heads:
                heads[room] = (doc_id(db, room, create=True) or 0, 0, 0)
        rows: list[tuple[int, int, bytes, float]] = []
        positions: list[tuple[int, int] | None] = []
        touched: dict[int, float] = {}
        for room, update, received_at, epoch in batch:
            id_, current, last = heads[room]
            if epoch is not None and epoch != current:
                stale[room, epoch] = None
                positions.append(None)
                continue
            heads[room] = (id_, current, last + 1)
            rows.append((id_, last + 1, update, received_at))
            positions.append((current, last + 1))
            touched[id_] = received_at
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            db.execute(
                "INSERT INTO updates (doc_id, seq, data, created_at) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        if touched:
            db.execute(
                "UPDATE documents SET updated_at = json_extract(t.value, '$[1]'),"
                " deleted_at = NULL, generation = generation + ?"
                " FROM json_each(?) AS t WHERE documents.id = json_extract(t.value, '$[0]')",
                [1 if external else 0, json.dumps(list(touched.items()))],
            )
        wanted = [heads[room][0] for room in dict.fromkeys(count) if room in heads]
        tails = _raw_tails(db, wanted) if wanted else {}
    names = {heads[room][0]: room for room in rooms}
    return AppendResult(
        list(stale),
        {names[id_]: tail for id_, tail in tails.items() if id_ in names},
        positions=positions,
    )


def _doc_heads(db: Database, rooms: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``room -> (doc id, epoch, last seq)`` for the rooms that have a documents row.

    One result row (a JSON array) per statement, so one step for up to
    ``_NAMES_PER_QUERY`` rooms. The names go in as bound parameters, never through
    ``json_each``: SQLite's JSON functions cut a string at a NUL, so ``"a\0b"`` would
    find the document ``"a"``.
    """
    heads: dict[str, tuple[int, int, int]] = {}
    for start in range(0, len(rooms), _NAMES_PER_QUERY):
        chunk = rooms[start : start + _NAMES_PER_QUERY]
        (found,) = db.execute(
            "SELECT json_group_array(json_array(name, id, epoch,"
            " (SELECT coalesce(max(seq), 0) FROM updates WHERE doc_id = documents.id)))"
            f" FROM documents WHERE name IN ({', '.join(['?'] * len(chunk))})",
            chunk,
        ).fetchone()
        for name, id_, epoch, last in json.loads(found):
            heads[name] = (int(id_), int(epoch), int(last))
    return heads


def _raw_tails(db: Database, doc_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``doc id -> (rows, bytes)`` appended since the document's last compaction."""
    (found,) = db.execute(
        "SELECT json_group_array(json_array(doc_id, n, size)) FROM ("
        " SELECT doc_id, count(*) AS n, coalesce(sum(length(data)), 0) AS size FROM updates"
        " WHERE merged = 1 AND doc_id IN (SELECT value FROM json_each(?)) GROUP BY doc_id)",
        [json.dumps(list(doc_ids))],
    ).fetchone()
    tails = {id_: (0, 0) for id_ in doc_ids}
    for id_, n, size in json.loads(found):
        tails[int(id_)] = (int(n), int(size))
    return tails


def append_external(
    db: Database, room: str, update: bytes, *, epoch: int | None = None
) -> ImportResult | None:
    """Append one update from another writer than the server (import, restore).

    Bumps the generation. None if ``epoch`` is given and is no longer the document's.
    """
    result = append_updates(db, [(room, update, time.time(), epoch)], external=True)
    if result.stale:
        return None
    row = doc_row(db, room)
    assert row is not None  # appending created it
    return ImportResult(row.epoch, replaced=False)


# -- compaction ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactionInput:
    room: str
    doc_id: int
    epoch: int
    #: The seq of the last row read; the squashed row takes it.
    last_seq: int
    rows: int
    merged: int
    newest: float
    updates: list[bytes]


def read_compaction(db: Database, room: str) -> CompactionInput | None:
    """Read the rows a compaction of ``room`` would squash, or None if there is nothing to do."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return None
        rows = db.execute(
            "SELECT seq, data, merged, created_at FROM updates WHERE doc_id = ? ORDER BY seq",
            [row.id],
        ).fetchall()
    if len(rows) < 2:
        return None
    return CompactionInput(
        room=room,
        doc_id=row.id,
        epoch=row.epoch,
        last_seq=int(rows[-1][0]),
        rows=len(rows),
        merged=sum(int(r[2]) for r in rows),
        newest=max(float(r[3]) for r in rows),
        updates=[bytes(r[1]) for r in rows],
    )


def swap_compaction(
    db: Database, job: CompactionInput, squashed: bytes, *, keep_history: bool = True
) -> CompactionResult | None:
    """Replace the rows ``job`` read by ``squashed``, in one transaction.

    Returns None, changing nothing, if those rows or the epoch changed since they were read.
    """
    with write_transaction(db):
        row = db.execute(
            "SELECT epoch, history_from FROM documents WHERE id = ?", [job.doc_id]
        ).fetchone()
        if row is None or int(row[0]) != job.epoch:
            return None
        history_from = None if row[1] is None else float(row[1])
        n, merged = db.execute(
            "SELECT count(*), coalesce(sum(merged), 0) FROM updates WHERE doc_id = ? AND seq <= ?",
            [job.doc_id, job.last_seq],
        ).fetchone()
        if (n, merged) != (job.rows, job.merged):
            return None
        if keep_history:
            _keep_base(db, job.doc_id, history_from)
            db.execute(
                "INSERT INTO history (doc_id, seq, data, created_at)"
                " SELECT doc_id, seq, data, created_at FROM updates"
                " WHERE doc_id = ? AND seq <= ? AND merged = 1",
                [job.doc_id, job.last_seq],
            )
        else:
            # No raw rows are kept: the document can be read back from this row's time on,
            # and this row alone answers every such read (a base would only duplicate it).
            history_from = max(history_from or job.newest, job.newest)
            db.execute(
                "UPDATE documents SET history_from = ? WHERE id = ?", [history_from, job.doc_id]
            )
            db.execute("DELETE FROM checkpoints WHERE doc_id = ?", [job.doc_id])
        db.execute("DELETE FROM updates WHERE doc_id = ? AND seq <= ?", [job.doc_id, job.last_seq])
        db.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at, merged) VALUES (?, ?, ?, ?, ?)",
            [job.doc_id, job.last_seq, squashed, job.newest, job.merged],
        )
        tail_rows, tail_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM updates"
            " WHERE doc_id = ? AND merged = 1",
            [job.doc_id],
        ).fetchone()
    return CompactionResult(
        room=job.room,
        rows_before=job.rows,
        bytes_before=sum(map(len, job.updates)),
        bytes_after=len(squashed),
        tail_rows=int(tail_rows),
        tail_bytes=int(tail_bytes),
    )


def _keep_base(db: Database, doc_id_: int, history_from: float | None) -> None:
    """Before the first log row is squashed away, make it the base if history needs it.

    Updates no longer kept raw may live only in that row, and a read at history_from
    finds them only in a blob created no later than history_from. If the row qualifies
    (created no later than history_from), the new squashed row will not (it is newer),
    so the row becomes the base. It contains the old base: everything ever pruned from
    history was squashed into the first row first.
    """
    if history_from is None:
        return
    first = db.execute(
        "SELECT data, created_at, merged FROM updates WHERE doc_id = ? ORDER BY seq LIMIT 1",
        [doc_id_],
    ).fetchone()
    if first is not None and int(first[2]) > 1 and float(first[1]) <= history_from:
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (doc_id, data, created_at, merged)"
            " VALUES (?, ?, ?, ?)",
            [doc_id_, first[0], first[1], first[2]],
        )


# -- retention ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneInput:
    room: str
    doc_id: int
    epoch: int
    cutoff: float
    base: bytes | None
    base_created_at: float | None
    base_merged: int
    rows: int
    seq_sum: int
    newest: float
    updates: list[bytes]


def rooms_with_old_history(db: Database, cutoff: float) -> list[str]:
    """Documents holding history rows created before ``cutoff``."""
    return [
        str(r[0])
        for r in db.execute(
            "SELECT name FROM documents WHERE id IN"
            " (SELECT DISTINCT doc_id FROM history WHERE created_at < ?) ORDER BY name",
            [cutoff],
        )
    ]


def read_prune(db: Database, room: str, cutoff: float) -> PruneInput | None:
    """Read the history rows of ``room`` older than ``cutoff``, and its base, or None."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return None
        rows = db.execute(
            "SELECT seq, data, created_at FROM history WHERE doc_id = ? AND created_at < ?"
            " ORDER BY seq",
            [row.id, cutoff],
        ).fetchall()
        base = db.execute(
            "SELECT data, created_at, merged FROM checkpoints WHERE doc_id = ?", [row.id]
        ).fetchone()
    if not rows:
        return None
    return PruneInput(
        room=room,
        doc_id=row.id,
        epoch=row.epoch,
        cutoff=cutoff,
        base=None if base is None else bytes(base[0]),
        base_created_at=None if base is None else float(base[1]),
        base_merged=0 if base is None else int(base[2]),
        rows=len(rows),
        seq_sum=sum(int(r[0]) for r in rows),
        newest=max(float(r[2]) for r in rows),
        updates=[bytes(r[1]) for r in rows],
    )


def squash_prune(job: PruneInput) -> bytes:
    """The new base: the old one plus the pruned rows, squashed (runs without the lock)."""
    return squash(([job.base] if job.base is not None else []) + job.updates)


def swap_prune(db: Database, job: PruneInput, base: bytes) -> bool:
    """Fold the pruned rows into the base in one transaction; False if anything changed."""
    with write_transaction(db):
        row = db.execute(
            "SELECT epoch, history_from FROM documents WHERE id = ?", [job.doc_id]
        ).fetchone()
        if row is None or int(row[0]) != job.epoch:
            return False
        n, seq_sum = db.execute(
            "SELECT count(*), coalesce(sum(seq), 0) FROM history"
            " WHERE doc_id = ? AND created_at < ?",
            [job.doc_id, job.cutoff],
        ).fetchone()
        old = db.execute(
            "SELECT created_at, merged FROM checkpoints WHERE doc_id = ?", [job.doc_id]
        ).fetchone()
        old_base = (None, 0) if old is None else (float(old[0]), int(old[1]))
        if (n, seq_sum) != (job.rows, job.seq_sum):
            return False
        if old_base != (job.base_created_at, job.base_merged):
            return False
        created_at = max(job.newest, job.base_created_at or job.newest)
        history_from = max(created_at, float(row[1]) if row[1] is not None else created_at)
        db.execute(
            "DELETE FROM history WHERE doc_id = ? AND created_at < ?", [job.doc_id, job.cutoff]
        )
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (doc_id, data, created_at, merged)"
            " VALUES (?, ?, ?, ?)",
            [job.doc_id, base, created_at, job.base_merged + job.rows],
        )
        db.execute("UPDATE documents SET history_from = ? WHERE id = ?", [history_from, job.doc_id])
        # The base is redundant once the first log row covers it and is no newer: that row
        # then answers every read at or after history_from by itself.
        first = db.execute(
            "SELECT created_at, merged FROM updates WHERE doc_id = ? ORDER BY seq LIMIT 1",
            [job.doc_id],
        ).fetchone()
        if first is not None and int(first[1]) > 1 and float(first[0]) <= created_at:
            db.execute("DELETE FROM checkpoints WHERE doc_id = ?", [job.doc_id])
    return True


def compact_doc(
    db: Database, room: str, *, retention: float = DEFAULT_RETENTION, now: float | None = None
) -> CompactionResult | None:
    """Compact one document and prune its history, synchronously (the admin CLI's way).

    :raises InvalidUpdateError: a stored update cannot be applied (``collab check`` says which).
    """
    result = None
    job = read_compaction(db, room)
    if job is not None:
        result = swap_compaction(db, job, squash(job.updates), keep_history=retention > 0)
    cutoff = (time.time() if now is None else now) - retention
    prune = read_prune(db, room, cutoff)
    if prune is not None:
        swap_prune(db, prune, squash_prune(prune))
    return result


# -- reading the past -----------------------------------------------------------------


def read_at(db: Database, room: str, at: float) -> list[bytes]:
    """Every stored blob of ``room`` created at or before ``at``: merged, the document then.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    :raises HistoryUnavailableError: ``at`` is before the document's ``history_from``.
    """
    with read_transaction(db):
        row = existing_doc(db, room)
        if row.history_from is not None and at < row.history_from:
            raise HistoryUnavailableError(
                f"{room!r} can be read back to {_when(row.history_from)}, not {_when(at)}:"
                " older history was compacted away (the retention window)"
            )
        base = db.execute(
            "SELECT data FROM checkpoints WHERE doc_id = ? AND created_at <= ?", [row.id, at]
        ).fetchall()
        rows = db.execute(
            "SELECT data FROM (SELECT seq, data, created_at FROM history WHERE doc_id = ?"
            " UNION ALL SELECT seq, data, created_at FROM updates WHERE doc_id = ?)"
            " WHERE created_at <= ? ORDER BY seq",
            [row.id, row.id, at],
        ).fetchall()
    return [bytes(r[0]) for r in base + rows]


def read_after(db: Database, room: str, epoch: int, seq: int, limit: int) -> LogTail:
    """The raw updates after ``(epoch, seq)``, from the log and the history kept beside
    it, if none is missing (see ``DocumentStore.read_after``)."""
    with read_transaction(db):
        row = doc_row(db, room)
        if row is None:
            return LogTail(0, 0, [] if (epoch, seq) == (0, 0) else None)
        (last,) = db.execute(
            "SELECT coalesce(max(seq), 0) FROM updates WHERE doc_id = ?", [row.id]
        ).fetchone()
        if epoch != row.epoch or not 0 <= seq <= last:
            return LogTail(row.epoch, last, None)
        # A compacted row (merged > 1) takes the seq of the last update it squashed, which
        # history keeps raw under the same seq: only raw rows answer.
        rows = db.execute(
            "SELECT seq, data, created_at FROM history WHERE doc_id = ? AND seq > ?"
            " UNION ALL SELECT seq, data, created_at FROM updates"
            " WHERE doc_id = ? AND seq > ? AND merged = 1 ORDER BY seq LIMIT ?",
            [row.id, seq, row.id, seq, limit],
        ).fetchall()
    entries = [LogEntry(int(r[0]), bytes(r[1]), float(r[2])) for r in rows]
    # Seqs have no gaps, so any missing one was squashed into a row no longer kept raw.
    complete = all(e.seq == seq + 1 + i for i, e in enumerate(entries)) and (
        len(entries) == limit or seq + len(entries) == last
    )
    return LogTail(row.epoch, last, entries if complete else None)


def read_history(db: Database, room: str) -> HistoryRead:
    """What ``collab docs history`` lists: the base, the compacted row, the raw rows.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    with read_transaction(db):
        row = existing_doc(db, room)
        base = db.execute(
            "SELECT created_at, length(data), merged FROM checkpoints WHERE doc_id = ?", [row.id]
        ).fetchone()
        compacted = db.execute(
            "SELECT created_at, length(data), merged FROM updates WHERE doc_id = ? AND merged > 1"
            " ORDER BY seq LIMIT 1",
            [row.id],
        ).fetchone()
        raw = db.execute(
            "SELECT created_at, length(data) FROM history WHERE doc_id = ?"
            " UNION ALL SELECT created_at, length(data) FROM updates"
            " WHERE doc_id = ? AND merged = 1 ORDER BY 1",
            [row.id, row.id],
        ).fetchall()
    return HistoryRead(
        history_from=row.history_from,
        base=None if base is None else (float(base[0]), int(base[1]), int(base[2])),
        compacted=None
        if compacted is None
        else (float(compacted[0]), int(compacted[1]), int(compacted[2])),
        raw=[(float(r[0]), int(r[1])) for r in raw],
    )


# -- deleting -----------------------------------------------------------------------


def _retire_epoch(db: Database, row: DocRow, now: float) -> int:
    """Drop every stored row of the document and move it to a new epoch (in a transaction)."""
    updates = [
        bytes(r[0])
        for r in db.execute("SELECT data FROM updates WHERE doc_id = ? ORDER BY seq", [row.id])
    ]
    # What any client that saw this epoch may hold. Not a replay: that would make a
    # document with one damaged row impossible to delete or replace.
    state_vector = state_vector_of(updates)
    db.execute(
        "INSERT OR REPLACE INTO retired_epochs (doc_id, epoch, state_vector, retired_at)"
        " VALUES (?, ?, ?, ?)",
        [row.id, row.epoch, state_vector, now],
    )
    for table in ("updates", "history", "checkpoints"):
        db.execute(f"DELETE FROM {table} WHERE doc_id = ?", [row.id])
    epoch = row.epoch + 1
    db.execute(
        "UPDATE documents SET epoch = ?, deleted_at = ?, history_from = NULL, updated_at = ?"
        " WHERE id = ?",
        [epoch, now, now, row.id],
    )
    return epoch


def delete_doc(db: Database, room: str) -> int:
    """Delete a document's content and history; return its new epoch.

    The document's name stays known with a bumped epoch and the retired epoch's state
    vector, so clients that still hold the old history are detected (and refused) when
    they reconnect.

    :raises DocumentNotFoundError: no such document, or it is already deleted.
    """
    with write_transaction(db):
        row = existing_doc(db, room)
        return _retire_epoch(db, row, time.time())


def replace_doc(db: Database, room: str, update: bytes) -> int:
    """Replace a document's whole content by ``update`` under a new epoch; return it."""
    now = time.time()
    with write_transaction(db):
        row = doc_row(db, room)
        if row is None:
            epoch = 0
            id_ = doc_id(db, room, create=True)
        else:
            epoch = _retire_epoch(db, row, now)
            id_ = row.id
        db.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (?, 1, ?, ?)",
            [id_, update, now],
        )
        # The generation tells a running server to look: a document it holds but never
        # stored had epoch 0 before and has it still.
        db.execute(
            "UPDATE documents SET deleted_at = NULL, updated_at = ?,"
            " generation = generation + 1 WHERE id = ?",
            [now, id_],
        )
    return epoch


# -- integrity ----------------------------------------------------------------------


def stored_blobs(db: Database, room: str) -> list[StoredBlob]:
    """Every stored blob of ``room``: its base, its history rows, its log rows, by seq.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    with read_transaction(db):
        id_ = existing_doc(db, room).id
        rows = db.execute(
            "SELECT 'updates', seq, data FROM updates WHERE doc_id = ?"
            " UNION ALL SELECT 'history', seq, data FROM history WHERE doc_id = ?"
            " UNION ALL SELECT 'checkpoint', 0, data FROM checkpoints WHERE doc_id = ?"
            " ORDER BY 1, 2",
            [id_, id_, id_],
        ).fetchall()
    return [
        StoredBlob(
            "checkpoint" if table == "checkpoint" else f"{table} seq {seq}",
            bytes(data),
            in_log=table == "updates",
        )
        for table, seq, data in rows
    ]


def quick_check(db: Database) -> list[str]:
    """``PRAGMA quick_check``: what is wrong with the file, [] if nothing."""
    result = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
    return [] if result == ["ok"] else result
