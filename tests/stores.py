"""Running the admin functions (async, on a store) from the synchronous SQLite tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from collab.storage.sqlite import SQLiteLog

T = TypeVar("T")


def on_store(path: Path, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await fn(store, *args, **kwargs)`` on the SQLite store at ``path``, opened as the
    admin CLI opens it (an existing file, no background work)."""

    async def main() -> T:
        async with SQLiteLog(path, create=False, background=False) as store:
            return await fn(store, *args, **kwargs)

    return anyio.run(main)
