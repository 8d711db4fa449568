"""The CollabError family and the table of websocket close codes collab uses."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Every websocket close code collab sends, in one place.

    The stock ``y-websocket`` client reconnects with backoff after any close except
    4400-4499 (RFC 6455 section 7.4.2 leaves 4000-4999 to applications; y-websocket
    treats that range as "do not retry"). 4500-4599 means "try again later".
    """

    #: Normal closure: the server is shutting down or the peer left.
    NORMAL = 1000
    #: Going away: the server is restarting; the client should reconnect.
    GOING_AWAY = 1001
    #: The frame was not a valid y-websocket message (bad framing, truncated varint).
    PROTOCOL_ERROR = 1002
    #: A text frame, or a frame of a kind collab does not accept.
    UNSUPPORTED_DATA = 1003
    #: The message was well framed but its payload is invalid (an update pycrdt cannot apply).
    INVALID_PAYLOAD = 1007
    #: The client broke a limit: too many messages or bytes per second, an awareness
    #: state too large; or (before the handshake, as HTTP 403) a refused Origin or Host.
    POLICY_VIOLATION = 1008
    #: A frame larger than the configured maximum.
    MESSAGE_TOO_BIG = 1009
    #: The server hit an internal error handling this connection.
    INTERNAL_ERROR = 1011
    #: The server is at a connection limit (in total, per address or per document).
    TRY_AGAIN_LATER = 1013
    #: The client fell too far behind (its send queue overflowed); it resyncs on reconnect.
    TOO_SLOW = 4500
    #: The document could not be loaded or stored right now; try again later.
    STORE_UNAVAILABLE = 4503
    #: No valid token where one is needed, or the token expired (mirrors HTTP 401).
    UNAUTHORIZED = 4401
    #: The token does not cover this document (mirrors HTTP 403).
    FORBIDDEN = 4403
    #: Reserved: no such document or route (mirrors HTTP 404).
    NOT_FOUND = 4404
    #: The document name is empty, too long or not valid UTF-8 (mirrors HTTP 400).
    BAD_DOCUMENT_NAME = 4400
    #: The client holds history from a deleted or restored document: reload the page.
    STALE_EPOCH = 4409


class CollabError(Exception):
    """Base class of every error collab raises on purpose."""


class RemoteProtocolError(CollabError):
    """The peer sent bytes that are not a valid y-websocket message.

    :param close_code: the close code the connection should be closed with.
    """

    def __init__(self, message: str, close_code: CloseCode = CloseCode.INVALID_PAYLOAD) -> None:
        super().__init__(message)
        self.close_code = close_code


class LocalProtocolError(CollabError):
    """Our own code misused the protocol API (a bug, not bad input)."""


class ConnectionClosedError(CollabError):
    """The connection ended while :class:`collab.client.Client` was waiting on it.

    :param close_code: the code the server closed with (None if the socket just dropped).
    """

    def __init__(self, message: str, close_code: int | None) -> None:
        super().__init__(message)
        self.close_code = close_code


class InvalidUpdateError(RemoteProtocolError):
    """A Yjs update that pycrdt cannot decode or apply.

    :param midway: the failure came while integrating (a Rust panic or a runtime error
        inside yrs), not while decoding: the document may hold part of the update.
    """

    def __init__(self, message: str, *, midway: bool = False) -> None:
        super().__init__(message, CloseCode.INVALID_PAYLOAD)
        self.midway = midway


class StoreError(CollabError):
    """The update log could not be read or written."""


class DocumentNotFoundError(CollabError):
    """The named document does not exist in the store."""
