"""The group commit's SQL, on the commit thread's own (synchronous) connection.

One batch is one transaction of three or four statements however many documents and
rows it holds (each round trip hands the GIL to and from a busy event loop):

1. ``SELECT ... FOR UPDATE`` the batch's documents rows, in name order. The row lock is
   what makes a document's seqs unique and gap-free across nodes: another node appending
   to the same document waits here until this transaction commits, then reads the
   ``last_seq`` and ``epoch`` this one left. Locking in one order (by name) means two
   nodes committing overlapping sets of documents never deadlock.
2. One ``INSERT ... SELECT FROM unnest(...)`` for every row.
3. One ``UPDATE ... FROM unnest(...)`` for ``last_seq``, ``updated_at``, ``deleted_at``.
4. (Only for documents the compaction scheduler lost count of) their raw tail.

Documents that have no row yet get one first, in a short transaction of its own, before
any lock is taken: inserting inside the batch's transaction could wait on another node's
insert of the same name while holding other documents' locks. Names known to have a row
are remembered (bounded), so the common batch skips that round trip.

An append made under an epoch the document has left (deleted or replaced, on any node)
is refused: its epoch is compared with the locked row's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from psycopg import Connection

from collab.storage.commit import AppendResult

#: How many document names the commit thread remembers as having a row.
KNOWN_NAMES = 10_000


class KnownNames:
    """Names that have a ``documents`` row (an LRU of :data:`KNOWN_NAMES`); rows are never
    deleted, so a name once seen stays valid."""

    def __init__(self, size: int = KNOWN_NAMES) -> None:
        self.size = size
        self._names: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def add(self, name: str) -> None:
        self._names[name] = None
        self._names.move_to_end(name)
        while len(self._names) > self.size:
            self._names.popitem(last=False)

    def discard(self, name: str) -> None:
        self._names.pop(name, None)


class MissingDocumentError(Exception):
    """A documents row the batch needed vanished between its insert and the lock (someone
    deleted rows by hand): the batch is retried, which inserts it again."""


def append_batch(
    conn: Connection,
    batch: Sequence[tuple[str, bytes, float, int | None]],
    *,
    count: Iterable[str] = (),
    known: KnownNames | None = None,
) -> AppendResult:
    """Append ``(room, update, received_at, epoch)`` rows in one transaction.

    Rows whose ``epoch`` is not the document's current epoch are not written (``None``
    matches any epoch). ``count`` names the rooms whose raw tail (rows and bytes since the
    last compaction) the result should carry.

    :raises psycopg.OperationalError: the database is unreachable or refused for now (the
        commit thread retries the batch).
    :raises psycopg.DataError: a row can never be written (the store commits room by room).
    :raises MissingDocumentError: see the class.
    """
    rooms = sorted(dict.fromkeys(room for room, *_ in batch))
    new = [room for room in rooms if known is None or room not in known]
    if new:
        now = time.time()
        with conn.transaction():
            conn.execute(
                "INSERT INTO documents (name, created_at, updated_at)"
                " SELECT name, %s, %s FROM unnest(%s::text[]) AS name ORDER BY name"
                " ON CONFLICT (name) DO NOTHING",
                [now, now, new],
            )
    stale: dict[tuple[str, int], None] = {}
    with conn.transaction():
        heads: dict[str, tuple[int, int, int]] = {
            str(name): (int(id_), int(epoch), int(last))
            for name, id_, epoch, last in conn.execute(
                "SELECT name, id, epoch, last_seq FROM documents WHERE name = ANY(%s)"
                " ORDER BY name FOR UPDATE",
                [rooms],
            )
        }
        for room in rooms:
            if room not in heads:
                if known is not None:
                    known.discard(room)
                raise MissingDocumentError(f"the documents row of {room!r} vanished")
        ids: list[int] = []
        seqs: list[int] = []
        datas: list[bytes] = []
        times: list[float] = []
        positions: list[tuple[int, int] | None] = []
        touched: dict[int, tuple[int, float]] = {}  # doc id -> (last seq, updated_at)
        for room, update, received_at, epoch in batch:
            id_, current, last = heads[room]
            if epoch is not None and epoch != current:
                stale[room, epoch] = None
                positions.append(None)
                continue
            heads[room] = (id_, current, last + 1)
            ids.append(id_)
            seqs.append(last + 1)
            datas.append(update)
            times.append(received_at)
            positions.append((current, last + 1))
            touched[id_] = (last + 1, received_at)
        if ids:
            # Binary parameters: the updates go as they are, not escaped into bytea text.
            conn.cursor().execute(
                "INSERT INTO updates (doc_id, seq, data, created_at)"
                " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[], %s::float8[])",
                [ids, seqs, datas, times],
                binary=True,
            )
            conn.execute(
                "UPDATE documents d SET last_seq = t.last_seq, updated_at = t.updated_at,"
                " deleted_at = NULL"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::float8[])"
                " AS t (id, last_seq, updated_at) WHERE d.id = t.id",
                [
                    list(touched),
                    [last for last, _ in touched.values()],
                    [at for _, at in touched.values()],
                ],
            )
        wanted = [heads[room][0] for room in dict.fromkeys(count) if room in heads]
        tails: dict[int, tuple[int, int]] = {id_: (0, 0) for id_ in wanted}
        if wanted:
            for id_, n, size in conn.execute(
                "SELECT doc_id, count(*), coalesce(sum(octet_length(data)), 0) FROM updates"
                " WHERE merged = 1 AND doc_id = ANY(%s) GROUP BY doc_id",
                [wanted],
            ):
                tails[int(id_)] = (int(n), int(size))
    if known is not None:
        for room in new:
            known.add(room)
    names = {heads[room][0]: room for room in rooms}
    return AppendResult(
        list(stale),
        {names[id_]: tail for id_, tail in tails.items()},
        positions=positions,
    )
