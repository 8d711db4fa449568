"""Documents as they were: times, root types, exports, and restores as new edits.

Reading a document at time T merges every stored blob created at or before T (the log,
the history kept for the retention window, the base checkpoint; see
``collab.storage.sqlite.queries``). Granularity is one update: each keystroke a client sent is
a row with the time the server received it, until the retention window folds it into
the base.

Restoring never rewrites history: :func:`restore_update` builds the current document,
changes it until its content equals the past one, and returns that change as an ordinary
Yjs update, which is appended like any client's edit. Clients merge it as a normal change.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText, merge_updates

from collab.updates import doc_from, squash

#: The root types a document export or restore knows.
RootKind = Literal["text", "map", "array", "xml"]
ROOT_KINDS: tuple[RootKind, ...] = ("text", "map", "array", "xml")

_RELATIVE = re.compile(r"^-?((?:\d+(?:\.\d+)?[smhdw])+)(?:\s*ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """A point in time from the command line, as Unix seconds.

    Accepts ISO 8601 (``2026-03-01``, ``2026-03-01T14:30``, ``2026-03-01 14:30:05+02:00``;
    without a zone it is local time), ``@<unix seconds>``, ``now``, or a duration back
    from now (``90s``, ``15m``, ``2h``, ``1d12h``, ``-3d``, ``2h ago``).

    :raises ValueError: none of those.
    """
    seconds = _parse_time(text, time.time() if now is None else now)
    try:
        datetime.fromtimestamp(seconds)  # NaN, infinities and years past 9999 fail here
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is out of range: pick a time between 1970 and 9999") from None
    return seconds


def _parse_time(text: str, now: float) -> float:
    value = text.strip()
    if value.lower() == "now":
        return now
    if value.startswith("@"):
        try:
            return float(value[1:])
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time: @ takes Unix seconds (@1767225600)"
            ) from None
    relative = _RELATIVE.match(value.lower())
    if relative:
        seconds = sum(
            float(amount) * _UNITS[unit]
            for amount, unit in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", relative.group(1))
        )
        return now - seconds
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-03-01T14:30), @UNIX_SECONDS,"
            " now, or a duration back from now (15m, 2h, 1d)"
        ) from None
    return parsed.timestamp()  # naive datetimes are local time


def parse_duration(text: str) -> float:
    """A length of time from the command line, in seconds: ``90``, ``90s``, ``15m``,
    ``1h``, ``1d12h``, ``2w``.

    :raises ValueError: not a positive duration.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdw])+", value):
            raise ValueError(
                f"{text!r} is not a duration: use seconds or units, e.g. 90, 15m, 1h, 7d"
            ) from None
        seconds = sum(
            float(amount) * _UNITS[unit]
            for amount, unit in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", value)
        )
    if not 0 < seconds < 100 * 365 * 86400:
        raise ValueError(f"{text!r} is not a duration between 1 second and 100 years")
    return seconds


