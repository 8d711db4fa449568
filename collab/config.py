"""Settings: one frozen dataclass, filled from CLI flags and ``COLLAB_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The ASGI servers ``collab serve --server`` runs the app under; the first is the default.
SERVERS = ("hypercorn", "uvicorn")


@dataclass(frozen=True, slots=True)
class Settings:
    #: Interface to listen on.
    host: str = "127.0.0.1"
    #: TCP port; 1234 is the y-websocket convention.
    port: int = 1234
    #: The store (``collab.storage.open_store``): a SQLite database file, created with its
    #: parent folder on first use, given as a path (``data/collab.db``) or a URL
    #: (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``). ``:memory:``
    #: keeps everything in memory (nothing survives a restart).
    db: Path | str = Path("data/collab.db")
    #: Longest time an accepted update waits before its group commit, in seconds. Lower
    #: means less to lose on a power cut and more transactions per second; an update is
    #: never broadcast later because of it (fan-out does not wait for the disk).
    commit_delay: float = 0.02
    #: Largest websocket frame accepted, in bytes. Bigger frames close the peer with 1009.
    max_message_size: int = 16 * 1024 * 1024
    #: Deepest nesting of shared types (a map in a map ...) a document may reach; an
    #: update that would nest deeper is refused with 1007 before it is applied. Real
    #: documents stay under 20; yrs crashes past ~32,000 (collab.structs).
    max_depth: int = 1000
    #: Frames queued for one peer before it counts as too slow and is closed with 4500.
    #: Each queued frame is shared between peers, so the cost is a pointer per frame.
    send_queue_size: int = 4096
    #: Seconds between websocket pings; a peer that does not answer is dropped.
    ping_interval: float = 20.0
    #: Seconds a document with no connections stays in memory before it is unloaded.
    idle_unload: float = 60.0
    #: Seconds without renewal after which an awareness state expires (y-protocols: 30).
    awareness_timeout: float = 30.0
    #: Compact a document's log when it holds more than this many rows ...
    compact_rows: int = 500
    #: ... or more than this many bytes of updates.
    compact_bytes: int = 1024 * 1024
    #: Seconds raw updates are kept after compaction, so a document can be read (and
    #: restored) as it was at any time within them; 0 keeps none. Costs about the size of
    #: the uncompacted log of that period (docs/storage.md).
    retention: float = 7 * 24 * 3600.0
    #: SQLite ``PRAGMA synchronous`` with WAL: ``NORMAL`` survives a process crash,
    #: ``FULL`` also a power loss, at an fsync per group commit (docs/storage.md).
    synchronous: str = "NORMAL"
    #: The ASGI server that runs the app: ``hypercorn`` or ``uvicorn`` (an extra:
    #: ``pip install 'collab[uvicorn]'``; faster per frame, see the README).
    server: str = "hypercorn"
    #: Python logging level name.
    log_level: str = "info"

    @property
    def db_path(self) -> str:
        return str(self.db)
