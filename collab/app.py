"""build_app(settings, extensions=...): wires storage, bus, hooks, rooms and transport,
and owns the lifespan.

The app is plain ASGI. Under an ASGI server it starts on the ``lifespan`` startup event
and, on shutdown, closes every peer with 1001 and commits every queued update before
it returns. Mounted inside another ASGI app that does not forward lifespan events, wrap
the outer app's own lifespan in ``async with app.running(): ...``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext

import anyio

from collab.access import OriginPolicy, token_auth
from collab.bus import check_bus_url, open_bus
from collab.config import Settings
from collab.errors import CloseCode, CollabError
from collab.hooks import Hooks
from collab.limits import ConnectionCaps, LogThrottle
from collab.rooms import Peer, RoomManager
from collab.storage import Store, open_store
from collab.transport.feed import EventStreams
from collab.transport.forwarded import client_scope, parse_networks
from collab.transport.http import http_app
from collab.transport.types import Receive, Scope, Send
from collab.transport.websocket import websocket_endpoint
from collab.webhooks import Webhooks

log = logging.getLogger("collab")


class CollabApp:
    """The collab ASGI application (it is the transport's
    :class:`~collab.transport.interface.Server`)."""

    def __init__(self, settings: Settings, extensions: Sequence[object] = ()) -> None:
        self.settings = settings
        # Tokens and the anonymous access come first; the extensions given see (and may
        # change) the identity they decided.
        self.token_auth = token_auth(settings)
        # --webhook: told of what the extensions before it let through.
        self.webhooks = Webhooks(settings) if settings.webhooks else None
        self.hooks = Hooks([self.token_auth, *extensions, *filter(None, [self.webhooks])])
        self.origins = OriginPolicy.from_settings(settings)
        self.caps = ConnectionCaps.from_settings(settings)
        self._throttle = LogThrottle(log)
        try:
            self._proxies = parse_networks(settings.trusted_proxies)
        except ValueError as e:
            raise CollabError(f"--trusted-proxy: {e} (give an address or a network)") from None
        self.peers: set[Peer] = set()
        self.streams = EventStreams()
        self._http = http_app(self)
        self.ready = False
        self.stopping = False
        #: Why the lifespan startup failed, if it did (the ASGI server reports it its own way).
        self.startup_error: str | None = None
        self._store: Store | None = None
        self._rooms: RoomManager | None = None

    @property
    def rooms(self) -> RoomManager:
        if self._rooms is None:
            raise CollabError("the app is not running: the ASGI server sent no lifespan startup")
        return self._rooms

    @property
    def store(self) -> Store:
        if self._store is None:
            raise CollabError("the app is not running: the ASGI server sent no lifespan startup")
        return self._store

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[CollabApp]:
        """Open the store and the rooms; on exit close every peer and commit everything."""
        if self.token_auth.anonymous is None and self.token_auth.verifier is None:
            log.warning(
                "no token key (--jwt-secret, --jwt-public-key) and no anonymous access"
                " (--anonymous): every connection will be refused with 4401"
            )
        check_bus_url(self.settings.bus)  # a bad --bus fails before anything opens
        # The webhooks outlive the store, so the commits of its last flush are told too.
        async with self.webhooks if self.webhooks is not None else nullcontext():
            async with open_store(self.settings) as store, open_bus(self.settings, store) as bus:
                store.on_stored(self.streams.on_stored)  # the change feed (transport.sse)
                async with RoomManager(store, self.settings, hooks=self.hooks, bus=bus) as rooms:
                    self._store, self._rooms = store, rooms
                    self.ready, self.stopping = True, False
                    try:
                        yield self
                    finally:
                        self.close_peers()
                        self.ready = False
                # leaving the store commits whatever the peers sent last
            self._store = self._rooms = None

    def log_throttled(self, key: str, message: str) -> None:
        self._throttle.warning(key, message)

    async def wait_peers_closed(self, timeout: float) -> None:
        """Wait until every connection has ended, for at most ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while self.peers:
                await anyio.sleep(0.01)

    def close_peers(self) -> None:
        """Close every connection with 1001 so clients reconnect (to this server or another)."""
        self.stopping = True
        for peer in list(self.peers):
            peer.close_nowait(CloseCode.GOING_AWAY, "server is shutting down")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._proxies and kind != "lifespan":
            scope = client_scope(scope, self._proxies)
        if kind == "websocket":
            await websocket_endpoint(self, scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.running())
            except CollabError as e:
                self.startup_error = str(e)
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def build_app(settings: Settings | None = None, extensions: Sequence[object] = ()) -> CollabApp:
    """Create the collab ASGI app; nothing is opened until its lifespan starts.

    :param extensions: objects with the hooks of :class:`collab.hooks.Extension`, called
        in this order (``docs/extensions.md``).
    """
    return CollabApp(settings or Settings(), extensions)
