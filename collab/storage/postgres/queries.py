"""Every SQL statement collab runs on PostgreSQL outside the group commit, one async
function per operation, each in a transaction of its own on a pooled connection.

They mirror :mod:`collab.storage.sqlite.queries` (read its module doc for compaction,
history and its invariant); what differs is how several nodes are kept apart:

* **Writers lock the document's row** (``SELECT ... FOR UPDATE``) first: the group commit
  (:mod:`.append`), an external append, a compaction's swap, a prune, a delete, a replace.
  Whatever they check (the epoch, the rows a compaction read) they check under that lock,
  after which no other node can change the document until they commit. A compaction's
  swap therefore never drops an update another node appended meanwhile: such an update
  either committed before the lock (its seq is above the rows read, or the check sees it
  and the swap is skipped) or waits for the swap and lands after it.
* **Reads use one snapshot** (:func:`.schema.snapshot`, REPEATABLE READ), or one statement.

A delete or replace resets ``last_seq``: an epoch's log starts again at 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from psycopg import AsyncConnection

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
from collab.storage.postgres.schema import MIGRATIONS, TABLES, snapshot
from collab.storage.sqlite.queries import CompactionInput, LogRead, PruneInput
from collab.updates import state_vector_of

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
    last_seq: int


_DOC_COLUMNS = "id, name, epoch, generation, deleted_at, history_from, updated_at, last_seq"


async def doc_row(conn: AsyncConnection, room: str, *, lock: bool = False) -> DocRow | None:
    """The document's row; with ``lock``, locked until the transaction ends."""
    cur = await conn.execute(
        f"SELECT {_DOC_COLUMNS} FROM documents WHERE name = %s" + (" FOR UPDATE" if lock else ""),
        [room],
    )
    row = await cur.fetchone()
    return None if row is None else DocRow(*row)


async def locked_doc(conn: AsyncConnection, room: str) -> DocRow:
    """The document's row, created if missing, locked until the transaction ends."""
    row = await doc_row(conn, room, lock=True)
    if row is not None:
        return row
    now = time.time()
    await conn.execute(
        "INSERT INTO documents (name, created_at, updated_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING",
        [room, now, now],
    )
    row = await doc_row(conn, room, lock=True)
    assert row is not None, "inserted or found just now, and documents rows are never deleted"
    return row


async def existing_doc(conn: AsyncConnection, room: str, *, lock: bool = False) -> DocRow:
    """The document's row, if it exists and is not deleted.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    row = await doc_row(conn, room, lock=lock)
    if row is None:
        raise DocumentNotFoundError(f"no document named {room!r}")
    if row.deleted_at is not None:
        raise DocumentNotFoundError(f"document {room!r} was deleted at {_when(row.deleted_at)}")
    return row


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


async def read_log(conn: AsyncConnection, room: str) -> LogRead:
    """The document's log with its compaction counters (what a server's load reads), in one
    statement (one snapshot)."""
    cur = await conn.execute(
        "SELECT epoch, generation,"
        " array(SELECT data FROM updates WHERE doc_id = d.id ORDER BY seq),"
        " array(SELECT merged FROM updates WHERE doc_id = d.id ORDER BY seq),"
        " array(SELECT state_vector FROM retired_epochs WHERE doc_id = d.id ORDER BY epoch)"
        " FROM documents d WHERE name = %s",
        [room],
    )
    row = await cur.fetchone()
    if row is None:
        return LogRead(StoredDoc(updates=[]), 0, 0)
    epoch, generation, datas, merged, retired = row
    updates = [bytes(u) for u in datas]
    raw = [u for u, m in zip(updates, merged, strict=True) if m == 1]
    stored = StoredDoc(
        updates=updates,
        epoch=int(epoch),
        generation=int(generation),
        retired_state_vectors=[bytes(r) for r in retired],
    )
    return LogRead(stored, len(raw), sum(map(len, raw)))


async def read_existing(conn: AsyncConnection, room: str) -> StoredDoc:
    """The log of a document that exists and is not deleted.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    async with snapshot(conn):
        await existing_doc(conn, room)
        return (await read_log(conn, room)).stored


