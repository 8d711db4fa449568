"""Read the struct layer of Yjs v1 updates, to refuse hostile ones before pycrdt applies them.

pycrdt (yrs) trusts the structure of what it applies, and two kinds of update hurt it:

* **Deep nesting.** An update holding ~40,000 nested ``Y.Map``\\s (then a delete of the
  outermost) overflows the Rust stack, and so does a ``ContentAny`` value nested ~50,000
  arrays deep: the process dies with SIGSEGV, not an exception. :class:`NestingTracker`
  follows, per document, how deep each struct would sit, and refuses an update that would
  put a type deeper than a limit *before* it is applied; :func:`read_update` refuses Any
  and JSON values nested deeper than :data:`MAX_ANY_DEPTH`.
* **Forged content.** An update that re-sends someone else's struct ids (client, clock) with
  other content is ignored by a document that has those ids, but a stored log that holds
  both tells two stories. :func:`conflicting_structs` finds such ids in a log.

Everything here is pure: bytes in, values out, no I/O. The decoder is iterative (no
recursion on input structure) and raises only :class:`StructError` on bad bytes.

Wire format (yjs ``src/utils/encoding.js`` ``readClientsStructRefs``, ``Item.js``
``readItemContent``; yrs ``update.rs`` ``Update::decode``/``decode_block``, ``block.rs``
``ItemContent::decode``; lib0 ``decoding.js``)::

    update     = varuint n_clients, n_clients * client_structs, delete_set
    client_structs = varuint n_structs, varuint client, varuint clock, n_structs * struct
    struct     = info byte; info & 0x1f: 0 GC (varuint len), 10 Skip (varuint len), else an Item:
                 [origin id if info & 0x80] [right origin id if info & 0x40]
                 [if neither: varuint 1 + varstring root name | varuint 0 + parent item id;
                  varstring parent_sub if info & 0x20] content(info & 0x1f)
    delete_set = varuint n_clients, n * (varuint client, varuint n_ranges, n * (clock, len))

Where yjs and yrs read the same bytes differently, an attacker can show this module one
update and pycrdt another, so such bytes are refused rather than guessed at (each checked
against pycrdt 0.14.13 in ``tests/test_structs.py``):

* yrs treats only the info bytes 0 and 10 as GC and Skip and masks the content ref with
  0x0f; yjs masks with 0x1f. Refused: GC/Skip with flag bits, content refs outside 1..9.
* ``ContentJSON`` (ref 2): yrs reads one string more than the count says. Refused (no
  client since yjs 13 writes it).
* ``XmlHook`` types (type ref 5): yjs reads a name after the ref, yrs does not. Refused,
  like the yrs-only type refs (7 weak link, 9 sub-document, 15 undefined).
* yrs reads 32-bit fields with wrap-around (clock 2**32 + 5 is clock 5) and keeps the low
  53 bits of a client id (client 2**53 + 5 is client 5). Refused: clients from 2**53,
  clocks whose end passes :data:`MAX_CLOCK`, parent info other than 0 and 1.
* A client listed twice in one update: yrs appends the second list, yjs replaces the
  first with it. Refused.
* Strings must be valid UTF-8 (yrs ``read_string`` does not check); counts may not
  exceed the bytes left (yrs reserves memory for the count before reading).
* Zero-length items (yrs drops them, yjs integrates them), GC and skip structs (yrs keeps
  them, then divides by their length whenever it encodes the document: a panic on every
  join, found by tests/fuzz/fuzz_atheris.py) and deleted ranges. Refused.

Trailing bytes after the delete set are ignored, as yrs does.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from struct import unpack_from
from typing import NamedTuple

from collab.errors import InvalidUpdateError, LocalProtocolError

#: Deepest type nesting :class:`NestingTracker` accepts by default: a root type is depth 0,
#: a map in it depth 1. yrs overflows its stack near 32,000 levels (measured: 40,000
#: nested maps and a delete SIGSEGV pycrdt 0.14.13); real documents stay under 20.
MAX_DEPTH = 1000
#: Deepest array/object nesting accepted in one ``ContentAny``, ``ContentDoc`` option,
#: ``ContentEmbed`` or ``ContentFormat`` value. yrs decodes Any recursively (50,000 levels
#: SIGSEGV pycrdt 0.14.13) and serde_json stops at 128.
MAX_ANY_DEPTH = 100
#: Client ids must be below 2**53: yrs keeps only the low 53 bits (``ClientID::new``), and
#: JavaScript numbers are exact only up to there. yjs picks 32-bit ids.
MAX_CLIENT = 2**53 - 1
#: No struct or deleted range may end past this clock. yrs keeps clocks in u32 and adds
#: lengths to them without overflow checks; 2**31 leaves room for those sums.
MAX_CLOCK = 2**31

#: A struct id: (client, clock).
ID = tuple[int, int]


class Ref(IntEnum):
    """The low five bits of a struct's info byte (yjs ``Item.js`` ``contentRefs``)."""

    #: Garbage-collected range: ids without content.
    GC = 0
    #: ContentDeleted: a deleted item that kept its position but not its content.
    DELETED = 1
    #: ContentJSON: legacy JSON strings (refused, see the module doc).
    JSON = 2
    #: ContentBinary: one Uint8Array.
    BINARY = 3
    #: ContentString: text, one clock per UTF-16 code unit.
    STRING = 4
    #: ContentEmbed: one JSON value embedded in text.
    EMBED = 5
    #: ContentFormat: a formatting mark (key, JSON value) in text.
    FORMAT = 6
    #: ContentType: a nested shared type (Y.Map, Y.Array, ...).
    TYPE = 7
    #: ContentAny: lib0 Any values, one clock each.
    ANY = 8
    #: ContentDoc: a sub-document (guid, options).
    DOC = 9
    #: Skip: a gap in an update (ids it does not carry).
    SKIP = 10


