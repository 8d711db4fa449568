"""Yjs update bytes in, Yjs update bytes out: replaying, squashing and checking stored updates.

Two facts about pycrdt (yrs) shape this module, both measured on the 260k single-keystroke
updates of the ``automerge-paper`` trace (bench/storage.py):

* ``merge_updates(*updates)`` grows much faster than linearly with the number of updates
  (about 600 s for all 260k; 1.4 ms for 500), and its result keeps every deleted character
  (4.5 MB, 3 s to apply). Applying the same updates 64 at a time, each chunk merged first,
  takes 0.26 s; one ``apply_update`` per update takes 1.5 s.
* A doc's own encoding (``doc.get_update()``) is the compact form Yjs persistence layers
  store (y-leveldb's ``flushDocument``): 377 KB for that trace, 6 ms to apply. But yrs leaves
  out *pending* structs, updates whose causal dependencies never arrived, where Yjs keeps
  them. :func:`squash` detects those and keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycrdt import Decoder, Doc, Encoder, get_state, get_update, merge_updates

from collab.errors import InvalidUpdateError
from collab.protocol.codec import decode_state_vector

#: An update with no structs and no deletions.
EMPTY_UPDATE = b"\x00\x00"
#: How many updates :func:`replay` merges before each ``apply_update`` (see the module doc).
REPLAY_CHUNK = 64


def is_panic(error: BaseException) -> bool:
    # pyo3 turns a Rust panic into PanicException, a BaseException subclass that cannot be
    # imported by name; bytes that make yrs panic are invalid input like any other.
    return type(error).__name__ == "PanicException"


def apply_update(doc: Doc[Any], update: bytes, what: str = "invalid update") -> None:
    """Apply ``update`` to ``doc``, or raise.

    yrs decodes the whole update before it integrates anything, so a failed decode
    (``ValueError``) changes nothing. A failure while integrating (a panic, or a
    ``RuntimeError`` from yrs) may leave part of the update in ``doc``: the error says so
    (``midway``), and the caller must rebuild the document from what it trusts.

    :raises InvalidUpdateError: pycrdt cannot decode or apply the update (``what: why``).
    """
    try:
        doc.apply_update(update)
    except ValueError as e:
        raise InvalidUpdateError(f"{what}: {e}") from None
    except RuntimeError as e:
        raise InvalidUpdateError(f"{what}: {e}", midway=True) from None
    except BaseException as e:
        if is_panic(e):
            raise InvalidUpdateError(f"{what}: {e}", midway=True) from None
        raise


def replay(doc: Doc[Any], updates: Sequence[bytes], chunks: list[bytes] | None = None) -> None:
    """Apply ``updates`` to ``doc`` in order, :data:`REPLAY_CHUNK` merged updates at a time.

    :param chunks: if given, each merged chunk is appended to it (for :func:`pending_update`).
    :raises InvalidUpdateError: pycrdt cannot decode or apply one of the updates; ``doc``
        may then hold the chunks before it.
    """
    for start in range(0, len(updates), REPLAY_CHUNK):
        chunk = updates[start : start + REPLAY_CHUNK]
        what = f"updates {start}-{start + len(chunk) - 1}"
        try:
            merged = chunk[0] if len(chunk) == 1 else merge_updates(*chunk)
        except ValueError as e:
            raise InvalidUpdateError(f"{what}: {e}") from None
        apply_update(doc, merged, what)
        if chunks is not None:
            chunks.append(merged)


def check_update(update: bytes) -> None:
    """Refuse bytes that pycrdt cannot apply to a fresh document.

    An update whose dependencies are missing is valid (it waits as pending).

    :raises InvalidUpdateError: the bytes are not a Yjs v1 update pycrdt can apply.
    """
    apply_update(Doc(), update, "not a Yjs update")
    try:
        get_state(update)
    except ValueError as e:
        raise InvalidUpdateError(f"not a Yjs update: {e}") from None


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    """Encode ``{client_id: clock}`` as a Yjs v1 state vector."""
    encoder = Encoder()
    encoder.write_var_uint(len(clocks))
    for client_id, clock in sorted(clocks.items()):
        encoder.write_var_uint(client_id)
        encoder.write_var_uint(clock)
    return encoder.to_bytes()


def merge(updates: Sequence[bytes]) -> bytes:
    """``merge_updates`` over many updates, :data:`REPLAY_CHUNK` at a time, as a tree.

    Fast when the merged result stays small (delete sets, diffs); see the module doc.
    """
    level = list(updates)
    while len(level) > 1:
        level = [
            merge_updates(*level[i : i + REPLAY_CHUNK]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), REPLAY_CHUNK)
        ]
    return level[0] if level else b"\x00\x00"


def state_vector_overlaps(state_vector: bytes, retired: bytes) -> bool:
    """Whether a client state vector (sync step 1) includes edits by a client that also
    edited in a retired epoch (``StoredDoc.retired_state_vectors``).

    Yjs client ids are random per doc instance: a page that reloaded after a delete has a
    new one, so an id from a retired epoch means the client still holds that epoch's doc.
    """
    old = decode_state_vector(retired)
    return any(
        clock > 0 and old.get(client_id, 0) > 0
        for client_id, clock in decode_state_vector(state_vector).items()
    )


def update_overlaps(update: bytes, retired: bytes) -> bool:
    """Whether an update carries structs a retired epoch already had (history from it).

    ``get_update(update, state_vector)`` drops the structs the state vector covers and
    keeps the rest byte for byte, so the encoding shrinks exactly when some struct lies
    within the retired state vector. A client's new edits under fresh client ids never do.
    """
    return len(get_update(update, retired)) != len(get_update(update, b"\x00"))


def state_vector_of(updates: Sequence[bytes]) -> bytes:
    """The state vector covering every struct of ``updates``, pending ones included.

    Read update by update, so one that cannot be decoded (a damaged row) is skipped
    instead of failing the whole: deleting or replacing a damaged document must work.
    """
    clocks: dict[int, int] = {}
    for update in updates:
        try:
            state = get_state(update)
        except ValueError:
            continue
        except BaseException as e:
            if is_panic(e):
                continue
            raise
        for client, clock in decode_state_vector(state).items():
            if clock > clocks.get(client, 0):
                clocks[client] = clock
    return encode_state_vector(clocks)


def has_pending(doc: Doc[Any], update: bytes) -> bool:
    """Whether some of ``update``, already applied to ``doc``, waits there as pending:
    structs past its state vector, or deletions of clocks it has not seen yet."""
    return bool(partly_pending(doc, [update]))


def partly_pending(doc: Doc[Any], updates: Sequence[bytes]) -> list[bytes]:
    """Those of ``updates``, already applied to ``doc``, that it holds partly as pending.

    The doc's state vector is encoded once, and decoded (a Python loop over every client
    that ever wrote to it) only for an update whose deletions must be looked up.
    """
    state = doc.get_state()
    reached: dict[int, int] | None = None
    found = []
    for update in updates:
        diff = get_update(update, state)
        if diff[0] != 0:  # structs past the state vector remain
            found.append(update)
            continue
        if diff == EMPTY_UPDATE:
            continue
        if reached is None:
            reached = decode_state_vector(state)
        if _has_pending(diff, reached):
            found.append(update)
    return found


def _has_pending(diff: bytes, reached: dict[int, int]) -> bool:
    """Whether ``diff`` (an update diffed against a doc's state vector) holds anything that
    doc could not integrate: structs (only those past the state vector are left), or a
    deletion reaching past what the doc has."""
    decoder = Decoder(diff)
    if decoder.read_var_uint():
        return True
    for _ in range(decoder.read_var_uint()):
        known = reached.get(decoder.read_var_uint(), 0)
        for _ in range(decoder.read_var_uint()):
            clock, length = decoder.read_var_uint(), decoder.read_var_uint()
            if clock + length > known:
                return True
    return False


def squash(updates: Sequence[bytes]) -> bytes:
    """One update equivalent to all of ``updates``: the replayed doc's own encoding.

    Deleted content is dropped (as a Yjs doc drops it), so the result is much smaller than
    ``merge_updates`` would give. What the replayed doc holds as *pending* (structs whose
    dependencies never arrived, deletions of items it has never seen), which yrs leaves out
    of ``get_update()``, is merged into the result, so a late dependency still completes it.

    :raises InvalidUpdateError: one of the updates cannot be applied.
    """
    if len(updates) == 1:
        return updates[0]
    doc: Doc[Any] = Doc()
    replay(doc, updates)
    state = doc.get_update()
    pending = pending_update(doc, updates)
    return state if pending is None else merge_updates(state, pending)


def pending_update(doc: Doc[Any], updates: Sequence[bytes]) -> bytes | None:
    """What ``doc``, having applied ``updates``, holds of them as pending, as one update
    (None if nothing): the structs whose dependencies never arrived and the deletions of
    items it has never seen, which yrs leaves out of ``get_update()``.

    ``get_update(update, state_vector)`` keeps an update's structs past the state vector
    and its whole delete set; merged, they hold everything the doc may hold as pending.
    """
    state_vector = doc.get_state()
    leftovers = merge([get_update(update, state_vector) for update in updates])
    return leftovers if _has_pending(leftovers, decode_state_vector(state_vector)) else None


def doc_from(updates: Sequence[bytes], chunks: list[bytes] | None = None) -> Doc[Any]:
    """A fresh document with ``updates`` applied (``chunks``: see :func:`replay`).

    :raises InvalidUpdateError: one of the updates cannot be applied.
    """
    doc: Doc[Any] = Doc()
    replay(doc, updates, chunks)
    return doc


__all__ = [
    "EMPTY_UPDATE",
    "REPLAY_CHUNK",
    "apply_update",
    "doc_from",
    "check_update",
    "is_panic",
    "encode_state_vector",
    "pending_update",
    "merge",
    "has_pending",
    "partly_pending",
    "state_vector_of",
    "replay",
    "squash",
    "state_vector_overlaps",
    "update_overlaps",
]
