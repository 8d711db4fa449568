"""Extensions: the hooks through which code outside collab sees and steers what happens.

An extension is an object with any of the methods of :class:`Extension` (subclass it, or
write the methods on any object). ``build_app(settings, extensions=[...])`` calls them in
the order given, each with one small frozen payload:

==================  =====  ==============================================================
hook                kind   when
==================  =====  ==============================================================
on_authenticate     async  a connection arrives, before its document is opened; returns
                           the :class:`Identity` it gets, ``None`` to leave it as the
                           extensions before decided, or raises :class:`Refused`
on_load             async  a document was loaded from the store, before any peer sees it
on_change           sync   an update was accepted into a document (its origin attached)
on_store            sync   an accepted update is durable in the store
on_disconnect       async  a connection ended (its close code attached)
==================  =====  ==============================================================

``on_change`` and ``on_store`` run on the event loop for every edit, so they are plain
functions that must return at once: to do I/O, hand the payload to a task of your own
through a bounded queue. The async hooks are awaited; a slow one delays only the
connection (or first load) it is about.

An exception other than :class:`Refused` from a hook is a bug in that extension: it is
logged with its traceback, and the one connection it was about is closed with 1011
(``on_change``: the connection whose update it was; ``on_load``: the connection that
caused the load, which is not kept). Nobody else is affected. ``on_store`` and
``on_disconnect`` have no connection left to close, so their exceptions are only logged.

See ``docs/extensions.md`` for a complete example.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from collab.auth import Access
from collab.errors import CloseCode, CollabError

log = logging.getLogger("collab.hooks")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is and what it may do with its document."""

    #: What it may do; a READ connection's updates are refused.
    access: Access
    #: Who it is (a token's ``sub``), or None for an anonymous connection.
    user: str | None = None
    #: When its credentials expire (Unix seconds); the connection is closed then.
    expires_at: float | None = None
    #: Whatever the authenticating extension wants to keep (a token's claims, say).
    claims: Mapping[str, Any] = field(default_factory=dict)


#: What a connection is before any extension said otherwise.
ANONYMOUS_WRITER = Identity(Access.WRITE)


class Refused(CollabError):
    """Raised by ``on_authenticate``: the connection is closed with ``close_code``.

    The reason reaches the client in the close frame, so it must not leak anything.
    """

    def __init__(self, reason: str, close_code: CloseCode = CloseCode.UNAUTHORIZED) -> None:
        super().__init__(reason)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an update came from."""

    #: "connection" (a client of this node), "bus" (another node) or "store"
    #: (another process wrote it to the store, such as ``collab docs import``).
    kind: str
    #: The connection's identity, for kind "connection".
    identity: Identity | None = None
    #: A label for logs: the client address, or the node id.
    label: str = ""


@dataclass(frozen=True, slots=True)
class AuthenticatePayload:
    document: str
    #: Request headers, names lower-cased, values decoded as Latin-1 (the last of repeats).
    headers: Mapping[str, str]
    #: Query parameters (y-websocket's ``params``), each with every value given.
    query: Mapping[str, Sequence[str]]
    #: Subprotocols the client offered in ``Sec-WebSocket-Protocol``.
    subprotocols: Sequence[str]
    #: The client's address, as "host:port".
    client: str
    #: What the extensions before this one decided.
    identity: Identity


@dataclass(frozen=True, slots=True)
class LoadPayload:
    document: str
    #: The loaded document; read it, but change it only through updates of your own.
    doc: Doc[Any]


@dataclass(frozen=True, slots=True)
class ChangePayload:
    document: str
    #: The update as the document integrated it (a Yjs v1 update).
    update: bytes
    origin: Origin


@dataclass(frozen=True, slots=True)
class StorePayload:
    """One group commit stored updates of ``document`` (called once it is durable)."""

    document: str
    #: The updates it stored, merged.
    update: bytes
    #: Their positions in the store's log: epoch, and first and last seq (inclusive).
    epoch: int
    first_seq: int
    last_seq: int
    #: When the newest of them was received, in Unix seconds.
    received_at: float


@dataclass(frozen=True, slots=True)
class DisconnectPayload:
    document: str
    identity: Identity
    close_code: int
    #: How long the connection lasted, in seconds.
    duration: float


class Extension:
    """The hooks, each doing nothing; override the ones you need."""

    async def on_authenticate(self, payload: AuthenticatePayload) -> Identity | None:
        return None

    async def on_load(self, payload: LoadPayload) -> None:
        return None

    def on_change(self, payload: ChangePayload) -> None:
        return None

    def on_store(self, payload: StorePayload) -> None:
        return None

    async def on_disconnect(self, payload: DisconnectPayload) -> None:
        return None


HOOK_NAMES = ("on_authenticate", "on_load", "on_change", "on_store", "on_disconnect")


class Hooks:
    """The extensions of one app, called in order.

    Only the extensions that define a hook are called for it, so an unused hook costs
    nothing on the hot path (``hooks.on_change`` is an empty tuple).
    """

    def __init__(self, extensions: Sequence[object] = ()) -> None:
        self.extensions = tuple(extensions)
        for extension in self.extensions:
            if not any(callable(getattr(extension, name, None)) for name in HOOK_NAMES):
                raise TypeError(f"{extension!r} has none of the hooks {', '.join(HOOK_NAMES)}")
        self.on_authenticate = self._implementing("on_authenticate")
        self.on_load = self._implementing("on_load")
        self.on_change = self._implementing("on_change")
        self.on_store = self._implementing("on_store")
        self.on_disconnect = self._implementing("on_disconnect")

    def _implementing(self, name: str) -> tuple[Any, ...]:
        methods = []
        for extension in self.extensions:
            method = getattr(extension, name, None)
            if method is None:
                continue
            # A method inherited unchanged from Extension does nothing: skip it.
            if getattr(type(extension), name, None) is getattr(Extension, name):
                continue
            methods.append(method)
        return tuple(methods)

    async def authenticate(self, payload: AuthenticatePayload) -> Identity:
        """Run every ``on_authenticate`` in order; the last identity returned wins.

        :raises Refused: an extension refused the connection.
        :raises Exception: an extension failed (the caller closes with 1011).
        """
        identity = payload.identity
        for hook in self.on_authenticate:
            decided = await hook(payload)
            if decided is not None:
                identity = decided
                payload = AuthenticatePayload(
                    payload.document,
                    payload.headers,
                    payload.query,
                    payload.subprotocols,
                    payload.client,
                    identity,
                )
        return identity

    async def loaded(self, payload: LoadPayload) -> None:
        for hook in self.on_load:
            await hook(payload)

    def changed(self, payload: ChangePayload) -> None:
        """Run every ``on_change``; an exception propagates (the caller closes the origin)."""
        for hook in self.on_change:
            hook(payload)

    def stored(self, payload: StorePayload) -> None:
        for hook in self.on_store:
            try:
                hook(payload)
            except Exception:
                log.exception("on_store hook %r failed for %r", hook, payload.document)

    async def disconnected(self, payload: DisconnectPayload) -> None:
        for hook in self.on_disconnect:
            try:
                await hook(payload)
            except Exception:
                log.exception("on_disconnect hook %r failed for %r", hook, payload.document)


class ExtensionError(CollabError):
    """An extension's hook raised; the connection it was about is closed with 1011."""


__all__ = [
    "ANONYMOUS_WRITER",
    "AuthenticatePayload",
    "ChangePayload",
    "DisconnectPayload",
    "Extension",
    "ExtensionError",
    "Hooks",
    "Identity",
    "LoadPayload",
    "Origin",
    "Refused",
    "StorePayload",
]
