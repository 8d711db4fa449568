"""A ShareDB-style OT server document and the classic OT client, both sans-IO.

Theory of operation
-------------------
:class:`OTDocument` is the server's copy of one text. It holds the text, its ``revision``
(how many ops it has applied) and the ``history`` of those ops. A client sends each op with
the revision it was made against; :meth:`OTDocument.submit` transforms the op over every op
applied since that revision, applies it, and returns the transformed op and the new
revision. The server then acknowledges the op to its author and broadcasts it to everyone
else. History is what lets an op made against any older revision still apply, so the server
keeps all of it (as ShareDB keeps its op log).

:class:`OTClient` is one editor's copy, the client state machine of ShareDB and ot.js. Its
states:

- *synchronized*: every local edit is acknowledged;
- *awaiting*: one op is in flight (sent, not acknowledged);
- *awaiting with buffer*: one op in flight, and local edits made since, which wait.

A local edit applies at once to the client's text; it is sent if nothing is in flight, else
buffered (composed into one op, or kept as a queue of ops with ``compose=False``, which is
ShareDB's ``preventCompose``). An ack moves the first buffered op to in flight and sends it.
A remote op is transformed over the in-flight op and the buffer (and they over it) before it
applies to the client's text. What must never happen: two ops in flight, or a server
message that skips a revision (the server's messages to one client arrive in order).

Ties go the ShareDB way: the server transforms an incoming op over applied ones with side
``"left"``, so a client transforms its own pending ops ``"left"`` and remote ops
``"right"``; both then agree on every text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from collab import ot
from collab.errors import CollabError

__all__ = ["Ack", "Broadcast", "ClientState", "OTClient", "OTDocument", "RevisionError", "Submit"]


class RevisionError(CollabError, ValueError):
    """A revision that does not fit: from the future, negative, or out of order."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Client to server: ``op`` was made against the text at ``base_revision``."""

    op: ot.Op
    base_revision: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Server to the author of an op: it was applied, and made the text ``revision``."""

    revision: int


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Server to the other clients: ``op`` took the text to ``revision``."""

    op: ot.Op
    revision: int


class OTDocument:
    """The server's copy of one text: revision, history, and ``submit``."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.history: list[ot.Op] = []

    @property
    def revision(self) -> int:
        """How many ops have been applied: the revision of :attr:`text`."""
        return len(self.history)

    def submit(self, op: ot.Op, base_revision: int) -> tuple[ot.Op, int]:
        """Apply an op made against ``base_revision`` and return it as applied, with the new
        revision. On error nothing changes.

        Costs one transform per op applied since ``base_revision``: a client that was
        offline for a long time pays for every op it missed.

        :raises RevisionError: if ``base_revision`` is negative or ahead of the document.
        :raises collab.ot.InvalidOpError: if ``op`` is invalid or does not fit the text.
        """
        if not 0 <= base_revision <= self.revision:
            raise RevisionError(
                f"op made against revision {base_revision}; the document is at {self.revision}"
            )
        for applied in self.history[base_revision:]:
            op = ot.transform(op, applied, "left")
        self.text = ot.apply(self.text, op)
        self.history.append(op)
        return op, self.revision

    def receive(self, message: Submit) -> tuple[Ack, Broadcast]:
        """Handle a client's :class:`Submit`: the ack for its author, the broadcast for others.

        :raises RevisionError: as :meth:`submit`.
        :raises collab.ot.InvalidOpError: as :meth:`submit`.
        """
        op, revision = self.submit(message.op, message.base_revision)
        return Ack(revision), Broadcast(op, revision)

    def ops_since(self, revision: int) -> list[ot.Op]:
        """The ops that took the text from ``revision`` to now, to catch a client up.

        :raises RevisionError: if ``revision`` is negative or ahead of the document.
        """
        if not 0 <= revision <= self.revision:
            raise RevisionError(f"no revision {revision}; the document is at {self.revision}")
        return self.history[revision:]


class ClientState(Enum):
    SYNCHRONIZED = "synchronized"
    AWAITING = "awaiting"
    AWAITING_WITH_BUFFER = "awaiting with buffer"


class OTClient:
    """One editor's copy of the text, kept in step with an :class:`OTDocument`.

    :param text: the text at ``revision``, as the server sent it.
    :param revision: the server revision ``text`` is at.
    :param compose: compose buffered edits into one op (ShareDB's default); with ``False``
        each edit is sent as its own op, one at a time.
    """

    def __init__(self, text: str = "", revision: int = 0, *, compose: bool = True) -> None:
        self.text = text
        #: The last server revision this client has seen (its own ops included once acked).
        self.revision = revision
        self.inflight: ot.Op | None = None
        self.buffer: list[ot.Op] = []
        self.compose = compose

    @property
    def state(self) -> ClientState:
        if self.inflight is None:
            return ClientState.SYNCHRONIZED
        return ClientState.AWAITING_WITH_BUFFER if self.buffer else ClientState.AWAITING

    def edit(self, op: ot.Op) -> Submit | None:
        """Apply a local edit to :attr:`text`; return the message to send now, if any.

        :raises collab.ot.InvalidOpError: if ``op`` is invalid for the text; nothing changes.
        """
        self.text = ot.apply(self.text, op)
        if not op:
            return None
        if self.inflight is None:
            self.inflight = op
            return Submit(op, self.revision)
        if self.compose and self.buffer:
            self.buffer[0] = ot.compose(self.buffer[0], op)
        else:
            self.buffer.append(op)
        return None

    def receive_ack(self, ack: Ack) -> Submit | None:
        """The in-flight op was applied; return the next op to send, if any.

        :raises RevisionError: if nothing is in flight or the ack skips a revision.
        """
        if self.inflight is None:
            raise RevisionError("ack received with no op in flight")
        self._advance(ack.revision)
        self.inflight = None
        if not self.buffer:
            return None
        self.inflight = self.buffer.pop(0)
        return Submit(self.inflight, self.revision)

    def receive_op(self, message: Broadcast) -> ot.Op:
        """Apply another client's op; return it as applied to :attr:`text`.

        :raises RevisionError: if the message skips a revision.
        """
        self._advance(message.revision)
        op = message.op
        if self.inflight is not None:
            self.inflight, op = (
                ot.transform(self.inflight, op, "left"),
                ot.transform(op, self.inflight, "right"),
            )
        for i, pending in enumerate(self.buffer):
            self.buffer[i], op = (
                ot.transform(pending, op, "left"),
                ot.transform(op, pending, "right"),
            )
        self.text = ot.apply(self.text, op)
        return op

    def _advance(self, revision: int) -> None:
        if revision != self.revision + 1:
            raise RevisionError(f"server revision {revision} after {self.revision}")
        self.revision = revision
