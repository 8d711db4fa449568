"""Pin the pycrdt awareness encoding collab relies on (see rooms.encode_awareness)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Awareness, Decoder, Doc, Encoder

from collab.rooms import encode_awareness


@given(st.text())
def test_awareness_strings_are_prefixed_with_their_utf8_length(name: str) -> None:
    doc = Doc()
    awareness = Awareness(doc)
    awareness.set_local_state({"user": {"name": name}})
    payload = encode_awareness(awareness, [doc.client_id])
    decoder = Decoder(payload)
    assert decoder.read_var_uint() == 1
    assert decoder.read_var_uint() == doc.client_id
    decoder.read_var_uint()  # clock
    state = decoder.read_var_string()  # reads a UTF-8 *byte* length, as y-protocols writes
    assert decoder.length == 0
    assert json.loads(state) == {"user": {"name": name}}


def test_pycrdt_encoder_write_var_string_counts_characters() -> None:
    # Why encode_awareness leans on json.dumps's ASCII escaping: pycrdt's string writer
    # prefixes the character count, which is wrong for non-ASCII text. If this starts
    # failing, pycrdt fixed it and the comment in rooms.encode_awareness can go.
    encoder = Encoder()
    encoder.write_var_string("é")
    assert encoder.to_bytes() == b"\x01" + "é".encode()