def format_time(seconds: float | None) -> str:
    """Local time to the second, as the CLI prints it."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# -- roots --------------------------------------------------------------------------


def _probe(update: bytes, names: Iterable[str], kind: type[Any]) -> dict[str, Any]:
    doc = doc_from([update])
    return {name: doc.get(name, type=kind) for name in names}


def detect_roots(update: bytes) -> dict[str, RootKind | None]:
    """Guess the type of each root of a document update.

    An update carries root names but not their types (a Yjs client decides the type when
    it first asks for a root), so each root is read as each type in a scratch doc: map
    entries mean a Map, string content a Text, embedded XML elements an XmlFragment, any
    other sequence an Array. A root whose content is all deleted gives no clue: None.
    """
    names = sorted(str(name) for name in doc_from([update]).keys())
    if not names:
        return {}
    as_map = _probe(update, names, Map)
    as_text = _probe(update, names, Text)
    as_array = _probe(update, names, Array)
    kinds: dict[str, RootKind | None] = {}
    for name in names:
        if len(as_map[name]):
            kinds[name] = "map"
        elif str(as_text[name]):
            kinds[name] = "text"
        elif len(as_array[name]):
            try:
                as_array[name].to_py()
                kinds[name] = "array"
            except ValueError:  # "XmlElement has no Python equivalent"
                kinds[name] = "xml"
        else:
            kinds[name] = None
    return kinds


def parse_root(spec: str) -> tuple[str, RootKind | None]:
    """``content`` or ``content:text`` -> (name, kind or None to detect).

    :raises ValueError: an unknown kind.
    """
    name, _, kind = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not kind:
        return spec, None
    if kind not in ROOT_KINDS:
        choices = ", ".join(ROOT_KINDS)
        raise ValueError(f"unknown root type {kind!r} in {spec!r}: use one of {choices}")
    return name, kind


_TYPES: dict[RootKind, type[Any]] = {"text": Text, "map": Map, "array": Array, "xml": XmlFragment}


def root_value(doc: Doc[Any], name: str, kind: RootKind | None) -> Any:
    """A root's content as plain Python: text and xml as str, map as dict, array as list.

    None for a root of unknown type (one whose content is all deleted).
    """
    if kind is None:
        return None
    root = doc.get(name, type=_TYPES[kind])
    if kind in ("text", "xml"):
        return str(root)
    return root.to_py()


def resolve_roots(
    update: bytes, specs: Sequence[str], default_all: bool
) -> list[tuple[str, RootKind | None]]:
    """The roots named by ``--root`` specs, types detected where not given.

    With no specs: every root if ``default_all`` (None for those of unknown type), else
    ``content`` (the y-codemirror and collab web editor root). A named root of unknown
    type is text.

    :raises ValueError: a spec names an unknown type.
    """
    detected = detect_roots(update)
    if not specs:
        if default_all:
            return sorted(detected.items())
        specs = ["content"]
    roots: list[tuple[str, RootKind | None]] = []
    for spec in specs:
        name, kind = parse_root(spec)
        roots.append((name, kind or detected.get(name) or "text"))
    return roots


# -- restore ------------------------------------------------------------------------


def _common_ends(old: Sequence[Any], new: Sequence[Any]) -> tuple[int, int]:
    """Lengths of the common prefix and of the common suffix (not overlapping it)."""
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, suffix


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _set_text(text: Text, past: str) -> None:
    current = str(text)
    prefix, suffix = _common_ends(current, past)
    # pycrdt indexes Text by UTF-8 bytes, not characters.
    start = _utf8_len(current[:prefix])
    removed = current[prefix : len(current) - suffix]
    if removed:
        del text[start : start + _utf8_len(removed)]
    inserted = past[prefix : len(past) - suffix]
    if inserted:
        text.insert(start, inserted)


def _set_array(array: Array[Any], past: list[Any]) -> None:
    current = array.to_py() or []
    prefix, suffix = _common_ends(current, past)
    removed = len(current) - suffix - prefix
    if removed:
        del array[prefix : prefix + removed]
    for offset, value in enumerate(past[prefix : len(past) - suffix]):
        array.insert(prefix + offset, value)


def _set_map(shared: Map[Any], past: dict[str, Any]) -> None:
    current = shared.to_py() or {}
    for key in current.keys() - past.keys():
        del shared[key]
    for key, value in past.items():
        if key not in current or current[key] != value:
            shared[key] = value


def _fill_xml(target: XmlFragment | XmlElement, source: XmlFragment | XmlElement) -> None:
    for child in source.children:
        if isinstance(child, XmlText):
            text = XmlText()
            target.children.append(text)
            offset = 0
            for chunk, attrs in child.diff():
                if isinstance(chunk, str):
                    text.insert(offset, chunk, attrs)
                    offset += _utf8_len(chunk)
        elif isinstance(child, XmlElement):
            # XmlAttributesView.__iter__ is annotated Iterable, not Iterator (pycrdt 0.14).
            pairs = cast(Iterable[tuple[str, Any]], child.attributes)
            attributes = {str(key): value for key, value in pairs}
            element = XmlElement(child.tag, attributes, [])
            target.children.append(element)
            _fill_xml(element, child)


def _set_xml(fragment: XmlFragment, past: XmlFragment) -> None:
    if str(fragment) == str(past):
        return
    while len(fragment.children):
        del fragment.children[len(fragment.children) - 1]
    _fill_xml(fragment, past)


def restore_update(
    current_updates: Sequence[bytes], past_updates: Sequence[bytes]
) -> tuple[bytes | None, list[tuple[str, RootKind]]]:
    """An update that, applied on top of the current document, makes its content equal
    the past one, and the roots it looked at.

    Text and arrays change only between their common prefix and suffix, so concurrent
    editors elsewhere in the document keep their place; map keys are set or deleted one by
    one; an XML fragment is replaced whole. Returns ``(None, roots)`` when nothing differs.

    :raises InvalidUpdateError: a stored update cannot be applied.
    """
    current_state = squash(list(current_updates)) if current_updates else b"\x00\x00"
    past_state = squash(list(past_updates)) if past_updates else b"\x00\x00"
    kinds = {name: kind for name, kind in detect_roots(current_state).items() if kind}
    kinds.update({name: kind for name, kind in detect_roots(past_state).items() if kind})
    roots = sorted(kinds.items())
    doc = doc_from([current_state])
    past = doc_from([past_state])
    # The transaction's own update: only what it changed. (``doc.get_update(state)`` would
    # also carry the whole delete set of the document.)
    changes: list[bytes] = []
    subscription = doc.observe(lambda event: changes.append(event.update))
    with doc.transaction(origin="restore"):
        for name, kind in roots:
            if kind == "text":
                _set_text(doc.get(name, type=Text), str(past.get(name, type=Text)))
            elif kind == "array":
                _set_array(doc.get(name, type=Array), past.get(name, type=Array).to_py() or [])
            elif kind == "map":
                _set_map(doc.get(name, type=Map), past.get(name, type=Map).to_py() or {})
            else:
                _set_xml(doc.get(name, type=XmlFragment), past.get(name, type=XmlFragment))
    doc.unobserve(subscription)
    changes = [update for update in changes if update != b"\x00\x00"]
    if not changes:
        return None, roots
    return (changes[0] if len(changes) == 1 else merge_updates(*changes)), roots


@dataclass(frozen=True, slots=True)
class Session:
    """A run of updates with no pause longer than the grouping gap: a restore point."""

    start: float
    end: float
    updates: int
    bytes: int


def sessions(rows: Iterable[tuple[float, int]], gap: float) -> list[Session]:
    """Group ``(created_at, size)`` rows, oldest first, into editing sessions."""
    found: list[Session] = []
    start = end = 0.0
    count = size = 0
    for created_at, length in rows:
        if count and created_at - end > gap:
            found.append(Session(start, end, count, size))
            count = size = 0
        if not count:
            start = created_at
        end = created_at
        count += 1
        size += length
    if count:
        found.append(Session(start, end, count, size))
    return found


__all__ = [
    "ROOT_KINDS",
    "RootKind",
    "Session",
    "detect_roots",
    "format_time",
    "parse_root",
    "parse_time",
    "resolve_roots",
    "restore_update",
    "root_value",
    "sessions",
]
