"""What ``collab get``, ``collab put`` and ``collab watch`` do: one document of a running
server, over its websocket, through :class:`collab.client.Client`.

``put`` replaces a text with a minimal diff, applied as one transaction: only what
changed is deleted and inserted, so another editor's cursor (a relative position) and its
own concurrent edits outside the changed spans keep their place, as they would after a
person's edit. The CLI (``collab.cli``) only parses arguments and prints.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from pycrdt import Array, ArrayEvent, Map, MapEvent, Text, TextEvent

from collab.client import Client, ConnectionState, document_of
from collab.errors import CollabError, ConnectionClosedError
from collab.history import detect_roots, parse_root, root_value
from collab.names import BadNameError, name_from_bytes

#: Above this many pairs of characters the middle of a diff is compared line by line.
CHAR_DIFF_LIMIT = 4_000_000

#: One edit of a text: (code-point offset in the old text, characters deleted, inserted).
Edit = tuple[int, int, str]


def websocket_url(url: str) -> str:
    """``url`` as a websocket URL (http and https become ws and wss).

    :raises CollabError: not a ws, wss, http or https URL with a document name.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise CollabError(f"{url!r} is not a document URL: use ws://HOST:PORT/NAME")
    if parts.path in ("", "/"):
        raise CollabError(f"{url!r} names no document: use ws://HOST:PORT/NAME")
    try:
        # The server's own rule, checked here too: a refused name is a clear error at
        # once rather than a close code that may race the socket's teardown.
        name_from_bytes(unquote_to_bytes(parts.path[1:]))
    except BadNameError as e:
        raise CollabError(f"{url!r} names no valid document: {e}") from None
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def text_edits(old: str, new: str) -> list[Edit]:
    """The edits that turn ``old`` into ``new``, few and small, in ascending order.

    The common prefix and suffix are kept; the middle is compared character by character
    (difflib, no junk heuristic) or, when that would be slow, line by line.
    """
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    a, b = old[start : len(old) - end], new[start : len(new) - end]
    if not a and not b:
        return []
    if len(a) * len(b) <= CHAR_DIFF_LIMIT:
        return [
            (start + i1, i2 - i1, b[j1:j2])
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
                None, a, b, autojunk=False
            ).get_opcodes()
            if tag != "equal"
        ]
    a_lines, b_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    a_offsets = [0]
    for line in a_lines:
        a_offsets.append(a_offsets[-1] + len(line))
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, a_lines, b_lines, autojunk=False
    ).get_opcodes():
        if tag != "equal":
            at = a_offsets[i1]
            edits.append((start + at, a_offsets[i2] - at, "".join(b_lines[j1:j2])))
    return edits


def apply_text_edits(text: Text, old: str, edits: Sequence[Edit]) -> None:
    """Apply :func:`text_edits` of ``old`` (what ``text`` holds) to ``text``, as one
    transaction. pycrdt indexes a Text by UTF-8 bytes: offsets are converted."""

    def utf8(i: int) -> int:
        return len(old[:i].encode("utf-8", "surrogatepass"))

    assert text.doc is not None  # a root type always has its doc
    with text.doc.transaction():
        for at, deleted, inserted in reversed(edits):  # from the end: offsets stay valid
            begin = utf8(at)
            if deleted:
                del text[begin : utf8(at + deleted)]
            if inserted:
                text.insert(begin, inserted)


def _closed_error(client: Client, url: str) -> CollabError:
    code, reason = client.close_code, client.close_reason
    if code is None:
        why = client.last_error or "the connection dropped"
        return CollabError(f"cannot connect to {document_of(url)}: {why}")
    return CollabError(f"the server closed the connection to {document_of(url)}: {code} {reason}")


async def _synced(client: Client, url: str, timeout: float) -> None:
    """Wait for the first sync; turn a refusal or a timeout into one clear error."""
    try:
        await client.synced(timeout)
    except ConnectionClosedError:
        raise _closed_error(client, url) from None
    except TimeoutError:
        raise CollabError(f"{document_of(url)} did not sync within {timeout:g} s") from None


async def get_content(url: str, root: str | None = None, timeout: float = 10) -> str:
    """A document's text, or JSON of a map or array root (or of every root).

    Without ``root``: the ``content`` text when the document has no other root, else JSON
    of every root. ``root`` is ``NAME`` or ``NAME:TYPE`` (text, map, array, xml).

    :raises CollabError: the server cannot be reached, refuses the name, or the root is
        missing.
    :raises ValueError: ``root`` names an unknown type.
    """
    url = websocket_url(url)
    spec = parse_root(root) if root is not None else None
    async with Client(url, reconnect=False) as client:
        await _synced(client, url, timeout)
        kinds = detect_roots(client.doc.get_update())
        if spec is None:
            if set(kinds) <= {"content"} and kinds.get("content") in (None, "text"):
                return str(client.doc.get("content", type=Text))
            content = {name: root_value(client.doc, name, kind) for name, kind in kinds.items()}
            return json.dumps(content, indent=2, ensure_ascii=False)
        name, kind = spec
        if name not in kinds:
            present = ", ".join(sorted(kinds)) or "none"
            raise CollabError(f"{document_of(url)} has no root {name!r}; its roots are {present}")
        kind = kind or kinds[name]
        value = root_value(client.doc, name, kind)
        if kind in ("text", "xml") or value is None:
            return str(value or "")
        return json.dumps(value, indent=2, ensure_ascii=False)


