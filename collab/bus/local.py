"""The in-process bus: the nodes of one process, and the store's versions polled.

One node is what ``collab serve`` runs: then publishing reaches nobody, and the only work
is the poll, which notices what other processes (the admin CLI) did to the store. Two
:class:`collab.rooms.RoomManager` on one ``LocalBus`` behave as two nodes of a cluster
sharing a store, which is how the bus contract is tested without a network.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
from anyio import AsyncContextManagerMixin

from collab.bus.base import BusNode
from collab.errors import StoreError
from collab.storage.base import UpdateLog

log = logging.getLogger("collab.bus")


class LocalBus(AsyncContextManagerMixin):
    """Delivers between nodes of one process; polls ``store`` every ``poll_interval`` s.

    Without a store (or outside ``async with``) it does not poll; :meth:`poll` still can.
    """

    def __init__(self, store: UpdateLog | None = None, poll_interval: float = 2.0) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._nodes: list[BusNode] = []
        self._subscribers: defaultdict[str, list[BusNode]] = defaultdict(list)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[LocalBus]:
        async with anyio.create_task_group() as tg:
            if self.store is not None:
                tg.start_soon(self._poll_periodically)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def join(self, node: BusNode) -> None:
        if node not in self._nodes:
            self._nodes.append(node)

    def leave(self, node: BusNode) -> None:
        if node in self._nodes:
            self._nodes.remove(node)
        for document in list(self._subscribers):
            self.unsubscribe(node, document)

    async def subscribe(self, node: BusNode, document: str) -> None:
        subscribers = self._subscribers[document]
        if node not in subscribers:
            subscribers.append(node)

    def unsubscribe(self, node: BusNode, document: str) -> None:
        subscribers = self._subscribers.get(document)
        if subscribers is None:
            return
        if node in subscribers:
            subscribers.remove(node)
        if not subscribers:
            del self._subscribers[document]

    def publish_update(self, node: BusNode, document: str, update: bytes) -> None:
        for other in self._subscribers.get(document, ()):
            if other is not node:
                other.on_bus_update(document, update)

    def publish_awareness(self, node: BusNode, document: str, payload: bytes) -> None:
        for other in self._subscribers.get(document, ()):
            if other is not node:
                other.on_bus_awareness(document, payload, node.node_id)

    async def poll(self) -> None:
        if self.store is None:
            return
        for node in list(self._nodes):
            polled = node.open_documents()
            if not polled:
                continue
            versions = await self.store.versions(list(polled))
            await node.on_stored_versions(polled, versions)

    async def _poll_periodically(self) -> None:
        while True:
            await anyio.sleep(self.poll_interval)
            try:
                await self.poll()
            except StoreError as e:
                log.error("cannot poll document versions: %s", e)
