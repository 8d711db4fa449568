"""Where documents live between restarts: an append-only log of Yjs updates per document."""

from __future__ import annotations

from collab.storage.base import DocVersion, StoredDoc, UpdateLog
from collab.storage.sqlite import SQLiteLog

__all__ = ["DocVersion", "SQLiteLog", "StoredDoc", "UpdateLog"]
