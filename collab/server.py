"""Run the app under hypercorn with collab's settings and signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import anyio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate

from collab.app import CollabApp, build_app
from collab.config import Settings

log = logging.getLogger("collab")


class _DeclineDeflate(PerMessageDeflate):
    """A permessage-deflate extension that declines every offer.

    hypercorn accepts permessage-deflate whenever a client offers it, and every browser and
    the Node ``ws`` client do. For Yjs traffic that is a poor trade: the updates are small
    binary diffs, and each connection would hold a zlib compressor and decompressor (about
    300 KiB, measured with tracemalloc) and spend CPU on every frame. y-websocket's and
    Hocuspocus's servers do not compress either. hypercorn has no setting for it, so
    ``collab serve`` swaps in this class (see ``_disable_compression``).
    """

    def accept(self, offer: str) -> None:
        return None


def _disable_compression() -> None:
    ws_stream.PerMessageDeflate = _DeclineDeflate  # type: ignore[attr-defined]


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.websocket_ping_interval = settings.ping_interval
    # hypercorn sends pings but never checks pongs; a read timeout of two ping intervals
    # drops a peer that stopped answering (a live one answers every ping).
    config.read_timeout = int(settings.ping_interval * 2) + 1
    config.websocket_max_message_size = settings.max_message_size
    # Every peer is closed before hypercorn's graceful wait starts; what is left is its
    # per-connection ping task, which sleeps a whole ping interval after its connection
    # closed. Waiting for those would only delay the exit.
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def _quiet_cancelled_connections(app: CollabApp) -> None:
    """Hide the tracebacks hypercorn's cancelled ping tasks leave at shutdown, nothing else."""
    loop = asyncio.get_running_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if app.stopping and isinstance(context.get("exception"), asyncio.CancelledError):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then close peers and commit every pending update."""
    app = build_app(settings)
    _quiet_cancelled_connections(app)
    _disable_compression()

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                app.close_peers()
                return

    log.info(
        "collab listening on ws://%s:%d/<doc-name> (db: %s)",
        settings.host,
        settings.port,
        settings.db_path,
    )
    await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
    log.info("stopped; every accepted update is committed")
