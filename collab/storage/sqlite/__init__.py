"""The SQLite backend: one file (or ``:memory:``), WAL, one connection per process.

``schema`` opens the database and migrates it, ``queries`` holds the SQL, ``store`` is
:class:`SQLiteLog` (both storage protocols), ``backup`` is ``collab backup``. Only
``collab.storage`` imports this package; the rest of collab knows the protocols.
"""

from __future__ import annotations

from collab.storage.base import HistoryUnavailableError
from collab.storage.sqlite.backup import backup_database
from collab.storage.sqlite.queries import (
    DEFAULT_RETENTION,
    append_updates,
    compact_doc,
    delete_doc,
    doc_names,
    existing_doc,
    list_docs,
    read_at,
    read_compaction,
    read_doc,
    read_history,
    read_versions,
    replace_doc,
    swap_compaction,
)
from collab.storage.sqlite.schema import (
    BUSY_TIMEOUT_MS,
    connect,
    migrations,
    read_transaction,
    write_transaction,
)
from collab.storage.sqlite.store import SQLiteLog

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_RETENTION",
    "HistoryUnavailableError",
    "SQLiteLog",
    "append_updates",
    "backup_database",
    "compact_doc",
    "connect",
    "delete_doc",
    "doc_names",
    "existing_doc",
    "list_docs",
    "migrations",
    "read_at",
    "read_compaction",
    "read_doc",
    "read_history",
    "read_transaction",
    "read_versions",
    "replace_doc",
    "swap_compaction",
    "write_transaction",
]
