"""Operational transformation of plain text, wire-compatible with ``ot-text-unicode`` v4.

This is the ``text-unicode`` OT type that ShareDB-style servers use (npm ``ot-text-unicode``,
https://github.com/ottypes/text-unicode), reimplemented in pure Python. An operation is a JSON
list of components that walk the document from its start:

- ``int`` N: skip (retain) the next N characters;
- ``str``: insert it at the current position;
- ``{"d": N}``: delete the next N characters; ``{"d": "text"}`` deletes them and remembers
  them, which makes the operation invertible.

Positions and lengths count Unicode code points, which are Python ``str`` indices (the
reference counts code points too, not JavaScript's UTF-16 units). A valid operation has no
empty component, no two adjacent skips and no trailing skip; :func:`normalize` makes one out
of any well-typed component list.

The functions give the same answers as the reference for every valid input (the differential
test in ``tests/test_ot_reference.py`` runs both on thousands of random cases). Where the
reference silently accepts a malformed operation we raise :class:`InvalidOpError` instead:
a delete that runs past the end of the document (the reference truncates it), a skip that is
a float or a bool, a delete with keys besides ``"d"``, and text with lone surrogates.

Nothing here does I/O; :mod:`collab.ot_server` builds the ShareDB-style server and client on
top of these functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, TypeAlias, TypedDict

from collab.errors import CollabError

__all__ = [
    "Component",
    "Delete",
    "InvalidOpError",
    "Op",
    "Side",
    "apply",
    "check_op",
    "compose",
    "insert",
    "invert",
    "invert_with_doc",
    "is_invertible",
    "is_noop",
    "make_invertible",
    "normalize",
    "remove",
    "strip_invertible",
    "transform",
    "transform_position",
    "transform_selection",
]


class Delete(TypedDict):
    """A delete component: ``{"d": count}`` or ``{"d": "the deleted text"}``."""

    d: int | str


Component: TypeAlias = int | str | Delete
Op: TypeAlias = list[Component]
Side = Literal["left", "right"]


class InvalidOpError(CollabError, ValueError):
    """The operation is malformed, or does not fit the document it is applied to."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: str, index: int) -> None:
    if not text.isascii() and _SURROGATE.search(text) is not None:
        raise InvalidOpError(f"component {index}: lone surrogate in {text!r}")


def _check_components(op: object, *, allow_empty: bool) -> Sequence[Component]:
    """Check each component's type and size; ``allow_empty`` admits 0, "" and {"d": 0}.

    This runs on every apply, transform and compose, so the common cases come first.
    """
    if type(op) is not list:
        raise InvalidOpError(f"an op is a list of components, not {type(op).__name__}")
    least = 0 if allow_empty else 1
    for i, c in enumerate(op):
        kind = type(c)  # not isinstance: a bool is an int, and True is no skip
        if kind is int:
            if c < least:
                raise InvalidOpError(f"component {i}: skip must be >= {least}, not {c}")
        elif kind is str:
            if len(c) < least:
                raise InvalidOpError(f"component {i}: an insert cannot be empty")
            _check_text(c, i)
        elif kind is dict and len(c) == 1 and "d" in c:
            d = c["d"]
            if type(d) is int:
                if d < least:
                    raise InvalidOpError(f"component {i}: delete count must be >= {least}")
            elif type(d) is str:
                if len(d) < least:
                    raise InvalidOpError(f"component {i}: a delete cannot be empty")
                _check_text(d, i)
            else:
                raise InvalidOpError(f"component {i}: a delete holds a count or text, not {d!r}")
        else:
            raise InvalidOpError(f"component {i}: expected int, str or {{'d': ...}}, not {c!r}")
    return op


def check_op(op: object) -> None:
    """Check that ``op`` is a valid operation (the reference's ``checkOp``, plus type checks).

    :raises InvalidOpError: if a component has the wrong type or is empty, two skips are
        adjacent, or the op ends with a skip.
    """
    _checked(op)