async def read_versions(conn: AsyncConnection, rooms: Iterable[str]) -> dict[str, DocVersion]:
    """The epoch and generation of each room (``DocVersion()`` for unknown names)."""
    names = list(dict.fromkeys(rooms))
    cur = await conn.execute(
        "SELECT name, epoch, generation FROM documents WHERE name = ANY(%s)", [names]
    )
    found = {str(name): DocVersion(int(e), int(g)) for name, e, g in await cur.fetchall()}
    return {name: found.get(name, DocVersion()) for name in names}


#: :data:`DocOrder` -> (the column a listing sorts on, descending?).
_LIST_ORDERS: dict[DocOrder, tuple[str, bool]] = {
    "updated_at": ("updated_at", True),
    "name": ("name", False),
    "bytes": ("bytes", True),
    "updates": ("updates", True),
    "history": ("history_bytes", True),
}


async def list_docs(
    conn: AsyncConnection,
    limit: int | None = None,
    order: DocOrder = "updated_at",
    *,
    after: str | None = None,
    include_deleted: bool = False,
) -> list[DocInfo]:
    """Documents with their size, in ``order`` (see ``DocumentStore.list_docs``).

    :raises ValueError: ``after`` is not a cursor for ``order``.
    """
    column, descending = _LIST_ORDERS[order]
    where: list[str] = []
    params: list[Any] = []
    if after is not None:
        cursor = parse_cursor(order, after)
        if isinstance(cursor, str):
            where.append("name > %s")
            params.append(cursor)
        else:
            key, name = cursor
            where.append(
                f"({column} {'<' if descending else '>'} %s OR ({column} = %s AND name > %s))"
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
            LEFT JOIN (SELECT doc_id, sum(octet_length(data))::bigint AS bytes,
                              sum(merged)::bigint AS updates, count(*) AS rows
                       FROM updates GROUP BY doc_id) u ON u.doc_id = d.id
            LEFT JOIN (SELECT doc_id, sum(octet_length(data))::bigint AS bytes
                       FROM history GROUP BY doc_id) h ON h.doc_id = d.id
            LEFT JOIN (SELECT doc_id, octet_length(data)::bigint AS bytes
                       FROM checkpoints) c ON c.doc_id = d.id
            {"" if include_deleted else "WHERE d.deleted_at IS NULL"}
        ) listed
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY {column}{" DESC" if descending else ""}, name
    """
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    cur = await conn.execute(sql, params)
    return [DocInfo(*row) for row in await cur.fetchall()]


async def doc_info(conn: AsyncConnection, room: str) -> DocInfo:
    """One document's listing entry.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    async with snapshot(conn):
        row = await existing_doc(conn, room)
        cur = await conn.execute(
            """
            SELECT d.name, d.updated_at, d.created_at, d.epoch,
                   (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM updates
                    WHERE doc_id = d.id),
                   (SELECT coalesce(sum(merged), 0)::bigint FROM updates WHERE doc_id = d.id),
                   (SELECT count(*) FROM updates WHERE doc_id = d.id),
                   (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM history
                    WHERE doc_id = d.id)
                   + (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM checkpoints
                      WHERE doc_id = d.id),
                   d.deleted_at
            FROM documents d WHERE d.id = %s
            """,
            [row.id],
        )
        found = await cur.fetchone()
    assert found is not None, "the row was just read in the same snapshot"
    return DocInfo(*found)


async def doc_names(conn: AsyncConnection) -> list[str]:
    """Every document that is not deleted, by name."""
    cur = await conn.execute("SELECT name FROM documents WHERE deleted_at IS NULL ORDER BY name")
    return [str(r[0]) for r in await cur.fetchall()]


# -- appending from another writer ------------------------------------------------


