"""Where documents live between restarts: an append-only log of Yjs updates per document.

:func:`open_store` is the one place that knows the backends: it reads the store URL
(``Settings.db``) and returns a :class:`~collab.storage.base.Store`, which is both the
server's :class:`~collab.storage.base.UpdateLog` and the admin commands'
:class:`~collab.storage.base.DocumentStore`. A new backend is one module implementing
``Store``, one entry in ``open_store``'s table, and one entry in the fixture of
``tests/test_storage_conformance.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from collab.errors import StoreError
from collab.storage.base import (
    DocumentStore,
    DocVersion,
    Store,
    StoredDoc,
    UpdateLog,
)
from collab.storage.sqlite import SQLiteLog

if TYPE_CHECKING:
    from collab.config import Settings

#: A URL is ``scheme://...``; anything else (``data/collab.db``, ``C:\\x.db``) is a path.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


class Opener(Protocol):
    """How a backend opens (but does not yet enter) a store at ``location``, the part of
    the URL after ``scheme://``."""

    def __call__(
        self, settings: Settings, location: str, *, create: bool, background: bool
    ) -> Store: ...


def _sqlite(settings: Settings, location: str, *, create: bool, background: bool) -> Store:
    # sqlite:///relative/path.db, sqlite:////absolute/path.db (SQLAlchemy's forms), and
    # sqlite:// or sqlite:///:memory: for a database in memory.
    if location in ("", "/:memory:"):
        path = ":memory:"
    elif location == "/":
        raise StoreError("no database given: pass a file path, :memory: or sqlite:///PATH")
    elif location.startswith("/"):
        path = location[1:]
    else:
        raise StoreError(
            f"{settings.db_path!r} is not a SQLite URL: write sqlite:///relative/path.db"
            " or sqlite:////absolute/path.db (no host)"
        )
    return SQLiteLog.from_settings(settings, path, create=create, background=background)


def _postgres(settings: Settings, location: str, *, create: bool, background: bool) -> Store:
    # The whole URL goes to libpq: postgresql://user@host:5432/dbname?options=...
    # Imported here: psycopg and its pool take ~0.2 s to import, which SQLite users skip.
    from collab.storage.postgres import PostgresStore

    return PostgresStore.from_settings(settings, create=create, background=background)


def open_store(settings: Settings, *, create: bool = True, background: bool = True) -> Store:
    """The store ``settings.db`` names, ready for ``async with``.

    ``settings.db`` is a file path (``data/collab.db``: SQLite), ``:memory:`` (SQLite in
    memory, nothing kept), or a URL: ``sqlite:///relative/path.db``,
    ``sqlite:////absolute/path.db``, or ``postgresql://user@host:5432/dbname`` (also
    ``postgres://``; the database must exist, collab creates its tables).

    :param create: create the database if it does not exist (the admin commands pass
        False: a mistyped ``--db`` is an error, not a new empty database).
    :param background: run the server's background compaction and history pruning (the
        admin commands pass False, so they never prune with a retention of their own).
    :raises StoreError: the URL names no backend collab has; opening itself fails on
        entering the ``async with``.
    """
    backends: dict[str, Opener] = {
        "sqlite": _sqlite,
        "postgresql": _postgres,
        "postgres": _postgres,
    }
    url = settings.db_path
    match = _URL.match(url)
    if match is None:  # a plain path: a SQLite file
        scheme, location = "sqlite", "/" + url
    else:
        scheme, location = match.group(1).lower(), match.group(2)
    if scheme not in backends:
        supported = ", ".join(f"{name}://" for name in backends)
        raise StoreError(
            f"cannot open {url!r}: unknown store URL scheme {scheme!r}; supported are a"
            f" file path, :memory: and {supported} URLs"
        )
    return backends[scheme](settings, location, create=create, background=background)


__all__ = [
    "DocVersion",
    "DocumentStore",
    "SQLiteLog",
    "Store",
    "StoredDoc",
    "UpdateLog",
    "open_store",
]