def _checked(op: object) -> Sequence[Component]:
    components = _check_components(op, allow_empty=False)
    for i in range(1, len(components)):
        if type(components[i]) is int and type(components[i - 1]) is int:
            raise InvalidOpError(f"components {i - 1} and {i}: adjacent skips must be combined")
    if components and type(components[-1]) is int:
        raise InvalidOpError("the op ends with a skip; drop it (see normalize)")
    return components


def _dlen(d: int | str) -> int:
    return d if isinstance(d, int) else len(d)


def _length(c: Component) -> int:
    """How many characters a component covers: skipped, inserted or deleted."""
    if isinstance(c, int):
        return c
    if isinstance(c, str):
        return len(c)
    return _dlen(c["d"])


def _dslice(d: int | str, start: int, end: int | None = None) -> int | str:
    """The part ``[start:end]`` of a delete's payload (a count or the deleted text)."""
    if isinstance(d, int):
        return (d if end is None else min(d, end)) - start
    return d[start:end]


class _Builder:
    """Appends components to an op, merging neighbours of one kind and dropping empty ones."""

    __slots__ = ("op",)

    def __init__(self) -> None:
        self.op: Op = []

    def append(self, c: Component | None) -> None:
        if c is None or c == 0 or c == "":
            return
        op = self.op
        if isinstance(c, dict):
            d = c["d"]
            if d == 0 or d == "":
                return
            last = op[-1] if op else None
            if isinstance(last, dict):
                # Merging mutates last, which is always our own dict, never the caller's.
                ld = last["d"]
                if isinstance(ld, str) and isinstance(d, str):
                    last["d"] = ld + d  # keeps the op invertible
                else:
                    last["d"] = _dlen(ld) + _dlen(d)
            else:
                op.append({"d": d})
        elif op and type(op[-1]) is type(c):
            op[-1] = op[-1] + c  # type: ignore[operator]  # int + int or str + str
        else:
            op.append(c)

    def build(self) -> Op:
        """The op, with its trailing skip (there is at most one) removed."""
        op = self.op
        if op and type(op[-1]) is int:
            op.pop()
        return op


class _Reader:
    """Takes an op apart piece by piece; past its end, the op skips forever."""

    __slots__ = ("op", "index", "offset")

    def __init__(self, op: Sequence[Component]) -> None:
        self.op = op
        self.index = 0  # the component being taken
        self.offset = 0  # how much of it is already taken

    def peek(self) -> Component | None:
        return self.op[self.index] if self.index < len(self.op) else None

    def take(self, n: int | None, whole: type | None = None) -> Component | None:
        """Take up to ``n`` characters' worth (all of the component if ``n`` is None).

        Components of type ``whole`` (``str`` or ``dict``) are never split.
        """
        if self.index == len(self.op):
            return n
        c = self.op[self.index]
        start = self.offset
        rest = _length(c) - start
        if n is None or type(c) is whole or rest <= n:
            self.index += 1
            self.offset = 0
            end = None
        else:
            self.offset = end = start + n
        if isinstance(c, int):
            return rest if end is None else n
        if isinstance(c, str):
            return c[start:end]
        return {"d": _dslice(c["d"], start, end)}


def normalize(op: object) -> Op:
    """Return ``op`` in normal form: neighbours merged, empty components and the trailing skip
    dropped. Does not modify ``op``.

    :raises InvalidOpError: if a component has the wrong type or a negative size.
    """
    out = _Builder()
    for c in _check_components(op, allow_empty=True):
        out.append(c)
    return out.build()


