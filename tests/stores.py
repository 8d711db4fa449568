"""Stores for tests: the admin functions run on a SQLite store from synchronous tests, and
an UpdateLog that keeps appends in a list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from collab.storage.base import DocVersion, StoredDoc
from collab.storage.sqlite import SQLiteLog

T = TypeVar("T")


def on_store(path: Path, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await fn(store, *args, **kwargs)`` on the SQLite store at ``path``, opened as the
    admin CLI opens it (an existing file, no background work)."""

    async def main() -> T:
        async with SQLiteLog(path, create=False, background=False) as store:
            return await fn(store, *args, **kwargs)

    return anyio.run(main)


@dataclass
class ListLog:
    """An UpdateLog that keeps appends in a list: a room's store, without a database."""

    rows: list[bytes] = field(default_factory=list)
    durable_ticket: int = 0

    def append_nowait(self, room: str, update: bytes, *, epoch: int | None = None) -> int:
        self.rows.append(update)
        return len(self.rows)

    async def load(self, room: str) -> StoredDoc:
        return StoredDoc(list(self.rows))

    async def flush(self) -> None:
        pass

    def on_commit(self, callback: object) -> None:
        pass

    def on_stale(self, callback: object) -> None:
        pass

    def on_failed(self, callback: object) -> None:
        pass

    def on_stored(self, callback: object) -> None:
        pass

    async def versions(self, rooms: object) -> dict[str, DocVersion]:
        return {}
