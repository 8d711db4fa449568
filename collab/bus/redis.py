"""The Redis bus: ``collab serve --bus redis://HOST:6379/0``, over Redis pub/sub.

Pub/sub, not streams (docs/bus.md says why at more length): a message is worth something
only to the nodes that have its document open right now, a node that opens a document
reads it from the store, and the state exchange of :mod:`collab.bus.network` heals what
a blip lost, which a stream's replay would also need for a node that was away longer
than the stream is kept. Pub/sub keeps nothing in Redis, needs no trimming and no
consumer bookkeeping, and costs one PUBLISH per message.

redis-py's pub/sub reconnects and resubscribes on its own, silently; here any failure
ends the connection instead, so that :class:`~collab.bus.network.NetworkBus` knows a gap
happened, connects afresh and syncs every open document.
"""

from __future__ import annotations

from typing import Any

import anyio
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from collab.bus.network import BusConnectionError, NetworkBus

#: Largest message published: Redis drops a subscriber whose output buffer passes 32 MB
#: (``client-output-buffer-limit pubsub``), so a message must stay well under it.
MAX_PAYLOAD = 16 * 1024 * 1024
#: Seconds to connect, and to wait for a command's reply.
TIMEOUT = 5.0

#: Messages kept while subscribing before the bus reads (the nodes channel's, at connect).
MAX_EARLY = 1024

_ERRORS = (RedisError, OSError, EOFError, RuntimeError)


class RedisTransport:
    """One Redis connection for subscriptions and a small pool for publishing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.max_payload = MAX_PAYLOAD
        self._client: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        # Subscriptions sent, by channel, set once Redis confirms them (while receive()
        # reads; before it does, subscribe() reads the confirmation itself).
        self._confirmations: dict[str, anyio.Event] = {}
        self._reading = False
        # Messages read by subscribe() while it waited, for receive() to return first.
        self._early: list[tuple[str, bytes]] = []

    async def connect(self) -> None:
        try:
            self._client = redis.asyncio.Redis.from_url(
                self.url,
                socket_connect_timeout=TIMEOUT,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),  # a failure must surface, not be retried away
                max_connections=4,
            )
            await self._client.ping()
            self._pubsub = self._client.pubsub()
        except _ERRORS as e:
            raise BusConnectionError(f"{self.url}: {e}") from e

    async def close(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        self._reading = False
        self._early.clear()
        with anyio.move_on_after(2):
            try:
                if pubsub is not None:
                    # Its own connection first, waiting for the socket to close: a
                    # receive() blocked on it fails at once, and aclose() then has no
                    # reader to race (redis-py#3941, which leaves the socket unclosed).
                    if pubsub.connection is not None:
                        await pubsub.connection.disconnect()
                    await pubsub.aclose()
                if client is not None:
                    await client.aclose()
            except _ERRORS:
                pass  # closing a connection that already failed: nothing to save

    def _live(self) -> tuple[redis.asyncio.Redis, Any]:
        if self._client is None or self._pubsub is None:
            raise BusConnectionError("not connected")
        return self._client, self._pubsub

    async def subscribe(self, channel: str) -> None:
        _, pubsub = self._live()
        confirmed = self._confirmations[channel] = anyio.Event()
        try:
            await pubsub.subscribe(channel)
            # Once Redis confirms, whatever another node publishes reaches this node.
            with anyio.fail_after(TIMEOUT):
                while not self._reading and not confirmed.is_set():
                    message = await pubsub.get_message(timeout=TIMEOUT)
                    if message is not None:
                        self._note(message)
                await confirmed.wait()
        except TimeoutError:
            raise BusConnectionError(
                f"Redis did not confirm a subscription in {TIMEOUT} s"
            ) from None
        except _ERRORS as e:
            raise BusConnectionError(f"cannot subscribe: {e!r}") from e
        finally:
            if self._confirmations.get(channel) is confirmed:
                del self._confirmations[channel]

    def _note(self, message: dict[str, Any]) -> tuple[str, bytes] | None:
        """A message read: a subscription confirmed (None), or one to return."""
        kind, channel, data = message.get("type"), message.get("channel"), message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode(errors="replace")
        if not isinstance(channel, str):
            return None
        if kind == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None:
                confirmed.set()
        elif kind == "message" and isinstance(data, bytes):
            if self._reading:
                return channel, data
            if len(self._early) < MAX_EARLY:
                self._early.append((channel, data))
        return None

    async def unsubscribe(self, channel: str) -> None:
        _, pubsub = self._live()
        try:
            await pubsub.unsubscribe(channel)
        except _ERRORS as e:
            raise BusConnectionError(f"cannot unsubscribe: {e}") from e

    async def publish(self, channel: str, data: bytes) -> None:
        client, _ = self._live()
        try:
            with anyio.fail_after(TIMEOUT):
                await client.publish(channel, data)
        except (TimeoutError, *_ERRORS) as e:
            raise BusConnectionError(f"cannot publish: {e!r}") from e

    async def receive(self) -> tuple[str, bytes]:
        self._reading = True
        if self._early:
            return self._early.pop(0)
        while True:
            _, pubsub = self._live()
            try:
                message = await pubsub.get_message(timeout=None)
            except _ERRORS as e:
                raise BusConnectionError(f"cannot read: {e!r}") from e
            if message is not None and (received := self._note(message)) is not None:
                return received


def open_redis_bus(url: str, **options: Any) -> NetworkBus:
    """A bus over the Redis server at ``url`` (``redis://HOST:PORT/DB``); the options are
    :class:`~collab.bus.network.NetworkBus`'s."""
    return NetworkBus(RedisTransport(url), name="redis", **options)
