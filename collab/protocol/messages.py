"""The messages of the y-websocket protocol, as frozen dataclasses.

Names follow yjs/y-protocols ``PROTOCOL.md``. Every websocket frame carries exactly one
message: a varuint message type, then a type-specific body.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MessageType(IntEnum):
    """Top-level message types (y-protocols PROTOCOL.md, "Message types")."""

    #: Document sync: step 1, step 2 or update (y-protocols ``sync.js``).
    SYNC = 0
    #: An awareness update (y-protocols ``awareness.js``).
    AWARENESS = 1
    #: Authentication (y-protocols ``auth.js``); only "permission denied" is defined.
    AUTH = 2
    #: Ask the other side for its full awareness state.
    QUERY_AWARENESS = 3
    #: collab's opt-in durability acknowledgement; sent only to clients that ask for it.
    ACK = 100


class AuthType(IntEnum):
    """Sub-types of an AUTH message (y-protocols ``auth.js``)."""

    #: The receiver was denied what it tried; a UTF-8 reason follows.
    PERMISSION_DENIED = 0


class SyncType(IntEnum):
    """Sub-types of a SYNC message (y-protocols ``sync.js``)."""

    #: The sender's state vector: "send me what I am missing".
    STEP1 = 0
    #: The updates the receiver of a step 1 was missing.
    STEP2 = 1
    #: An incremental update.
    UPDATE = 2


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """An encoded awareness update: varuint count, then (client_id, clock, JSON state)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    """collab's durability acknowledgement: this state vector is on disk, and so are the
    first ``updates`` update messages (sync step 2 or update) this connection sent.

    The count is what makes a delete-only edit exact: a delete moves no state vector.
    """

    state_vector: bytes
    updates: int


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    """y-protocols ``auth.js``: the sender may not do what it tried (collab: edit a
    document it may only read). The stock client logs the reason and stays connected."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message type collab does not handle; the protocol says to ignore it."""

    type: int


Message = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessUpdate
    | QueryAwareness
    | Ack
    | PermissionDenied
    | Unknown
)
