"""The sans-IO codec: round trips, strictness, and garbage in gives a message or an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.errors import CloseCode, RemoteProtocolError
from collab.protocol import (
    Ack,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    Unknown,
    decode,
    encode,
)

payload_messages = st.one_of(
    st.builds(SyncStep1, st.binary()),
    st.builds(SyncStep2, st.binary()),
    st.builds(SyncUpdate, st.binary()),
    st.builds(AwarenessUpdate, st.binary()),
    st.builds(Ack, st.binary(), st.integers(min_value=0, max_value=2**53 - 1)),
    st.just(QueryAwareness()),
)


@given(payload_messages)
def test_decode_inverts_encode(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@given(st.binary(min_size=128, max_size=70_000))
def test_long_payloads_use_multi_byte_length_prefixes(update: bytes) -> None:
    frame = encode(SyncUpdate(update))
    assert frame[2] & 0x80  # a varint of more than one byte
    assert decode(frame) == SyncUpdate(update)


def test_wire_format_matches_y_protocols() -> None:
    # y-protocols sync.js: writeVarUint(messageSync), writeVarUint(type), writeVarUint8Array(data)
    assert encode(SyncStep1(b"\x00")) == b"\x00\x00\x01\x00"
    assert encode(SyncUpdate(b"\x01\x02")) == b"\x00\x02\x02\x01\x02"
    assert encode(AwarenessUpdate(b"\x00")) == b"\x01\x01\x00"
    assert encode(QueryAwareness()) == b"\x03"
    # collab's type 100: varUint8Array(state vector), then varUint(update messages durable)
    assert encode(Ack(b"\x01\x07\x02", 300)) == b"\x64\x03\x01\x07\x02\xac\x02"


@given(st.binary())
def test_garbage_gives_a_message_or_a_protocol_error(frame: bytes) -> None:
    try:
        message = decode(frame)
    except RemoteProtocolError as e:
        assert e.close_code == CloseCode.INVALID_PAYLOAD
    else:
        assert isinstance(
            message,
            (SyncStep1, SyncStep2, SyncUpdate, AwarenessUpdate, QueryAwareness, Ack, Unknown),
        )


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x80",
        b"\x00",
        b"\x00\x02",
        b"\x00\x02\x05abc",
        b"\x00\x02\xff",
        b"\x01",
        b"\x00\x09\x00",
        b"\x64\x01\x00",  # an acknowledgement without its update count
        b"\x64\x01\x00\x80",  # ... or with a truncated one
    ],
)
def test_truncated_or_inconsistent_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(frame)


def test_unknown_message_types_decode_as_unknown() -> None:
    assert decode(b"\x07anything") == Unknown(7)
    assert decode(b"\x02\x00\x00") == Unknown(2)  # auth is for the client side only


def test_unknown_messages_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode(Unknown(9))
