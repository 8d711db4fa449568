"""Yjs updates as an editor makes them, for tests that store or replay them."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text


def keystrokes(text: str, doc: Doc[Any] | None = None, root: str = "content") -> list[bytes]:
    """One update per character typed at the end of ``root`` (of ``doc``, or a new doc)."""
    doc = doc if doc is not None else Doc()
    shared = doc.get(root, type=Text)
    updates = []
    for char in text:
        before = doc.get_state()
        shared += char
        updates.append(doc.get_update(before))
    return updates