async def append_external(
    conn: AsyncConnection, room: str, update: bytes, *, epoch: int | None = None
) -> ImportResult | None:
    """Append one update from another writer than the server (import, restore).

    Bumps the generation, so every node holding the document reads it again. None if
    ``epoch`` is given and is no longer the document's.
    """
    async with conn.transaction():
        row = await locked_doc(conn, room)
        if epoch is not None and epoch != row.epoch:
            return None
        now = time.time()
        await conn.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (%s, %s, %s, %s)",
            [row.id, row.last_seq + 1, update, now],
        )
        await conn.execute(
            "UPDATE documents SET last_seq = %s, updated_at = %s, deleted_at = NULL,"
            " generation = generation + 1 WHERE id = %s",
            [row.last_seq + 1, now, row.id],
        )
    return ImportResult(row.epoch, replaced=False)


# -- compaction ---------------------------------------------------------------------


async def read_compaction(conn: AsyncConnection, room: str) -> CompactionInput | None:
    """Read the rows a compaction of ``room`` would squash, or None if there is nothing to do."""
    async with snapshot(conn):
        row = await doc_row(conn, room)
        if row is None:
            return None
        cur = await conn.execute(
            "SELECT seq, data, merged, created_at FROM updates WHERE doc_id = %s ORDER BY seq",
            [row.id],
        )
        rows = await cur.fetchall()
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


async def swap_compaction(
    conn: AsyncConnection, job: CompactionInput, squashed: bytes, *, keep_history: bool = True
) -> CompactionResult | None:
    """Replace the rows ``job`` read by ``squashed``, in one transaction under the row lock.

    Returns None, changing nothing, if those rows or the epoch changed since they were read
    (another node compacted, or the document was deleted or replaced).
    """
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT epoch, history_from FROM documents WHERE id = %s FOR UPDATE", [job.doc_id]
        )
        row = await cur.fetchone()
        if row is None or int(row[0]) != job.epoch:
            return None
        history_from = None if row[1] is None else float(row[1])
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(merged), 0) FROM updates"
            " WHERE doc_id = %s AND seq <= %s",
            [job.doc_id, job.last_seq],
        )
        counted = await cur.fetchone()
        assert counted is not None
        if (int(counted[0]), int(counted[1])) != (job.rows, job.merged):
            return None
        if keep_history:
            await _keep_base(conn, job.doc_id, history_from)
            await conn.execute(
                "INSERT INTO history (doc_id, seq, data, created_at)"
                " SELECT doc_id, seq, data, created_at FROM updates"
                " WHERE doc_id = %s AND seq <= %s AND merged = 1",
                [job.doc_id, job.last_seq],
            )
        else:
            # No raw rows are kept: the document can be read back from this row's time on,
            # and this row alone answers every such read (a base would only duplicate it).
            history_from = max(history_from or job.newest, job.newest)
            await conn.execute(
                "UPDATE documents SET history_from = %s WHERE id = %s",
                [history_from, job.doc_id],
            )
            await conn.execute("DELETE FROM checkpoints WHERE doc_id = %s", [job.doc_id])
        await conn.execute(
            "DELETE FROM updates WHERE doc_id = %s AND seq <= %s", [job.doc_id, job.last_seq]
        )
        await conn.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at, merged)"
            " VALUES (%s, %s, %s, %s, %s)",
            [job.doc_id, job.last_seq, squashed, job.newest, job.merged],
        )
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(octet_length(data)), 0) FROM updates"
            " WHERE doc_id = %s AND merged = 1",
            [job.doc_id],
        )
        tail = await cur.fetchone()
        assert tail is not None
    return CompactionResult(
        room=job.room,
        rows_before=job.rows,
        bytes_before=sum(map(len, job.updates)),
        bytes_after=len(squashed),
        tail_rows=int(tail[0]),
        tail_bytes=int(tail[1]),
    )


async def _keep_base(conn: AsyncConnection, doc_id_: int, history_from: float | None) -> None:
    """Before the first log row is squashed away, make it the base if history needs it
    (see ``collab.storage.sqlite.queries._keep_base``)."""
    if history_from is None:
        return
    cur = await conn.execute(
        "SELECT data, created_at, merged FROM updates WHERE doc_id = %s ORDER BY seq LIMIT 1",
        [doc_id_],
    )
    first = await cur.fetchone()
    if first is not None and int(first[2]) > 1 and float(first[1]) <= history_from:
        await conn.execute(
            "INSERT INTO checkpoints (doc_id, data, created_at, merged) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (doc_id) DO UPDATE SET data = excluded.data,"
            " created_at = excluded.created_at, merged = excluded.merged",
            [doc_id_, first[0], first[1], first[2]],
        )


