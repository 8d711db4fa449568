"""Run the app under uvicorn (the default) or hypercorn, with collab's settings and signals.

Both servers get the same settings: no permessage-deflate, the same frame size limit and
ping interval, and the same shutdown: every peer is sent 1001 first, then the server stops,
then the app's lifespan commits every pending update.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ws_stream
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from wsproto.events import Message
from wsproto.extensions import PerMessageDeflate

from collab.app import CollabApp, build_app
from collab.config import SERVERS, Settings
from collab.errors import CollabError

if TYPE_CHECKING:
    import uvicorn

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


class BoundedFrameBuffer(ws_stream.WebsocketBuffer):
    """hypercorn's buffer of the websocket message being received, bounded three ways.

    hypercorn checks only the size of each message. Here a message must also arrive
    whole within ``deadline`` seconds of its first byte (150 connections each trickling
    a partial 15 MiB frame, one byte every 5 s, once pinned 2.3 GiB for good), and the
    bytes of incomplete messages of all connections together stay under ``total_cap``.
    Each breach closes that connection with 1009, as an oversized message does.

    Once a message was refused, the rest of it is dropped as it arrives: hypercorn
    would otherwise refuse it again on every chunk, fail to send a second close frame,
    stop reading, and leave the client waiting for the closing handshake until the next
    ping (20 s; uvicorn closes at once).
    """

    #: Bytes held by incomplete messages of every connection.
    partial_total = 0
    deadline = 30.0
    total_cap = 256 * 1024 * 1024

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self.started = 0.0
        self.refused = False

    def extend(self, event: Message[Any]) -> None:
        if self.refused:
            return
        now = time.monotonic()
        if self.value is None:
            self.started = now
        before = self.length
        try:
            super().extend(event)
        except ws_stream.FrameTooLargeError:
            BoundedFrameBuffer.partial_total += self.length - before
            self._refuse()
        BoundedFrameBuffer.partial_total += self.length - before
        if now - self.started > self.deadline or self.partial_total > self.total_cap:
            self._refuse()

    def _refuse(self) -> None:
        self.clear()
        self.refused = True
        raise ws_stream.FrameTooLargeError()

    def clear(self) -> None:
        BoundedFrameBuffer.partial_total -= self.length
        super().clear()


def _bound_frames(settings: Settings) -> None:
    BoundedFrameBuffer.deadline = settings.frame_deadline
    BoundedFrameBuffer.total_cap = settings.max_partial_bytes
    ws_stream.WebsocketBuffer = BoundedFrameBuffer  # type: ignore[misc]


def _responding(protocol: object) -> bool:
    """Whether a hypercorn connection is in the middle of an HTTP/1.1 response."""
    stream = getattr(getattr(protocol, "protocol", None), "stream", None)
    return isinstance(stream, HTTPStream) and stream.state == ASGIHTTPState.RESPONSE


async def _read_data(self: TCPServer) -> None:
    # hypercorn's read loop, with one change. Its read timeout (our stand-in for checking
    # pongs, below) also ended a response still streaming to a client with nothing to
    # send: an event stream (GET /api/docs/{name}/events) was cut every two ping
    # intervals. Such a response is watched by its own writes (keep-alive comments, and a
    # bounded outbox), so it outlives the timeout; every other read keeps it.
    while not self.reader.at_eof():
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 16), self.config.read_timeout)
        except TimeoutError:
            if _responding(self.protocol):
                continue
            break
        except OSError:  # the connection failed (ssl.SSLError is one too)
            break
        await self.protocol.handle(RawData(data))
    await self.protocol.handle(Closed())


def _keep_streaming_responses() -> None:
    TCPServer._read_data = _read_data  # type: ignore[method-assign]


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
    """Serve until SIGINT or SIGTERM, then close peers and commit every pending update.

    :raises CollabError: the app could not start (its database cannot be opened, say).
    """
    await serve_app(build_app(settings), settings)


async def serve_app(app: CollabApp, settings: Settings) -> None:
    """:func:`serve` for an app built by the caller (bench/conn_memory.py watches its peers)."""
    if settings.server not in SERVERS:
        raise CollabError(f"unknown server {settings.server!r}: pick one of {', '.join(SERVERS)}")
    if settings.server == "uvicorn":
        _require_uvicorn()  # before announcing anything
    _quiet_cancelled_connections(app)
    log.info(
        "collab listening on ws://%s:%d/<doc-name> (db: %s, server: %s)",
        settings.host,
        settings.port,
        settings.db_path,
        settings.server,
    )
    try:
        if settings.server == "uvicorn":
            await _serve_uvicorn(app, settings)
        else:
            await _serve_hypercorn(app, settings)
    except (Exception, SystemExit):
        # Both servers turn a failed lifespan startup into an error of their own (hypercorn
        # raises, uvicorn exits); the app knows what actually went wrong.
        if app.startup_error is not None:
            raise CollabError(app.startup_error) from None
        raise
    log.info("stopped; every accepted update is committed")


async def _until_signal(app: CollabApp) -> None:
    """Return on SIGINT or SIGTERM, once every peer has been sent its 1001."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            app.close_peers()
            return


async def _serve_hypercorn(app: CollabApp, settings: Settings) -> None:
    _disable_compression()
    _bound_frames(settings)
    _keep_streaming_responses()
    await hypercorn_serve(
        app,  # type: ignore[arg-type]
        hypercorn_config(settings),
        shutdown_trigger=lambda: _until_signal(app),
    )


# -- uvicorn -----------------------------------------------------------------------


def uvicorn_config(app: CollabApp, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for ``app``, equivalent to the hypercorn ones above."""
    import uvicorn

    from collab.uvicorn_protocol import bounded_sansio_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=bounded_sansio_protocol(settings.frame_deadline, settings.max_partial_bytes),
        ws_max_size=settings.max_message_size,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_interval,  # uvicorn does check the pongs
        ws_per_message_deflate=False,  # see _DeclineDeflate
        lifespan="on",
        log_config=None,  # collab's logging setup applies
        access_log=False,
        timeout_graceful_shutdown=1,
    )


UVICORN_HINT = "--server uvicorn needs uvicorn: pip install 'collab[uvicorn]'"


def _require_uvicorn() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise CollabError(UVICORN_HINT) from None


async def _serve_uvicorn(app: CollabApp, settings: Settings) -> None:
    _require_uvicorn()
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # collab takes the signals itself: it closes every peer with 1001 and lets the
            # close frames go out before uvicorn closes what is left with 1012.
            yield

    # uvicorn logs each connection at INFO and each frame at DEBUG: too much for a server
    # of many long-lived connections. Its warnings and errors still show.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server = Server(uvicorn_config(app, settings))
    # Bound here, so that a port in use is an OSError the CLI explains (uvicorn would log
    # it and exit).
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server((settings.host, settings.port), family=family, backlog=2048)

    async def stop_on_signal() -> None:
        await _until_signal(app)
        await app.wait_peers_closed(1.0)
        server.should_exit = True

    exited = False
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal)
        try:
            await server.serve(sockets=[listener])
        except SystemExit:  # uvicorn's answer to a failed lifespan startup
            exited = True
        tg.cancel_scope.cancel()
    if exited:
        raise CollabError(app.startup_error or "uvicorn could not start (see the log above)")
