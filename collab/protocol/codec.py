"""Decode y-websocket frames into messages and encode messages into frames.

Built on pycrdt's sync helpers (``Decoder``, ``create_*_message``) so varints are not
re-implemented here. pycrdt's ``Decoder`` is lenient by design (a length prefix longer
than the frame yields a short slice), so :func:`decode` checks the bounds it reports and
turns any shortfall into :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import json

from pycrdt import Decoder, create_awareness_message, write_message, write_var_uint
from pycrdt._sync import (
    create_sync_step1_message,
    create_sync_step2_message,
    create_update_message,
)

from collab.errors import RemoteProtocolError
from collab.protocol.messages import (
    Ack,
    AuthType,
    AwarenessUpdate,
    Message,
    MessageType,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncType,
    SyncUpdate,
    Unknown,
)

_QUERY_AWARENESS_FRAME = write_var_uint(MessageType.QUERY_AWARENESS)


def _read_uint(decoder: Decoder) -> int:
    try:
        return decoder.read_var_uint()
    except (IndexError, RuntimeError):
        raise RemoteProtocolError("truncated varint") from None


def _read_bytes(decoder: Decoder) -> bytes:
    if decoder.length <= 0:
        raise RemoteProtocolError("frame ends before its payload")
    try:
        body = decoder.read_message()
    except (IndexError, RuntimeError):
        raise RemoteProtocolError("truncated length prefix") from None
    if decoder.length < 0 or body is None:
        # read_message slices past the end without complaint and counts into the negative
        raise RemoteProtocolError("length prefix exceeds the frame")
    return bytes(body)


def decode(frame: bytes) -> Message:
    """Decode one websocket frame.

    :raises RemoteProtocolError: the frame is empty, truncated or inconsistent.
    """
    decoder = Decoder(frame)
    if not frame:
        raise RemoteProtocolError("empty frame")
    message_type = _read_uint(decoder)
    if message_type == MessageType.SYNC:
        sync_type = _read_uint(decoder)
        if sync_type == SyncType.STEP1:
            return SyncStep1(_read_bytes(decoder))
        if sync_type == SyncType.STEP2:
            return SyncStep2(_read_bytes(decoder))
        if sync_type == SyncType.UPDATE:
            return SyncUpdate(_read_bytes(decoder))
        raise RemoteProtocolError(f"unknown sync message type {sync_type}")
    if message_type == MessageType.AWARENESS:
        return AwarenessUpdate(_read_bytes(decoder))
    if message_type == MessageType.QUERY_AWARENESS:
        return QueryAwareness()
    if message_type == MessageType.ACK:
        state_vector = _read_bytes(decoder)
        if decoder.length <= 0:
            raise RemoteProtocolError("acknowledgement ends before its update count")
        return Ack(state_vector, _read_uint(decoder))
    # AUTH included: only a server sends it (PermissionDenied), so a client's is ignored.
    return Unknown(message_type)


def encode(message: Message) -> bytes:
    """Encode a message as one websocket frame.

    :raises ValueError: the message is an :class:`Unknown`, which has no encoding.
    """
    match message:
        case SyncUpdate(update):
            return create_update_message(update)
        case SyncStep1(state_vector):
            return create_sync_step1_message(state_vector)
        case SyncStep2(update):
            return create_sync_step2_message(update)
        case AwarenessUpdate(payload):
            return create_awareness_message(payload)
        case QueryAwareness():
            return _QUERY_AWARENESS_FRAME
        case Ack(state_vector, updates):
            return (
                write_var_uint(MessageType.ACK)
                + write_message(state_vector)
                + write_var_uint(updates)
            )
        case PermissionDenied(reason):
            # lib0's writeVarString: the UTF-8 byte length, then the bytes
            header = write_var_uint(MessageType.AUTH) + write_var_uint(AuthType.PERMISSION_DENIED)
            return header + write_message(reason.encode("utf-8"))
    raise ValueError(f"cannot encode {message!r}")


#: The largest integer lib0 reads (JavaScript's Number.MAX_SAFE_INTEGER).
_MAX_UINT = 2**53 - 1


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def read_awareness_update(
    payload: bytes,
) -> tuple[list[tuple[int, int, int, int, int, int]], int]:
    """Read an awareness update as y-protocols does, strictly.

    Each entry is a client id, a clock, and a state: JSON (``null`` removes the client) as
    UTF-8 with its length in bytes. pycrdt's reader is lenient: it takes a missing state
    for ``null``, a length past the end for what is there, and Python's ``json`` takes
    ``NaN``. A browser throws on each of those, so such an update must be refused before
    any of it is applied or relayed. Bytes after the last entry are not read (y-protocols
    ignores them too).

    :returns: ``([(client, clock, start, after_clock, end, state_size), ...], bytes
        read)``: each entry's bytes are ``payload[start:end]``, its length-prefixed
        state ``payload[after_clock:end]`` (``state_size`` bytes of JSON).
    :raises RemoteProtocolError: the payload is not such an update.
    """
    decoder = Decoder(payload)
    count = _read_uint(decoder)
    if count > len(payload):  # each entry takes at least 3 bytes: refuse before looping
        raise RemoteProtocolError("awareness update counts more entries than it holds")
    entries = []
    for _ in range(count):
        start = decoder.i0
        client, clock = _read_uint(decoder), _read_uint(decoder)
        if client > _MAX_UINT or clock > _MAX_UINT:
            raise RemoteProtocolError("awareness client id or clock out of range")
        after_clock = decoder.i0
        state = _read_bytes(decoder)
        try:
            json.loads(state.decode("utf-8"), parse_constant=_no_constants)
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
            raise RemoteProtocolError(f"awareness state is not JSON: {e}") from None
        except RecursionError:
            raise RemoteProtocolError("awareness state nests too deep") from None
        entries.append((client, clock, start, after_clock, decoder.i0, len(state)))
    return entries, decoder.i0


def check_awareness_update(payload: bytes) -> tuple[int, int]:
    """:func:`read_awareness_update`, counted: ``(entries, bytes read)``.

    :raises RemoteProtocolError: the payload is not a valid awareness update.
    """
    entries, used = read_awareness_update(payload)
    return len(entries), used


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector into ``{client_id: clock}``.

    :raises RemoteProtocolError: the bytes are not a state vector.
    """
    decoder = Decoder(state_vector)
    result = {}
    for _ in range(_read_uint(decoder)):
        client = _read_uint(decoder)
        result[client] = _read_uint(decoder)
    return result
