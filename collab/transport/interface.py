"""What the transport needs of the server it serves: a narrow interface, not the app.

:class:`collab.app.CollabApp` implements it; the websocket endpoint and the HTTP routes
are written against it alone, so ``collab.transport`` never imports ``collab.app`` (a
test walks the imports) and a test can serve them from anything that has these parts.
"""

from __future__ import annotations

from typing import Protocol

from collab.access import OriginPolicy, TokenAuth
from collab.config import Settings
from collab.hooks import Hooks
from collab.limits import ConnectionCaps
from collab.rooms import Peer, RoomManager
from collab.storage.base import Store
from collab.transport.feed import EventStreams


class Server(Protocol):
    settings: Settings
    #: The extensions, called by the endpoint (authenticate, disconnect) and the rooms.
    hooks: Hooks
    #: Every open connection (websockets and event streams): closed on shutdown.
    peers: set[Peer]
    #: The open event streams, fed by the store's commits.
    streams: EventStreams
    #: Which Host and Origin headers are accepted.
    origins: OriginPolicy
    #: Open connections, with their caps.
    caps: ConnectionCaps
    #: Authenticates HTTP requests by the same rule as websockets.
    token_auth: TokenAuth

    def log_throttled(self, key: str, message: str) -> None:
        """Log a warning, at most one per ``key`` every few seconds (floods stay quiet)."""
        ...

    @property
    def ready(self) -> bool:
        """The store and the rooms are open and the server is not stopping."""
        ...

    @property
    def stopping(self) -> bool:
        """Shutdown has begun: new connections are closed with 1001."""
        ...

    @property
    def rooms(self) -> RoomManager: ...

    @property
    def store(self) -> Store: ...