# -- retention ----------------------------------------------------------------------


async def rooms_with_old_history(conn: AsyncConnection, cutoff: float) -> list[str]:
    """Documents holding history rows created before ``cutoff``."""
    cur = await conn.execute(
        "SELECT name FROM documents WHERE id IN"
        " (SELECT DISTINCT doc_id FROM history WHERE created_at < %s) ORDER BY name",
        [cutoff],
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def read_prune(conn: AsyncConnection, room: str, cutoff: float) -> PruneInput | None:
    """Read the history rows of ``room`` older than ``cutoff``, and its base, or None."""
    async with snapshot(conn):
        row = await doc_row(conn, room)
        if row is None:
            return None
        cur = await conn.execute(
            "SELECT seq, data, created_at FROM history WHERE doc_id = %s AND created_at < %s"
            " ORDER BY seq",
            [row.id, cutoff],
        )
        rows = await cur.fetchall()
        cur = await conn.execute(
            "SELECT data, created_at, merged FROM checkpoints WHERE doc_id = %s", [row.id]
        )
        base = await cur.fetchone()
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


async def swap_prune(conn: AsyncConnection, job: PruneInput, base: bytes) -> bool:
    """Fold the pruned rows into the base under the row lock; False if anything changed."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT epoch, history_from FROM documents WHERE id = %s FOR UPDATE", [job.doc_id]
        )
        row = await cur.fetchone()
        if row is None or int(row[0]) != job.epoch:
            return False
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(seq), 0) FROM history"
            " WHERE doc_id = %s AND created_at < %s",
            [job.doc_id, job.cutoff],
        )
        counted = await cur.fetchone()
        assert counted is not None
        cur = await conn.execute(
            "SELECT created_at, merged FROM checkpoints WHERE doc_id = %s", [job.doc_id]
        )
        old = await cur.fetchone()
        old_base = (None, 0) if old is None else (float(old[0]), int(old[1]))
        if (int(counted[0]), int(counted[1])) != (job.rows, job.seq_sum):
            return False
        if old_base != (job.base_created_at, job.base_merged):
            return False
        created_at = max(job.newest, job.base_created_at or job.newest)
        history_from = max(created_at, float(row[1]) if row[1] is not None else created_at)
        await conn.execute(
            "DELETE FROM history WHERE doc_id = %s AND created_at < %s", [job.doc_id, job.cutoff]
        )
        await conn.execute(
            "INSERT INTO checkpoints (doc_id, data, created_at, merged) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (doc_id) DO UPDATE SET data = excluded.data,"
            " created_at = excluded.created_at, merged = excluded.merged",
            [job.doc_id, base, created_at, job.base_merged + job.rows],
        )
        await conn.execute(
            "UPDATE documents SET history_from = %s WHERE id = %s", [history_from, job.doc_id]
        )
        # The base is redundant once the first log row covers it and is no newer: that row
        # then answers every read at or after history_from by itself.
        cur = await conn.execute(
            "SELECT created_at, merged FROM updates WHERE doc_id = %s ORDER BY seq LIMIT 1",
            [job.doc_id],
        )
        first = await cur.fetchone()
        if first is not None and int(first[1]) > 1 and float(first[0]) <= created_at:
            await conn.execute("DELETE FROM checkpoints WHERE doc_id = %s", [job.doc_id])
    return True


# -- reading the past -----------------------------------------------------------------


async def read_at(conn: AsyncConnection, room: str, at: float) -> list[bytes]:
    """Every stored blob of ``room`` created at or before ``at``: merged, the document then.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    :raises HistoryUnavailableError: ``at`` is before the document's ``history_from``.
    """
    async with snapshot(conn):
        row = await existing_doc(conn, room)
        if row.history_from is not None and at < row.history_from:
            raise HistoryUnavailableError(
                f"{room!r} can be read back to {_when(row.history_from)}, not {_when(at)}:"
                " older history was compacted away (the retention window)"
            )
        cur = await conn.execute(
            "SELECT data FROM checkpoints WHERE doc_id = %s AND created_at <= %s", [row.id, at]
        )
        base = await cur.fetchall()
        cur = await conn.execute(
            "SELECT data FROM (SELECT seq, data, created_at FROM history WHERE doc_id = %s"
            " UNION ALL SELECT seq, data, created_at FROM updates WHERE doc_id = %s) AS blobs"
            " WHERE created_at <= %s ORDER BY seq",
            [row.id, row.id, at],
        )
        rows = await cur.fetchall()
    return [bytes(r[0]) for r in base + rows]


async def read_after(conn: AsyncConnection, room: str, epoch: int, seq: int, limit: int) -> LogTail:
    """The raw updates after ``(epoch, seq)``, from the log and the history kept beside
    it, if none is missing (see ``DocumentStore.read_after``)."""
    async with snapshot(conn):
        row = await doc_row(conn, room)
        if row is None:
            return LogTail(0, 0, [] if (epoch, seq) == (0, 0) else None)
        last = row.last_seq
        if epoch != row.epoch or not 0 <= seq <= last:
            return LogTail(row.epoch, last, None)
        # A compacted row (merged > 1) takes the seq of the last update it squashed, which
        # history keeps raw under the same seq: only raw rows answer.
        cur = await conn.execute(
            "SELECT seq, data, created_at FROM history WHERE doc_id = %s AND seq > %s"
            " UNION ALL SELECT seq, data, created_at FROM updates"
            " WHERE doc_id = %s AND seq > %s AND merged = 1 ORDER BY seq LIMIT %s",
            [row.id, seq, row.id, seq, limit],
        )
        rows = await cur.fetchall()
    entries = [LogEntry(int(r[0]), bytes(r[1]), float(r[2])) for r in rows]
    # Seqs have no gaps, so any missing one was squashed into a row no longer kept raw.
    complete = all(e.seq == seq + 1 + i for i, e in enumerate(entries)) and (
        len(entries) == limit or seq + len(entries) == last
    )
    return LogTail(row.epoch, last, entries if complete else None)


async def read_history(conn: AsyncConnection, room: str) -> HistoryRead:
    """What ``collab docs history`` lists: the base, the compacted row, the raw rows.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    async with snapshot(conn):
        row = await existing_doc(conn, room)
        cur = await conn.execute(
            "SELECT created_at, octet_length(data), merged FROM checkpoints WHERE doc_id = %s",
            [row.id],
        )
        base = await cur.fetchone()
        cur = await conn.execute(
            "SELECT created_at, octet_length(data), merged FROM updates"
            " WHERE doc_id = %s AND merged > 1 ORDER BY seq LIMIT 1",
            [row.id],
        )
        compacted = await cur.fetchone()
        cur = await conn.execute(
            "SELECT created_at, octet_length(data) FROM history WHERE doc_id = %s"
            " UNION ALL SELECT created_at, octet_length(data) FROM updates"
            " WHERE doc_id = %s AND merged = 1 ORDER BY 1",
            [row.id, row.id],
        )
        raw = await cur.fetchall()
    return HistoryRead(
        history_from=row.history_from,
        base=None if base is None else (float(base[0]), int(base[1]), int(base[2])),
        compacted=None
        if compacted is None
        else (float(compacted[0]), int(compacted[1]), int(compacted[2])),
        raw=[(float(r[0]), int(r[1])) for r in raw],
    )


# -- deleting -----------------------------------------------------------------------


async def _retire_epoch(conn: AsyncConnection, row: DocRow, now: float) -> int:
    """Drop every stored row of the locked document and move it to a new epoch."""
    cur = await conn.execute("SELECT data FROM updates WHERE doc_id = %s ORDER BY seq", [row.id])
    updates = [bytes(r[0]) for r in await cur.fetchall()]
    # What any client that saw this epoch may hold. Not a replay: that would make a
    # document with one damaged row impossible to delete or replace. Off the event loop.
    state_vector = await to_thread.run_sync(state_vector_of, updates)
    await conn.execute(
        "INSERT INTO retired_epochs (doc_id, epoch, state_vector, retired_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (doc_id, epoch) DO UPDATE"
        " SET state_vector = excluded.state_vector, retired_at = excluded.retired_at",
        [row.id, row.epoch, state_vector, now],
    )
    for table in ("updates", "history", "checkpoints"):
        await conn.execute(f"DELETE FROM {table} WHERE doc_id = %s", [row.id])
    epoch = row.epoch + 1
    await conn.execute(
        "UPDATE documents SET epoch = %s, deleted_at = %s, history_from = NULL,"
        " updated_at = %s, last_seq = 0 WHERE id = %s",
        [epoch, now, now, row.id],
    )
    return epoch


async def delete_doc(conn: AsyncConnection, room: str) -> int:
    """Delete a document's content and history; return its new epoch.

    :raises DocumentNotFoundError: no such document, or it is already deleted.
    """
    async with conn.transaction():
        row = await existing_doc(conn, room, lock=True)
        return await _retire_epoch(conn, row, time.time())


async def replace_doc(conn: AsyncConnection, room: str, update: bytes) -> int:
    """Replace a document's whole content by ``update`` under a new epoch; return it."""
    now = time.time()
    async with conn.transaction():
        row = await doc_row(conn, room, lock=True)
        if row is None:
            row = await locked_doc(conn, room)
            epoch = row.epoch
        else:
            epoch = await _retire_epoch(conn, row, now)
        await conn.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (%s, 1, %s, %s)",
            [row.id, update, now],
        )
        # The generation tells a running server to look: a document it holds but never
        # stored had epoch 0 before and has it still.
        await conn.execute(
            "UPDATE documents SET deleted_at = NULL, updated_at = %s, last_seq = 1,"
            " generation = generation + 1 WHERE id = %s",
            [now, row.id],
        )
    return epoch