async def put_text(url: str, root: str, new: str, timeout: float = 30) -> tuple[int, int]:
    """Make the text ``root`` read ``new`` with a minimal diff, and wait until the server
    has it on disk. Returns (characters deleted, characters inserted).

    :raises CollabError: the server cannot be reached or refuses the name, the root is not
        a text, or the edit was not acknowledged within ``timeout``.
    """
    url = websocket_url(url)
    async with Client(url, ack=True, reconnect=False) as client:
        await _synced(client, url, timeout)
        kind = detect_roots(client.doc.get_update()).get(root)
        if kind not in (None, "text"):
            raise CollabError(f"root {root!r} of {document_of(url)} is a {kind}, not text")
        text = client.doc.get(root, type=Text)
        old = str(text)
        edits = text_edits(old, new)
        apply_text_edits(text, old, edits)
        try:
            await client.wait_durable(timeout)
        except ConnectionClosedError:
            raise _closed_error(client, url) from None
        except TimeoutError:
            raise CollabError(
                f"the server did not confirm the edit within {timeout:g} s; it may still store it"
            ) from None
    return sum(d for _, d, _ in edits), sum(len(i) for _, _, i in edits)


def _jsonable(value: Any) -> Any:
    """A shared type inserted by an event as plain Python (the rest: json's ``default``)."""
    to_py = getattr(value, "to_py", None)
    return to_py() if callable(to_py) else value


def _event_line(name: str, event: Any) -> dict[str, Any]:
    # pycrdt's events declare their attributes in __slots__ only: read them untyped.
    change: Any = event
    if isinstance(event, (TextEvent, ArrayEvent)):
        delta = [{k: _jsonable(v) for k, v in op.items()} for op in change.delta]
        return {"root": name, "delta": delta}
    if isinstance(event, MapEvent):
        keys = {
            key: {k: _jsonable(v) for k, v in entry.items()} for key, entry in change.keys.items()
        }
        return {"root": name, "keys": keys}
    return {"root": name, "event": type(event).__name__}


def _printer(name: str, emit: Callable[[str], None]) -> Callable[[Any], None]:
    # One argument only: pycrdt passes the transaction too to a callback that takes two.
    def observer(event: Any) -> None:
        emit(json.dumps(_event_line(name, event), default=str))

    return observer


async def watch(
    url: str,
    roots: Sequence[str],
    emit: Callable[[str], None],
    status: Callable[[str], None],
    timeout: float = 10,
) -> None:
    """Print each root's content, then one JSON line per change as it happens, until
    the server closes the document for good. Reconnects (and resyncs) on its own.

    ``emit`` gets the JSON lines; ``status`` one line per change of connection state.

    :raises CollabError: the first connection failed, or the server refused the document.
    :raises ValueError: a root spec names an unknown type.
    """
    url = websocket_url(url)
    specs = [parse_root(r) for r in roots]
    async with Client(url) as client:
        try:
            await client.wait_for(
                lambda: client.is_synced or client.last_error is not None, timeout=timeout
            )
        except ConnectionClosedError:
            raise _closed_error(client, url) from None
        if not client.is_synced:
            raise _closed_error(client, url)
        kinds = detect_roots(client.doc.get_update())
        watched = specs or [(name, kind) for name, kind in kinds.items() if kind is not None]
        if not watched:
            watched = [("content", "text")]
        types = {"text": Text, "map": Map, "array": Array}
        for name, kind in watched:
            kind = kind or kinds.get(name) or "text"
            if kind not in types:
                raise CollabError(f"collab watch follows text, map and array roots, not {kind}")
            shared = client.doc.get(name, type=types[kind])
            emit(json.dumps({"root": name, "value": root_value(client.doc, name, kind)}))
            shared.observe(_printer(name, emit))
        seen = [client.state]
        while True:
            try:
                await client.wait_for(lambda: client.state is not seen[0], timeout=float("inf"))
            except ConnectionClosedError:
                raise _closed_error(client, url) from None
            state = seen[0] = client.state
            if state in (ConnectionState.CONNECTED, ConnectionState.OFFLINE):
                why = f" ({client.last_error})" if client.last_error else ""
                status(f"{state.value}{why}")


__all__ = ["apply_text_edits", "get_content", "put_text", "text_edits", "watch", "websocket_url"]