def apply(doc: str, op: object) -> str:
    """Apply ``op`` to the text ``doc`` and return the new text.

    :raises InvalidOpError: if ``op`` is invalid, or skips or deletes past the end of ``doc``;
        ``doc`` is a ``str`` and is never modified.
    """
    if not isinstance(doc, str):
        raise TypeError(f"doc must be a str, not {type(doc).__name__}")
    pieces: list[str] = []
    pos = 0
    size = len(doc)
    for c in _checked(op):
        if isinstance(c, int):
            end = pos + c
            if end > size:
                raise InvalidOpError(f"the op skips to {end}, past the end of the doc ({size})")
            pieces.append(doc[pos:end])
            pos = end
        elif isinstance(c, str):
            pieces.append(c)
        else:
            end = pos + _dlen(c["d"])
            if end > size:
                raise InvalidOpError(f"the op deletes to {end}, past the end of the doc ({size})")
            pos = end
    pieces.append(doc[pos:])
    return "".join(pieces)


def transform(op: object, other: object, side: Side) -> Op:
    """Transform ``op`` so that it applies after ``other``; both were made on the same doc.

    ``side`` breaks ties when both insert at one position: ``"left"`` puts ``op``'s insert
    first. Transform one op of a concurrent pair with ``"left"`` and the other with
    ``"right"``; then ``apply(apply(d, a), transform(b, a, "right")) ==
    apply(apply(d, b), transform(a, b, "left"))``.

    :raises InvalidOpError: if either op is invalid.
    :raises ValueError: if ``side`` is not ``"left"`` or ``"right"``.
    """
    if side != "left" and side != "right":
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    reader = _Reader(_checked(op))
    other = _checked(other)
    out = _Builder()
    for c2 in other:
        if isinstance(c2, int):
            # Copy op across the characters other keeps; op's inserts add no length.
            left = c2
            while left > 0:
                c1 = reader.take(left, str)
                out.append(c1)
                if c1 is not None and not isinstance(c1, str):
                    left -= _length(c1)
        elif isinstance(c2, str):
            if side == "left" and type(reader.peek()) is str:
                out.append(reader.take(None))
            out.append(len(c2))  # step over other's insert
        else:
            # Other deleted these characters: drop op's skips and deletes over them.
            left = _dlen(c2["d"])
            while left > 0:
                c1 = reader.take(left, str)
                if isinstance(c1, str):
                    out.append(c1)
                elif c1 is not None:
                    left -= _length(c1)
    while (c := reader.take(None)) is not None:
        out.append(c)
    return out.build()


def compose(a: object, b: object) -> Op:
    """Return one op equivalent to applying ``a`` then ``b``.

    Invertible deletes stay invertible when both ops are invertible.

    :raises InvalidOpError: if either op is invalid.
    """
    reader = _Reader(_checked(a))
    b = _checked(b)
    out = _Builder()
    for c2 in b:
        if isinstance(c2, int):
            # b keeps these characters of a's result: copy a, whose deletes take no room.
            left = c2
            while left > 0:
                chunk = reader.take(left, dict)
                out.append(chunk)
                if chunk is not None and not isinstance(chunk, dict):
                    left -= _length(chunk)
        elif isinstance(c2, str):
            out.append(c2)
        else:
            d = c2["d"]
            size = _dlen(d)
            done = 0
            while done < size:
                chunk = reader.take(size - done, dict)
                if isinstance(chunk, int):
                    out.append({"d": _dslice(d, done, done + chunk)})
                    done += chunk
                elif isinstance(chunk, str):
                    done += len(chunk)  # b deletes what a inserted: both vanish
                else:
                    out.append(chunk)
    while (c := reader.take(None)) is not None:
        out.append(c)
    return out.build()


def transform_position(pos: int, op: object) -> int:
    """Return where a cursor at ``pos`` ends up once ``op`` is applied.

    Text inserted exactly at the cursor goes after it; a cursor inside deleted text moves to
    the start of the deletion. Positions past the end of the doc are allowed, as in the
    reference.

    :raises InvalidOpError: if a component of ``op`` has the wrong type or a negative size.
    :raises ValueError: if ``pos`` is negative.
    """
    if type(pos) is not int or pos < 0:
        raise ValueError(f"a position is an int >= 0, not {pos!r}")
    at = 0
    for c in _check_components(op, allow_empty=True):
        if pos <= at:
            break
        if isinstance(c, int):
            at += c
        elif isinstance(c, str):
            at += len(c)
            pos += len(c)
        else:
            pos -= min(_dlen(c["d"]), pos - at)
    return pos


