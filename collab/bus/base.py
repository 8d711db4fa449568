"""The bus interfaces: a :class:`Bus` carries updates and awareness between nodes.

A node (one :class:`collab.rooms.RoomManager`) joins a bus and subscribes to each
document it opens, before it loads it, so that nothing published while it loads is
missed. Whatever a room accepts from its own connections, it publishes: the update as
the document integrated it, and each awareness change. A bus delivers a message to
every other node subscribed to that document, never back to the one that published it;
the receiving room applies it and passes it to its connections, but does not store it
again (the publishing node did). Applying an update twice is harmless to the CRDT;
losing one is not, so a bus that can lose messages must heal by other means: a bus
across machines exchanges each open document's state (:meth:`BusNode.state_of`,
:meth:`BusNode.on_bus_state`) periodically and after every gap, and heartbeats, so
that the awareness states of a node that died are removed (:meth:`BusNode.on_node_gone`).

A bus also tells a node when the stored document moved without it: another process
(``collab docs import``, ``delete``, ``restore``) appended to it or retired its epoch.
The in-process bus finds that out by polling the store's versions
(:meth:`collab.storage.base.UpdateLog.versions`); the node then reloads or closes the
room (:meth:`BusNode.on_stored_versions`).

Publishing never blocks: a bus that sends over the network queues in memory, bounded,
and a full queue is the bus's failure to report, not the room's to wait on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from collab.storage.base import DocVersion


class BusNode(Protocol):
    """What a bus delivers to: one node's rooms."""

    #: Unique per process, so that a bus never delivers a node's own messages to it.
    node_id: str

    def on_bus_update(self, document: str, update: bytes) -> None:
        """Another node accepted ``update`` for ``document``: apply it, do not store it."""
        ...

    def on_bus_awareness(self, document: str, payload: bytes, origin: str) -> None:
        """The connections of node ``origin`` changed their awareness states."""
        ...

    def on_node_gone(self, origin: str) -> None:
        """Node ``origin`` stopped heartbeating (or left): remove, in every room, the
        awareness states its connections had."""
        ...

    def state_of(self, document: str) -> bytes | None:
        """``document``'s state as this node holds it, for other nodes to compare with
        theirs (:meth:`on_bus_state`); None while it is not open here. Opaque to the bus."""
        ...

    def on_bus_state(self, document: str, state: bytes) -> tuple[bytes | None, bool]:
        """Another node's :meth:`state_of` ``document``: return the update it lacks (None:
        nothing), and whether it holds something this node lacks. Bad bytes are logged and
        answered with ``(None, False)``."""
        ...

    def own_awareness(self, document: str) -> bytes | None:
        """The awareness states of this node's own connections to ``document``, as news
        to any node (None: none)."""
        ...

    def open_documents(self) -> Mapping[str, object]:
        """The documents this node has open, each with a token of the room holding it.

        The token is handed back to :meth:`on_stored_versions`, which acts only on rooms
        that are still the same one (a room reloaded since is not judged by old versions).
        """
        ...

    async def on_stored_versions(
        self, polled: Mapping[str, object], versions: Mapping[str, DocVersion]
    ) -> None:
        """The stored epoch and generation of the documents in ``polled`` (from
        :meth:`open_documents`): retire rooms whose epoch changed, catch up the others."""
        ...


class Bus(Protocol):
    """Fan-out of accepted updates and awareness between the nodes serving a document."""

    def join(self, node: BusNode) -> None:
        """Start delivering to ``node`` (nothing until it subscribes to a document)."""
        ...

    def leave(self, node: BusNode) -> None:
        """Stop delivering to ``node`` and forget its subscriptions."""
        ...

    async def subscribe(self, node: BusNode, document: str) -> None:
        """Deliver ``document``'s messages to ``node`` from now on; returns once they will be."""
        ...

    def unsubscribe(self, node: BusNode, document: str) -> None: ...

    def publish_update(self, node: BusNode, document: str, update: bytes) -> None:
        """``node`` accepted ``update`` (already queued for its store): tell the others."""
        ...

    def publish_awareness(self, node: BusNode, document: str, payload: bytes) -> None:
        """``node``'s connections changed awareness states (a y-protocols awareness update)."""
        ...

    async def poll(self) -> None:
        """Look for changes to the stored documents that no node published, now."""
        ...