class TypeRef(IntEnum):
    """The type of a ContentType (yjs ``ContentType.js`` ``typeRefs``)."""

    #: Y.Array.
    ARRAY = 0
    #: Y.Map.
    MAP = 1
    #: Y.Text.
    TEXT = 2
    #: Y.XmlElement (followed by its node name).
    XML_ELEMENT = 3
    #: Y.XmlFragment.
    XML_FRAGMENT = 4
    #: Y.XmlHook (refused: yjs and yrs frame it differently).
    XML_HOOK = 5
    #: Y.XmlText.
    XML_TEXT = 6


class StructError(InvalidUpdateError, ValueError):
    """The bytes are not a Yjs v1 update this module accepts (truncated, malformed, or
    framed in a way yjs and yrs read differently).

    :param offset: the byte offset where reading failed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class TooDeepError(InvalidUpdateError):
    """Applying the update would nest a shared type deeper than the limit.

    :param depth: the depth the update would reach (the first one found past the limit).
    :param limit: the configured maximum.
    """

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"update nests a type {depth} levels deep (limit {limit})")
        self.depth = depth
        self.limit = limit


class ClockGapError(InvalidUpdateError):
    """The update skips clocks of a client: its structs start past what the document
    holds of that client.

    yjs keeps such structs pending until the missing clocks arrive; yrs (pycrdt 0.14)
    integrates them at once, outside its state vector, so the document's text, its
    encoding and the updates it reports disagree from then on. A Yjs client on one
    connection never skips its own clocks (it sends its updates in order, and a
    reconnect syncs from the server's state vector), so such an update is refused.
    """

    def __init__(self, client: int, expected: int, clock: int) -> None:
        super().__init__(
            f"update skips clocks {expected}..{clock - 1} of client {client};"
            " send the missing updates first"
        )
        self.client = client
        self.expected = expected
        self.clock = clock


class Struct(NamedTuple):
    """One struct of an update: a GC range, a Skip, or an Item.

    ``parent`` and ``parent_sub`` are set only when the item has neither origin (its parent
    is then that of its origin). ``content`` is the encoded content after the header, as
    the update carries it (empty for GC and Skip); :func:`content_units` reads it.
    """

    client: int
    clock: int
    length: int
    ref: int
    origin: ID | None = None
    right_origin: ID | None = None
    parent: str | ID | None = None
    parent_sub: str | None = None
    content: bytes = b""

    @property
    def end(self) -> int:
        return self.clock + self.length

    @property
    def type_ref(self) -> int | None:
        """The :class:`TypeRef` of a ContentType item, else None."""
        return self.content[0] if self.ref == Ref.TYPE else None


class DecodedUpdate(NamedTuple):
    """The structs of an update, in wire order, and its delete set."""

    structs: list[Struct]
    #: (client, clock, length) for each deleted range.
    delete_set: list[tuple[int, int, int]]


# -- reading -------------------------------------------------------------------------------
#
# Readers take (data, pos) and return (value, new pos). Running off the end raises
# IndexError from data[pos]; read_update turns that into StructError, so the hot path needs
# no bounds checks of its own except where a slice would silently come back short.

_GC = int(Ref.GC)
_SKIP = int(Ref.SKIP)
_DELETED = int(Ref.DELETED)
_BINARY = int(Ref.BINARY)
_STRING = int(Ref.STRING)
_EMBED = int(Ref.EMBED)
_FORMAT = int(Ref.FORMAT)
_TYPE = int(Ref.TYPE)
_ANY = int(Ref.ANY)
_DOC = int(Ref.DOC)
_ACCEPTED_TYPE_REFS = frozenset({0, 1, 2, 3, 4, 6})


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    while True:
        pos += 1
        b = data[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + 1
        shift += 7
        if shift >= 70:
            raise StructError("varint longer than 10 bytes", pos)


def _int(data: bytes, pos: int) -> tuple[int, int]:
    # lib0 writeVarInt: the first byte holds continuation, sign and 6 bits.
    b = data[pos]
    value = b & 0x3F
    negative = b & 0x40
    shift = 6
    while b & 0x80:
        pos += 1
        b = data[pos]
        value |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise StructError("varint longer than 10 bytes", pos)
    if value >= 2**63:
        raise StructError("integer out of the 64-bit range", pos)
    return (-value if negative else value), pos + 1


def _count(data: bytes, pos: int) -> tuple[int, int]:
    # A count of things that each take at least one byte can't exceed the bytes left;
    # checking first keeps yrs from reserving memory for an absurd count.
    n, pos = _uint(data, pos)
    if n > len(data) - pos:
        raise StructError(f"count {n} exceeds the {len(data) - pos} bytes left", pos)
    return n, pos


def _bytes_end(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varuint length; return (start, end) of the bytes that follow."""
    n, pos = _uint(data, pos)
    end = pos + n
    if end > len(data):
        raise StructError(f"length {n} runs past the end", pos)
    return pos, end


def _string(data: bytes, pos: int) -> tuple[str, int]:
    start, end = _bytes_end(data, pos)
    try:
        return data[start:end].decode(), end
    except UnicodeDecodeError:
        raise StructError("string is not valid UTF-8", start) from None


def _id(data: bytes, pos: int) -> tuple[ID, int]:
    client, pos = _uint(data, pos)
    clock, pos = _uint(data, pos)
    if client > MAX_CLIENT:
        raise StructError(f"client id {client} is not below 2**53", pos)
    if clock >= MAX_CLOCK:
        raise StructError(f"clock {clock} is not below {MAX_CLOCK}", pos)
    return (client, clock), pos


def _skip_any(data: bytes, pos: int, count: int) -> int:
    """Skip ``count`` lib0 Any values; refuse nesting past :data:`MAX_ANY_DEPTH`."""
    n = len(data)
    stack: list[tuple[int, bool]] = []
    remaining = count
    in_object = False
    while True:
        while remaining == 0:
            if not stack:
                return pos
            remaining, in_object = stack.pop()
        remaining -= 1
        if in_object:
            pos = _string(data, pos)[1]  # the key
        tag = data[pos]
        pos += 1
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            continue
        if tag == 125:  # integer
            pos = _int(data, pos)[1]
        elif tag == 123 or tag == 122:  # float64, bigint64
            pos += 8
        elif tag == 124:  # float32
            pos += 4
        elif tag == 119:  # string
            pos = _string(data, pos)[1]
        elif tag == 116:  # Uint8Array
            pos = _bytes_end(data, pos)[1]
        elif tag == 118 or tag == 117:  # object, array
            size, pos = _count(data, pos)
            stack.append((remaining, in_object))
            if len(stack) > MAX_ANY_DEPTH:
                raise StructError(f"Any value nested deeper than {MAX_ANY_DEPTH}", pos)
            remaining = size
            in_object = tag == 118
        else:
            raise StructError(f"unknown Any tag {tag}", pos - 1)
        if pos > n:
            raise StructError("Any value runs past the end", n)


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_json(text: str, pos: int) -> object:
    """Parse a JSON value (Embed, Format) after checking its nesting without recursion."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    if deepest > MAX_ANY_DEPTH:
        raise StructError(f"JSON value nested deeper than {MAX_ANY_DEPTH}", pos)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise StructError(f"invalid JSON: {e}", pos) from None


def _content(data: bytes, pos: int, ref: int) -> tuple[int, int]:
    """Read an Item's content; return (length in clock units, new pos)."""
    if ref == _STRING:
        start, end = _bytes_end(data, pos)
        raw = data[start:end]
        try:
            s = raw.decode()
        except UnicodeDecodeError:
            raise StructError("string is not valid UTF-8", start) from None
        # yjs counts string length in UTF-16 code units (JavaScript's String.length).
        n = len(s)
        if n != end - start:
            n = len(s.encode("utf-16-le")) >> 1
        return n, end
    if ref == _ANY:
        count, pos = _count(data, pos)
        return count, _skip_any(data, pos, count)
    if ref == _DELETED:
        return _uint(data, pos)
    if ref == _TYPE:
        type_ref = data[pos]
        if type_ref not in _ACCEPTED_TYPE_REFS:
            raise StructError(f"type ref {type_ref} is not accepted", pos)
        pos += 1
        if type_ref == TypeRef.XML_ELEMENT:
            pos = _string(data, pos)[1]
        return 1, pos
    if ref == _FORMAT:
        pos = _string(data, pos)[1]
        text, end = _string(data, pos)
        _check_json(text, pos)
        return 1, end
    if ref == _EMBED:
        text, end = _string(data, pos)
        _check_json(text, pos)
        return 1, end
    if ref == _BINARY:
        return 1, _bytes_end(data, pos)[1]
    if ref == _DOC:
        pos = _string(data, pos)[1]
        return 1, _skip_any(data, pos, 1)
    if ref == Ref.JSON:
        raise StructError("ContentJSON is refused: yjs and yrs read it differently", pos)
    raise StructError(f"unknown content ref {ref}", pos)


def read_update(update: bytes) -> DecodedUpdate:
    """Decode the structs and the delete set of a Yjs v1 update.

    :raises StructError: the bytes are truncated or malformed, or framed in a way yjs and
        yrs read differently (see the module doc).
    """
    data = update if type(update) is bytes else bytes(update)
    pos = 0
    try:
        structs: list[Struct] = []
        n_clients, pos = _count(data, pos)
        seen: set[int] = set()
        for _ in range(n_clients):
            n_structs, pos = _count(data, pos)
            client, pos = _uint(data, pos)
            clock, pos = _uint(data, pos)
            if client > MAX_CLIENT:
                raise StructError(f"client id {client} is not below 2**53", pos)
            if client in seen:
                raise StructError(f"client {client} is listed twice", pos)
            seen.add(client)
            for _ in range(n_structs):
                info = data[pos]
                pos += 1
                ref = info & 0x1F
                if info == _GC or info == _SKIP:
                    length, pos = _uint(data, pos)
                    if length == 0:
                        # yrs keeps a zero-length block, and then divides by its length
                        # whenever the document is encoded (a panic on every join)
                        raise StructError("empty GC or skip", pos)
                    struct = Struct(client, clock, length, ref)
                elif ref == _GC or ref == _SKIP or ref > 9:
                    raise StructError(f"invalid struct info byte {info:#04x}", pos - 1)
                else:
                    origin: ID | None = None
                    right: ID | None = None
                    parent: str | ID | None = None
                    sub: str | None = None
                    if info & 0x80:
                        origin, pos = _id(data, pos)
                    if info & 0x40:
                        right, pos = _id(data, pos)
                    if not info & 0xC0:
                        parent_info, pos = _uint(data, pos)
                        if parent_info == 1:
                            parent, pos = _string(data, pos)
                        elif parent_info == 0:
                            parent, pos = _id(data, pos)
                        else:
                            raise StructError(f"parent info {parent_info} is not 0 or 1", pos)
                        if info & 0x20:
                            sub, pos = _string(data, pos)
                    start = pos
                    length, pos = _content(data, pos, ref)
                    if length == 0:
                        raise StructError("empty item", start)
                    struct = Struct(
                        client, clock, length, ref, origin, right, parent, sub, data[start:pos]
                    )
                clock += length
                if clock > MAX_CLOCK:
                    raise StructError(f"struct ends past clock {MAX_CLOCK}", pos)
                structs.append(struct)
        delete_set: list[tuple[int, int, int]] = []
        n_clients, pos = _count(data, pos)
        for _ in range(n_clients):
            client, pos = _uint(data, pos)
            if client > MAX_CLIENT:
                raise StructError(f"client id {client} is not below 2**53", pos)
            n_ranges, pos = _count(data, pos)
            for _ in range(n_ranges):
                clock, pos = _uint(data, pos)
                length, pos = _uint(data, pos)
                if length == 0:
                    raise StructError("empty deleted range", pos)
                if clock + length > MAX_CLOCK:
                    raise StructError(f"deleted range ends past clock {MAX_CLOCK}", pos)
                delete_set.append((client, clock, length))
    except IndexError:
        raise StructError("truncated update", len(data)) from None
    return DecodedUpdate(structs, delete_set)


# -- content, unit by unit -------------------------------------------------------------------


def _any_values(data: bytes, pos: int, count: int) -> tuple[list[object], int]:
    """Decode ``count`` Any values into Python values, iteratively (depth already checked
    by :func:`read_update`)."""
    out: list[object] = []
    # Each frame: (container, values still to read into it)
    stack: list[tuple[list[object] | dict[str, object], int]] = [(out, count)]
    while stack:
        container, remaining = stack[-1]
        if remaining == 0:
            stack.pop()
            continue
        stack[-1] = (container, remaining - 1)
        key = ""
        if isinstance(container, dict):
            key, pos = _string(data, pos)
        tag = data[pos]
        pos += 1
        value: object
        if tag == 127:
            value = "<undefined>"  # only compared, never shown: keep it distinct from null
        elif tag == 126:
            value = None
        elif tag in (121, 120):
            value = tag == 120
        elif tag == 125:
            value, pos = _int(data, pos)
        elif tag == 124:
            value = _unpack(">f", data, pos)
            pos += 4
        elif tag == 123:
            value = _unpack(">d", data, pos)
            pos += 8
        elif tag == 122:
            value = ("bigint", int.from_bytes(data[pos : pos + 8], "big", signed=True))
            pos += 8
        elif tag == 119:
            value, pos = _string(data, pos)
        elif tag == 116:
            start, pos = _bytes_end(data, pos)
            value = data[start:pos]
        elif tag == 118:
            size, pos = _count(data, pos)
            obj: dict[str, object] = {}
            stack.append((obj, size))
            value = obj
        else:
            size, pos = _count(data, pos)
            arr: list[object] = []
            stack.append((arr, size))
            value = arr
        if isinstance(container, dict):
            container[key] = value
        else:
            container.append(value)
    return out, pos


def _unpack(fmt: str, data: bytes, pos: int) -> float:
    value: float = unpack_from(fmt, data, pos)[0]
    return value


def content_units(struct: Struct) -> bytes | list[object] | None:
    """The content of an Item as comparable units: UTF-16-LE bytes for strings (two bytes a
    clock), one value a clock for Any, a one-element list for the other countable
    contents, None for GC, Skip and ContentDeleted (nothing to compare)."""
    ref, data = struct.ref, struct.content
    if ref == _STRING:
        start, end = _bytes_end(data, 0)
        return data[start:end].decode().encode("utf-16-le")
    if ref == _ANY:
        count, pos = _uint(data, 0)
        return _any_values(data, pos, count)[0]
    if ref in (_EMBED, _FORMAT):
        key = ""
        pos = 0
        if ref == _FORMAT:
            key, pos = _string(data, pos)
        text, _ = _string(data, pos)
        return [(ref, key, json.loads(text))]
    if ref == _DOC:
        guid, pos = _string(data, 0)
        return [(ref, guid, _any_values(data, pos, 1)[0][0])]
    if ref in (_TYPE, _BINARY):
        return [(ref, data)]
    return None


# -- nesting ---------------------------------------------------------------------------------
#
# Theory of operation. For every client the tracker keeps the ids the document has
# integrated, which yrs only ever extends at the end (a struct integrates when its clock is
# at or below the client's state and its origin, right origin and parent item are already
# integrated: yrs ``Update::missing_dependency``, yjs ``Item.getMissing``). They are stored
# as runs: (end clock, parent depth), one run for consecutive structs with the same parent
# depth, so typing in one text costs one run per client, not one per character.
#
# The parent depth of an item is the depth of the type it lives in: 0 for a root type, and
# for an item whose parent is the type held by item P, depth(P) + 1. An item with an origin
# (or right origin) lives where that neighbour lives; yrs takes the left one's parent and
# falls back to the right, yjs drops the item if either is GC, so the tracker takes the
# larger of the two. GC ranges have no parent (NONE). An item naming a non-type item as its
# parent is counted as if it were a type (yrs refuses it anyway): overcounting is safe.
#
# Structs that cannot integrate yet (a gap in their client's clocks, or a dependency not
# integrated) are pending, in yrs and here. Each check replays the pending structs with the
# new ones until nothing more integrates, so a child sent before its parent is counted when
# the parent arrives. If several structs compete for the same ids the larger depth wins.
# What must never happen: an id the document integrated that the tracker holds as pending
# (its subtree would go unchecked). Hence the dependency rule above mirrors yrs exactly.

_NONE = -1


@dataclass(slots=True)
class Nesting:
    """What :meth:`NestingTracker.check` found: pass it to :meth:`NestingTracker.commit`
    once the document has applied the update."""

    #: The deepest type the update creates (0 if it creates none).
    deepest: int
    #: Structs of the update (or earlier pending ones) that integrated.
    integrated: int
    #: Structs still pending afterwards, over the whole document.
    pending: int
    _version: int = field(repr=False)
    _runs: dict[int, tuple[list[int], list[int]]] = field(repr=False)
    _pending: dict[int, list[Struct]] = field(repr=False)
    _waits: dict[int, set[int]] = field(repr=False)


class _Sim:
    """The tracker's runs plus the runs a check adds, without touching the tracker."""

    __slots__ = ("base_ends", "base_depths", "ends", "depths")

    def __init__(self, tracker: NestingTracker) -> None:
        self.base_ends = tracker._ends
        self.base_depths = tracker._depths
        self.ends: dict[int, list[int]] = {}
        self.depths: dict[int, list[int]] = {}

    def state(self, client: int) -> int:
        ends = self.ends.get(client) or self.base_ends.get(client)
        return ends[-1] if ends else 0

    def depth_at(self, client: int, clock: int) -> int:
        # Only called for integrated ids (clock < state(client)).
        base = self.base_ends.get(client)
        if base and clock < base[-1]:
            return self.base_depths[client][bisect_right(base, clock)]
        ends = self.ends[client]
        return self.depths[client][bisect_right(ends, clock)]

    def missing(self, s: Struct) -> int | None:
        """A client whose ids ``s`` needs and that are not integrated, else None."""
        for dep in (s.origin, s.right_origin, s.parent):
            if type(dep) is tuple and dep[1] >= self.state(dep[0]):
                return dep[0]
        return None

    def parent_depth(self, s: Struct) -> int:
        if s.ref == _GC:
            return _NONE
        origin, right, parent = s.origin, s.right_origin, s.parent
        if origin is not None or right is not None:
            d = _NONE
            if origin is not None:
                d = self.depth_at(*origin)
            if right is not None:
                d = max(d, self.depth_at(*right))
            return d
        if isinstance(parent, str):
            return 0
        assert parent is not None  # read_update sets a parent on items without origins
        d = self.depth_at(*parent)
        return d + 1 if d != _NONE else _NONE

    def append(self, client: int, end: int, depth: int) -> None:
        ends = self.ends.get(client)
        if ends is None:
            self.ends[client] = [end]
            self.depths[client] = [depth]
        elif self.depths[client][-1] == depth:
            ends[-1] = end
        else:
            ends.append(end)
            self.depths[client].append(depth)


class NestingTracker:
    """Per-document knowledge of how deep each struct sits, to refuse updates that would
    nest types deeper than ``max_depth`` before they are applied.

    Use: ``nesting = tracker.check(update)`` (raises, changes nothing), apply the update to
    the document, then ``tracker.commit(nesting)``. Memory grows with runs of structs (one
    per client for plain typing) plus the structs still pending.

    :param max_depth: deepest type nesting :meth:`check` accepts (default
        :data:`MAX_DEPTH`).
    :param refuse_gaps: refuse updates that skip clocks of a client (:class:`ClockGapError`).
    """

    def __init__(self, max_depth: int = MAX_DEPTH, *, refuse_gaps: bool = False) -> None:
        self.max_depth = max_depth
        #: :meth:`check` raises :class:`ClockGapError` for an update that skips clocks of
        #: a client (what a server in front of yrs wants), instead of keeping it pending.
        self.refuse_gaps = refuse_gaps
        #: The deepest type nesting in the document so far.
        self.deepest = 0
        self._ends: dict[int, list[int]] = {}
        self._depths: dict[int, list[int]] = {}
        self._pending: dict[int, list[Struct]] = {}
        self._pending_count = 0
        # client -> clients whose pending structs wait for it
        self._waiters: dict[int, set[int]] = {}
        self._version = 0

    @classmethod
    def from_update(
        cls, update: bytes, max_depth: int = MAX_DEPTH, *, refuse_gaps: bool = False
    ) -> NestingTracker:
        """A tracker seeded with a stored document (``doc.get_update()``). Depth past
        ``max_depth`` is recorded in :attr:`deepest`, not refused, so ``collab check`` can
        report documents stored before the limit existed.

        :raises StructError: the update is malformed.
        """
        tracker = cls(max_depth, refuse_gaps=refuse_gaps)
        tracker.commit(tracker._simulate(read_update(update).structs, None))
        return tracker

    @property
    def pending(self) -> int:
        """How many structs wait for ids the document has not seen."""
        return self._pending_count

    @property
    def runs(self) -> int:
        """How many (end clock, depth) runs the tracker holds, over all clients."""
        return sum(len(v) for v in self._ends.values())

    def state(self, client: int) -> int:
        """The next clock of ``client`` the document would integrate."""
        ends = self._ends.get(client)
        return ends[-1] if ends else 0

    def check(self, update: bytes) -> Nesting:
        """Work out the nesting ``update`` would bring, without recording it.

        :raises StructError: the update is malformed.
        :raises TooDeepError: integrating it would nest a type deeper than ``max_depth``.
        :raises ClockGapError: it skips clocks of a client, with ``refuse_gaps``.
        """
        data = update if type(update) is bytes else bytes(update)
        if not self._pending:
            try:
                nesting = self._check_keystroke(data)
            except IndexError:
                nesting = None  # truncated: the general reader says how
            if nesting is not None:
                return nesting
        return self._simulate(read_update(data).structs, self.max_depth)

    def _check_keystroke(self, data: bytes) -> Nesting | None:
        """The commonest update, read in one pass: one string item of one client, next in
        its clocks, after (and before) ids the document holds, and any delete set. The
        same result as the general path; None for anything else (that path decides)."""
        if data[0] != 1 or data[1] != 1:  # one client, one struct
            return None
        client, pos = _uint(data, 2)
        # Its origins are mostly its own earlier ids: compared as bytes, not decoded.
        client_bytes = data[2:pos]
        clock = data[pos]
        if clock < 0x80:
            pos += 1
        else:
            clock, pos = _uint(data, pos)
        info = data[pos]
        pos += 1
        if info & 0x1F != _STRING or not info & 0xC0 or client > MAX_CLIENT:
            return None  # not a string item placed by its neighbours
        ends = self._ends
        depths = self._depths
        own = ends.get(client)
        if clock != (own[-1] if own else 0):
            return None  # a gap, or ids already integrated
        depth = _NONE
        for has_neighbour in (info & 0x80, info & 0x40):  # its origin, its right origin
            if not has_neighbour:
                continue
            if data.startswith(client_bytes, pos):
                c = client
                pos += len(client_bytes)
            else:
                c, pos = _uint(data, pos)
            k, pos = _uint(data, pos)
            known = ends.get(c)
            if not known or k >= known[-1]:
                return None  # the neighbour is missing (or out of range)
            depth = max(depth, depths[c][bisect_right(known, k)])
        n, pos = _uint(data, pos)
        end = pos + n
        if n == 0 or end > len(data):
            return None
        try:
            text = data[pos:end].decode()
        except UnicodeDecodeError:
            return None
        length = len(text)
        if length != n:
            length = len(text.encode("utf-16-le")) >> 1
        if clock + length > MAX_CLOCK:
            return None
        pos = end
        # The delete set, checked as read_update checks it.
        n_clients, pos = _uint(data, pos)
        if n_clients > len(data) - pos:
            return None
        for _ in range(n_clients):
            deleter, pos = _uint(data, pos)
            n_ranges, pos = _uint(data, pos)
            if deleter > MAX_CLIENT or n_ranges > len(data) - pos:
                return None
            for _ in range(n_ranges):
                at, pos = _uint(data, pos)
                span, pos = _uint(data, pos)
                if span == 0 or at + span > MAX_CLOCK:
                    return None
        runs = {client: ([clock + length], [depth])}
        return Nesting(0, 1, 0, self._version, runs, {}, {})

    def commit(self, nesting: Nesting) -> None:
        """Record a checked update that the document has applied.

        :raises LocalProtocolError: another update was committed since ``nesting`` was
            checked (check again).
        """
        if nesting._version != self._version:
            raise LocalProtocolError("stale Nesting: the tracker changed since the check")
        self._version += 1
        for client, (ends, depths) in nesting._runs.items():
            base_ends = self._ends.get(client)
            if base_ends is None:
                self._ends[client] = ends
                self._depths[client] = depths
                continue
            base_depths = self._depths[client]
            if base_depths[-1] == depths[0]:
                base_ends[-1] = ends[0]
                ends, depths = ends[1:], depths[1:]
            base_ends.extend(ends)
            base_depths.extend(depths)
        for client, structs in nesting._pending.items():
            if structs:
                self._pending[client] = structs
            else:
                self._pending.pop(client, None)
        for dep, clients in nesting._waits.items():
            self._waiters.setdefault(dep, set()).update(clients)
        for dep in list(nesting._runs):
            # Woken clients were re-checked; the ones still waiting are in _waits again.
            if dep in self._waiters:
                waiting = {c for c in self._waiters[dep] if c in self._pending}
                if waiting:
                    self._waiters[dep] = waiting
                else:
                    del self._waiters[dep]
        self._pending_count = nesting.pending
        self.deepest = max(self.deepest, nesting.deepest)

    def _simulate(self, structs: list[Struct], limit: int | None) -> Nesting:
        if not self._pending:
            nesting = self._simulate_in_order(structs, limit)
            if nesting is not None:
                return nesting
        new: dict[int, list[Struct]] = {}
        for s in structs:
            if s.ref != _SKIP and s.length:
                new.setdefault(s.client, []).append(s)
        fresh = {id(s) for s in structs} if limit is not None and self.refuse_gaps else set()
        sim = _Sim(self)
        candidates: dict[int, list[Struct]] = {}
        heads: dict[int, int] = {}
        waits: dict[int, set[int]] = {}
        deepest = integrated = 0
        work = list(new)
        queued = set(work)
        while work:
            client = work.pop()
            queued.discard(client)
            todo = candidates.get(client)
            if todo is None:
                old = self._pending.get(client, [])
                todo = old + new.get(client, [])
                if old:
                    todo.sort(key=_clock)  # stable: earlier structs first
                candidates[client] = todo
                heads[client] = 0
            head = heads[client]
            state = sim.state(client)
            advanced = False
            while head < len(todo):
                first = todo[head]
                if first.clock + first.length <= state:
                    head += 1  # ids already integrated: yrs skips them
                    continue
                if first.clock > state:
                    if id(first) in fresh:
                        raise ClockGapError(client, state, first.clock)
                    waits.setdefault(client, set()).add(client)
                    break
                # Every struct covering `state` whose dependencies are met competes for
                # it; the first one integrates, at the largest depth among them.
                ready = []
                for i in range(head, len(todo)):
                    s = todo[i]
                    if s.clock > state:
                        break
                    if s.clock + s.length <= state:
                        continue
                    dep = sim.missing(s)
                    if dep is None:
                        ready.append(i)
                    else:
                        waits.setdefault(dep, set()).add(client)
                if not ready:
                    break
                depth = _NONE
                for i in ready:
                    s = todo[i]
                    d = sim.parent_depth(s)
                    if s.clock < state:
                        # yrs integrates the tail, next to the id before it.
                        d = max(d, sim.depth_at(client, state - 1))
                    depth = max(depth, d)
                    if s.ref == _TYPE and d != _NONE:
                        if limit is not None and d + 1 > limit:
                            raise TooDeepError(d + 1, limit)
                        deepest = max(deepest, d + 1)
                if ready[0] == head:
                    chosen = todo[head]
                    head += 1
                else:
                    chosen = todo.pop(ready[0])
                state = chosen.clock + chosen.length
                sim.append(client, state, depth)
                integrated += 1
                advanced = True
            heads[client] = head
            if advanced:
                for waiter in self._waiters.get(client, set()) | waits.pop(client, set()):
                    if waiter not in queued:
                        work.append(waiter)
                        queued.add(waiter)
        for client, head in heads.items():
            if head:
                candidates[client] = candidates[client][head:]
        pending = self._pending_count
        for client, todo in candidates.items():
            pending += len(todo) - len(self._pending.get(client, ()))
        return Nesting(deepest, integrated, pending, self._version, _runs(sim), candidates, waits)

    def _simulate_in_order(self, structs: list[Struct], limit: int | None) -> Nesting | None:
        """The common case, nothing pending and every struct integrating in wire order (a
        keystroke): the same result as the general loop, without its bookkeeping. None when
        some struct would not integrate in order."""
        sim = _Sim(self)
        deepest = integrated = 0
        for s in structs:
            if s.ref == _SKIP or not s.length:
                continue
            if s.clock != sim.state(s.client) or sim.missing(s) is not None:
                return None
            d = sim.parent_depth(s)
            if s.ref == _TYPE and d != _NONE:
                if limit is not None and d + 1 > limit:
                    raise TooDeepError(d + 1, limit)
                deepest = max(deepest, d + 1)
            sim.append(s.client, s.clock + s.length, d)
            integrated += 1
        return Nesting(deepest, integrated, 0, self._version, _runs(sim), {}, {})


def _clock(s: Struct) -> int:
    return s.clock


def _runs(sim: _Sim) -> dict[int, tuple[list[int], list[int]]]:
    return {c: (ends, sim.depths[c]) for c, ends in sim.ends.items()}


def max_depth(update: bytes) -> int:
    """The deepest type nesting in a whole-document update (``doc.get_update()``).

    :raises StructError: the update is malformed.
    """
    return NestingTracker.from_update(update).deepest


# -- forged content --------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """Two updates of a log carry the same ids with different content or position."""

    client: int
    clock: int
    length: int
    #: Index (in the log) of the update that carried these ids first.
    first: int
    #: Index of the update that disagrees with it.
    second: int
    #: "content", "origin", "right origin" or "parent".
    reason: str


@dataclass
class _Record:
    struct: Struct
    update: int
    units: bytes | list[object] | None = None
    decoded: bool = False

    def content(self) -> bytes | list[object] | None:
        if not self.decoded:
            self.units = content_units(self.struct)
            self.decoded = True
        return self.units


class _Layer:
    """Disjoint clock ranges of one client, each held by the first record that had it."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.records: list[_Record] = []

    def overlaps(self, start: int, end: int) -> Iterator[tuple[int, int, _Record]]:
        i = max(bisect_right(self.starts, start) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            lo, hi = max(self.starts[i], start), min(self.ends[i], end)
            if lo < hi:
                yield lo, hi, self.records[i]
            i += 1

    def fill(self, start: int, end: int, record: _Record) -> None:
        """Give ``record`` the parts of [start, end) nobody holds yet."""
        gaps = []
        cursor = start
        for lo, hi, _ in self.overlaps(start, end):
            if cursor < lo:
                gaps.append((cursor, lo))
            cursor = hi
        if cursor < end:
            gaps.append((cursor, end))
        for lo, hi in gaps:
            i = bisect_right(self.starts, lo)
            self.starts.insert(i, lo)
            self.ends.insert(i, hi)
            self.records.insert(i, record)


def _origin_at(s: Struct, clock: int) -> ID | None:
    # Splitting an item gives the right part the id before it as origin (yjs splitItem),
    # so every unit but the first has an implied origin.
    return s.origin if clock == s.clock else (s.client, clock - 1)


def _same_units(a: _Record, b: _Record, lo: int, hi: int) -> bool:
    ua, ub = a.content(), b.content()
    if ua is None or ub is None:
        return True
    if a.struct.ref != b.struct.ref:
        return False
    oa, ob = lo - a.struct.clock, lo - b.struct.clock
    n = hi - lo
    if isinstance(ua, bytes) and isinstance(ub, bytes):
        sa, sb = ua[2 * oa : 2 * (oa + n)], ub[2 * ob : 2 * (ob + n)]
        return sa == sb or _same_but_split_surrogates(sa, sb)
    return ua[oa : oa + n] == ub[ob : ob + n]


def _same_but_split_surrogates(a: bytes, b: bytes) -> bool:
    # yjs replaces half of a surrogate pair it splits with U+FFFD (ContentString.splice).
    if len(a) != len(b):
        return False
    for i in range(0, len(a), 2):
        x, y = int.from_bytes(a[i : i + 2], "little"), int.from_bytes(b[i : i + 2], "little")
        if x == y:
            continue
        other = y if x == 0xFFFD else x if y == 0xFFFD else None
        if other is None or not 0xD800 <= other < 0xE000:
            return False
    return True


def conflicting_structs(updates: Iterable[bytes]) -> list[Conflict]:
    """Find struct ids that two updates of a log carry with different content, origin,
    right origin or parent.

    Content is compared unit by unit (a UTF-16 code unit of a string, one Any value), so
    items split or merged differently still match. GC ranges, Skips and ContentDeleted have
    no content to compare: a deleted item legitimately loses its content when a document is
    compacted.

    :raises StructError: an update is malformed (``offset`` is within that update; the
        message does not say which one, so callers decoding a log should wrap it).
    """
    meta: dict[int, _Layer] = {}
    content: dict[int, _Layer] = {}
    found: list[Conflict] = []
    for index, update in enumerate(updates):
        for s in read_update(update).structs:
            if s.ref == _GC or s.ref == _SKIP or not s.length:
                continue
            record = _Record(s, index)
            layer = meta.setdefault(s.client, _Layer())
            for lo, hi, other in layer.overlaps(s.clock, s.end):
                if other.update == index:
                    continue
                o = other.struct
                reason = None
                if o.right_origin != s.right_origin:
                    reason = "right origin"
                elif _origin_at(o, lo) != _origin_at(s, lo):
                    reason = "origin"
                elif lo == o.clock == s.clock and (o.parent, o.parent_sub) != (
                    s.parent,
                    s.parent_sub,
                ):
                    reason = "parent"
                if reason:
                    found.append(Conflict(s.client, lo, hi - lo, other.update, index, reason))
            layer.fill(s.clock, s.end, record)
            if s.ref == _DELETED:
                continue
            layer = content.setdefault(s.client, _Layer())
            for lo, hi, other in layer.overlaps(s.clock, s.end):
                if other.update != index and not _same_units(other, record, lo, hi):
                    found.append(Conflict(s.client, lo, hi - lo, other.update, index, "content"))
            layer.fill(s.clock, s.end, record)
    return found
