"""Build Yjs v1 updates by hand, including ones no Yjs client would send.

The tests of :mod:`collab.structs` need hostile updates (40,000 nested maps, children sent
before their parents, forged content under a victim's ids, huge varints), which pycrdt
cannot produce. Each helper writes one piece of the wire format of yjs
``src/utils/encoding.js`` (``writeClientsStructs``, ``writeStructs``) and lib0
``encoding.js`` (``writeVarUint``, ``writeVarInt``, ``writeAny``); nothing here checks
that the result makes sense, on purpose.

Example::

    root = item(map_type(), parent="doc", sub="m")   # doc.get("doc") ... a Y.Map under key "m"
    update = encode({7: (0, [root, item(string("hi"), parent=(7, 0))])})
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

#: The content part of an Item: (content ref, encoded content).
Content = tuple[int, bytes]
ID = tuple[int, int]


def var_uint(n: int) -> bytes:
    """lib0 ``writeVarUint``: 7 bits a byte, least significant first (any size, no check)."""
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def var_int(n: int) -> bytes:
    """lib0 ``writeVarInt``: first byte holds a sign bit and 6 bits, then 7 bits a byte."""
    negative = n < 0
    n = abs(n)
    first = (0x40 if negative else 0) | (n & 0x3F)
    n >>= 6
    out = bytearray([first | (0x80 if n else 0)])
    while n:
        out.append((0x80 if n >= 0x80 else 0) | (n & 0x7F))
        n >>= 7
    return bytes(out)


def var_string(s: str) -> bytes:
    """lib0 ``writeVarString``: the UTF-8 byte length, then the bytes."""
    data = s.encode()
    return var_uint(len(data)) + data


def var_bytes(b: bytes) -> bytes:
    return var_uint(len(b)) + b


# -- lib0 Any ----------------------------------------------------------------------------


def any_value(value: object) -> bytes:
    """lib0 ``writeAny`` for None, bool, int, float, str, bytes, list and dict (recursive:
    only for shallow values; build deep ones with :func:`deep_any`)."""
    if value is None:
        return b"\x7e"
    if value is True:
        return b"\x78"
    if value is False:
        return b"\x79"
    if isinstance(value, int):
        return b"\x7d" + var_int(value)
    if isinstance(value, float):
        return b"\x7b" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"\x77" + var_string(value)
    if isinstance(value, bytes):
        return b"\x74" + var_bytes(value)
    if isinstance(value, list):
        return b"\x75" + var_uint(len(value)) + b"".join(any_value(v) for v in value)
    if isinstance(value, dict):
        body = b"".join(var_string(k) + any_value(v) for k, v in value.items())
        return b"\x76" + var_uint(len(value)) + body
    raise TypeError(f"no Any encoding for {value!r}")


def deep_any(depth: int) -> bytes:
    """``depth`` arrays, each holding the next, around a null: ``[[[...null...]]]``."""
    return b"\x75\x01" * depth + b"\x7e"


# -- Item content (yjs readItemContent refs 1..9) --------------------------------------------


def deleted(length: int) -> Content:
    return 1, var_uint(length)


def json_strings(*items: str) -> Content:
    return 2, var_uint(len(items)) + b"".join(var_string(s) for s in items)


def binary(data: bytes) -> Content:
    return 3, var_bytes(data)


def string(s: str) -> Content:
    return 4, var_string(s)


def embed(json_text: str) -> Content:
    return 5, var_string(json_text)


def format_(key: str, json_text: str) -> Content:
    return 6, var_string(key) + var_string(json_text)


def type_(type_ref: int, name: str | None = None) -> Content:
    """ContentType; ``name`` is written for XmlElement (3) and XmlHook (5) when given."""
    return 7, bytes([type_ref]) + (var_string(name) if name is not None else b"")


def array_type() -> Content:
    return type_(0)


def map_type() -> Content:
    return type_(1)


def text_type() -> Content:
    return type_(2)


def anys(*values: object) -> Content:
    return 8, var_uint(len(values)) + b"".join(any_value(v) for v in values)


def raw_anys(count: int, encoded: bytes) -> Content:
    """ContentAny with a given count and already encoded values (for hostile counts)."""
    return 8, var_uint(count) + encoded


def subdoc(guid: str, opts: dict[str, object] | None = None) -> Content:
    return 9, var_string(guid) + any_value(opts or {})


# -- structs -------------------------------------------------------------------------------


def item(
    content: Content,
    *,
    origin: ID | None = None,
    right: ID | None = None,
    parent: str | ID | None = None,
    sub: str | None = None,
) -> bytes:
    """One Item struct. ``parent`` (a root name, or the id of the item holding the parent
    type) and ``sub`` (a map key) are written only when there is no origin on either side,
    as in yjs ``Item.write``."""
    ref, body = content
    info = ref | (0x80 if origin else 0) | (0x40 if right else 0)
    explicit = origin is None and right is None
    if explicit and sub is not None:
        info |= 0x20
    out = bytearray([info])
    if origin is not None:
        out += var_uint(origin[0]) + var_uint(origin[1])
    if right is not None:
        out += var_uint(right[0]) + var_uint(right[1])
    if explicit:
        if isinstance(parent, str):
            out += b"\x01" + var_string(parent)
        elif parent is not None:
            out += b"\x00" + var_uint(parent[0]) + var_uint(parent[1])
        else:
            raise ValueError("an item without origins needs a parent")
        if sub is not None:
            out += var_string(sub)
    return bytes(out + body)


def gc(length: int) -> bytes:
    return b"\x00" + var_uint(length)


def skip(length: int) -> bytes:
    return b"\x0a" + var_uint(length)


def encode(
    clients: Mapping[int, tuple[int, Sequence[bytes]]] | Iterable[tuple[int, int, Sequence[bytes]]],
    deletes: Mapping[int, Sequence[tuple[int, int]]] | None = None,
) -> bytes:
    """A whole update: ``{client: (first clock, [struct, ...])}`` (or a list of
    ``(client, clock, structs)``, which may repeat a client), then the delete set
    ``{client: [(clock, length), ...]}``."""
    rows = (
        [(c, clock, s) for c, (clock, s) in clients.items()]
        if isinstance(clients, Mapping)
        else list(clients)
    )
    out = bytearray(var_uint(len(rows)))
    for client, clock, structs in rows:
        out += var_uint(len(structs)) + var_uint(client) + var_uint(clock) + b"".join(structs)
    deletes = deletes or {}
    out += var_uint(len(deletes))
    for client, ranges in deletes.items():
        out += var_uint(client) + var_uint(len(ranges))
        for clock, length in ranges:
            out += var_uint(clock) + var_uint(length)
    return bytes(out)


def nested_maps(depth: int, client: int = 1, root: str = "root") -> bytes:
    """One update holding ``depth`` Y.Maps, each the value of key "m" in the one before;
    the first lives in the root map ``root``. The deepest map is at nesting depth ``depth``."""
    structs = [item(map_type(), parent=root, sub="m")]
    structs += [item(map_type(), parent=(client, i), sub="m") for i in range(depth - 1)]
    return encode({client: (0, structs)})
