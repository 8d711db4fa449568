"""Where documents live between restarts: an append-only log of Yjs updates per document."""

from __future__ import annotations

from collab.storage.base import StoredDoc, UpdateLog
from collab.storage.sqlite import SQLiteLog, open_log

__all__ = ["SQLiteLog", "StoredDoc", "UpdateLog", "open_log"]
