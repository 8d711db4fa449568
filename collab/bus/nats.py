"""The NATS bus: ``collab serve --bus nats://HOST:4222``, over core NATS subjects.

Core NATS, not JetStream: like Redis pub/sub it delivers to whoever is subscribed now and
keeps nothing, and the state exchange of :mod:`collab.bus.network` heals what a blip
lost, so JetStream's replay would buy nothing a node needs (docs/bus.md).

nats-py reconnects and resubscribes on its own; here it is told not to, so that a lost
connection ends and :class:`~collab.bus.network.NetworkBus` connects afresh and syncs
every open document, knowing that a gap happened.
"""

from __future__ import annotations

from typing import Any

import anyio
import nats
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from collab.bus.network import BusConnectionError, NetworkBus

#: Seconds to connect, and to wait for the server to confirm (flush) a subscription.
TIMEOUT = 5.0
#: Messages read from the server but not yet handled, at most; past it nats-py holds
#: them per subscription, up to the limits below, then drops them (a slow consumer).
INBOX_SIZE = 1024
PENDING_MESSAGES = 16 * 1024
PENDING_BYTES = 64 * 1024 * 1024

_ERRORS = (NatsError, OSError, TimeoutError)


class NatsTransport:
    """One NATS connection, its subscriptions feeding one bounded inbox."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: The server's max_payload (1 MB unless configured), once connected.
        self.max_payload = 1024 * 1024
        self._nc: NatsClient | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._inbox_in: MemoryObjectSendStream[tuple[str, bytes]] | None = None
        self._inbox: MemoryObjectReceiveStream[tuple[str, bytes]] | None = None

    async def connect(self) -> None:
        inbox_in, self._inbox = anyio.create_memory_object_stream[tuple[str, bytes]](INBOX_SIZE)
        self._inbox_in = inbox_in

        async def closed() -> None:
            inbox_in.close()  # receive() ends: the bus reconnects

        async def error(e: Exception) -> None:
            pass  # a lost connection closes it (allow_reconnect=False): closed() reports

        try:
            self._nc = await nats.connect(
                self.url,
                allow_reconnect=False,
                connect_timeout=int(TIMEOUT),
                ping_interval=5,
                max_outstanding_pings=2,
                closed_cb=closed,
                disconnected_cb=closed,
                error_cb=error,
            )
        except _ERRORS as e:
            raise BusConnectionError(f"{self.url}: {e!r}") from e
        self.max_payload = self._nc.max_payload

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._subscriptions.clear()
        inbox_in, inbox = self._inbox_in, self._inbox
        self._inbox_in = self._inbox = None
        if inbox_in is not None and inbox is not None:
            inbox_in.close()
            inbox.close()
        if nc is not None:
            with anyio.move_on_after(2):
                try:
                    await nc.close()
                except _ERRORS:
                    pass  # closing a connection that already failed: nothing to save

    def _live(self) -> NatsClient:
        if self._nc is None or not self._nc.is_connected:
            raise BusConnectionError("not connected")
        return self._nc

    async def _on_message(self, message: Msg) -> None:
        if self._inbox_in is None:
            return
        try:
            await self._inbox_in.send((message.subject, message.data))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the connection is being closed: the reconnect's sync heals

    async def subscribe(self, channel: str) -> None:
        nc = self._live()
        if channel in self._subscriptions:
            return
        try:
            self._subscriptions[channel] = await nc.subscribe(
                channel,
                cb=self._on_message,
                pending_msgs_limit=PENDING_MESSAGES,
                pending_bytes_limit=PENDING_BYTES,
            )
            await nc.flush(timeout=int(TIMEOUT))  # the server has the subscription
        except _ERRORS as e:
            raise BusConnectionError(f"cannot subscribe: {e!r}") from e

    async def unsubscribe(self, channel: str) -> None:
        subscription = self._subscriptions.pop(channel, None)
        if subscription is None:
            return
        try:
            await subscription.unsubscribe()
        except _ERRORS as e:
            raise BusConnectionError(f"cannot unsubscribe: {e!r}") from e

    async def publish(self, channel: str, data: bytes) -> None:
        nc = self._live()
        try:
            await nc.publish(channel, data)
        except _ERRORS as e:
            raise BusConnectionError(f"cannot publish: {e!r}") from e

    async def receive(self) -> tuple[str, bytes]:
        if self._inbox is None:
            raise BusConnectionError("not connected")
        try:
            return await self._inbox.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise BusConnectionError("the connection to NATS was lost") from None


def open_nats_bus(url: str, **options: Any) -> NetworkBus:
    """A bus over the NATS server at ``url`` (``nats://HOST:PORT``); the options are
    :class:`~collab.bus.network.NetworkBus`'s."""
    return NetworkBus(NatsTransport(url), name="nats", **options)