# -- integrity ----------------------------------------------------------------------


async def stored_blobs(conn: AsyncConnection, room: str) -> list[StoredBlob]:
    """Every stored blob of ``room``: its base, its history rows, its log rows, by seq.

    :raises DocumentNotFoundError: no such document, or it was deleted.
    """
    async with snapshot(conn):
        id_ = (await existing_doc(conn, room)).id
        cur = await conn.execute(
            "SELECT 'updates', seq, data FROM updates WHERE doc_id = %s"
            " UNION ALL SELECT 'history', seq, data FROM history WHERE doc_id = %s"
            " UNION ALL SELECT 'checkpoint', 0, data FROM checkpoints WHERE doc_id = %s"
            " ORDER BY 1, 2",
            [id_, id_, id_],
        )
        rows = await cur.fetchall()
    return [
        StoredBlob(
            "checkpoint" if table == "checkpoint" else f"{table} seq {seq}",
            bytes(data),
            in_log=table == "updates",
        )
        for table, seq, data in rows
    ]


async def check_consistency(conn: AsyncConnection) -> list[str]:
    """What is wrong with collab's tables, [] if nothing.

    PostgreSQL checks its own pages (checksums, WAL); what is left to check is collab's:
    every migration applied, every table present, and each document's ``last_seq`` at its
    log's newest seq (what keeps seqs gap-free).
    """
    problems: list[str] = []
    async with snapshot(conn):
        cur = await conn.execute("SELECT name FROM collab_migrations")
        applied = {str(r[0]) for r in await cur.fetchall()}
        problems += [
            f"migration {name} is not applied" for name, _ in MIGRATIONS if name not in applied
        ]
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        tables = {str(r[0]) for r in await cur.fetchall()}
        problems += [f"table {t} is missing" for t in TABLES if t not in tables]
        if problems:
            return problems
        cur = await conn.execute(
            "SELECT d.name, d.last_seq, coalesce(max(u.seq), 0) FROM documents d"
            " LEFT JOIN updates u ON u.doc_id = d.id GROUP BY d.id"
            " HAVING d.last_seq <> coalesce(max(u.seq), 0) ORDER BY d.name"
        )
        for name, last_seq, newest in await cur.fetchall():
            problems.append(
                f"document {name!r}: last_seq is {last_seq} but its newest row has seq {newest}"
            )
    return problems
