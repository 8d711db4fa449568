"""The PostgreSQL backend: the shared store for several nodes (``--db postgresql://...``).

``schema`` holds the migrations and the connection parameters, ``append`` the group
commit's SQL (the commit thread's own connection), ``queries`` everything else (an async
psycopg-pool), ``store`` is :class:`PostgresStore` (both storage protocols), ``backup`` is
``collab backup`` (a logical copy into a SQLite file). Only ``collab.storage`` imports
this package; the rest of collab knows the protocols.
"""

from __future__ import annotations

from collab.storage.postgres.backup import backup_to_sqlite
from collab.storage.postgres.schema import MIGRATIONS, conninfo, describe, migrate
from collab.storage.postgres.store import PostgresStore

__all__ = ["MIGRATIONS", "PostgresStore", "backup_to_sqlite", "conninfo", "describe", "migrate"]