def transform_selection(selection: int | Sequence[int], op: object) -> int | list[int]:
    """Transform a cursor, or an ``[anchor, focus]`` pair, by ``op``.

    :raises InvalidOpError: if ``op`` is invalid.
    :raises ValueError: if a position is negative.
    """
    if isinstance(selection, int):
        return transform_position(selection, op)
    return [transform_position(p, op) for p in selection]


def is_invertible(op: object) -> bool:
    """True when every delete in ``op`` carries the deleted text.

    :raises InvalidOpError: if a component has the wrong type or a negative size.
    """
    return not any(
        isinstance(c, dict) and type(c["d"]) is int for c in _check_components(op, allow_empty=True)
    )


def invert(op: object) -> Op:
    """Return the op that undoes ``op``: inserts become deletes and deletes inserts.

    :raises InvalidOpError: if a delete lacks its text (``{"d": N}``); use
        :func:`invert_with_doc` or :func:`make_invertible` first.
    """
    out = _Builder()
    for i, c in enumerate(_check_components(op, allow_empty=True)):
        if isinstance(c, str):
            out.append({"d": c})
        elif isinstance(c, dict):
            d = c["d"]
            if isinstance(d, int):
                raise InvalidOpError(
                    f"component {i}: cannot invert a delete without its text; "
                    "call make_invertible(op, doc) first"
                )
            out.append(d)
        else:
            out.append(c)
    return out.build()


def make_invertible(op: object, doc: str) -> Op:
    """Return ``op`` with every ``{"d": N}`` replaced by the text it deletes from ``doc``.

    :raises InvalidOpError: if ``op`` is invalid or deletes past the end of ``doc``.
    """
    out = _Builder()
    pos = 0
    for i, c in enumerate(_check_components(op, allow_empty=True)):
        if isinstance(c, dict):
            d = c["d"]
            if isinstance(d, int):
                if pos + d > len(doc):
                    raise InvalidOpError(f"component {i}: deletes past the end of the doc")
                d = doc[pos : pos + d]
            out.append({"d": d})
            pos += _dlen(d)
        else:
            out.append(c)
            if isinstance(c, int):
                pos += c
    return out.build()


def invert_with_doc(op: object, doc: str) -> Op:
    """Invert ``op``, taking deleted text from ``doc``, the text ``op`` was applied to.

    :raises InvalidOpError: if ``op`` is invalid or deletes past the end of ``doc``.
    """
    return invert(make_invertible(op, doc))


def strip_invertible(op: object) -> Op:
    """Return ``op`` with deleted text replaced by its length (``{"d": "ab"}`` -> ``{"d": 2}``).

    :raises InvalidOpError: if a component has the wrong type or a negative size.
    """
    out = _Builder()
    for c in _check_components(op, allow_empty=True):
        out.append({"d": _dlen(c["d"])} if isinstance(c, dict) else c)
    return out.build()


def is_noop(op: Sequence[Component]) -> bool:
    """True for the empty op, which changes nothing (ops in normal form only)."""
    return len(op) == 0


def insert(pos: int, text: str) -> Op:
    """The op that inserts ``text`` at ``pos``."""
    if not text:
        return []
    return [text] if pos == 0 else [pos, text]


def remove(pos: int, text_or_count: str | int) -> Op:
    """The op that deletes ``text_or_count`` (the text itself, or a count) at ``pos``."""
    if _dlen(text_or_count) == 0:
        return []
    delete: Delete = {"d": text_or_count}
    return [delete] if pos == 0 else [pos, delete]
