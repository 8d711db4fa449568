"""The y-websocket wire protocol without I/O: bytes in, typed messages out, and back."""

from __future__ import annotations

from collab.protocol.codec import decode, decode_state_vector, encode
from collab.protocol.messages import (
    Ack,
    AwarenessUpdate,
    Message,
    MessageType,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    Unknown,
)

__all__ = [
    "Ack",
    "AwarenessUpdate",
    "Message",
    "MessageType",
    "PermissionDenied",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "Unknown",
    "decode",
    "decode_state_vector",
    "encode",
]
