"""Access control: who may open which document (tokens), and from where (Origin, Host).

Two parts, both pure (no sockets; the transport asks them):

* :class:`TokenAuth`, the connection-authentication extension built from the settings
  (:func:`token_auth`). A connection presents a JWT (``collab.auth``) as the ``token``
  query parameter (y-websocket's ``params: {token}``) or as a subprotocol
  ``token.<jwt>`` in ``Sec-WebSocket-Protocol``; the token's ``docs`` claim decides READ,
  WRITE or nothing for the document. Without a token a connection gets the anonymous
  access (``--anonymous``). Refusals: 4401 (no valid token), 4403 (the token does not
  cover the document). HTTP requests present the token as ``Authorization: Bearer``.
* :class:`OriginPolicy`: a browser connection (one that sends ``Origin``) is accepted
  only from the server's own origin and the ``--allowed-origin`` ones (cross-site
  websocket hijacking), and every request's ``Host`` must be one of the server's names
  (``--allowed-host``; DNS rebinding). Clients that send no ``Origin`` are not browsers
  and are not affected by the first rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from collab.auth import Access, Grants, TokenError, TokenVerifier
from collab.config import Settings
from collab.errors import CloseCode
from collab.hooks import AuthenticatePayload, Extension, Identity, Refused

#: The subprotocol prefix that carries a token: ``Sec-WebSocket-Protocol: collab, token.<jwt>``.
TOKEN_PROTOCOL_PREFIX = "token."
#: The subprotocol collab selects when a client offers it.
PROTOCOL = "collab"

ANONYMOUS_CHOICES = ("auto", "none", "read", "write")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "[::]", "")


def anonymous_access(settings: Settings) -> Access | None:
    """What a connection without a token gets: ``--anonymous``, or with ``auto`` (the
    default), WRITE while the server is bound to loopback with no token key configured,
    else nothing."""
    choice = settings.anonymous
    if choice == "auto":
        keyless = settings.jwt_secret is None and settings.jwt_public_key is None
        return Access.WRITE if keyless and is_loopback(settings.host) else None
    if choice == "none":
        return None
    return Access.parse(choice)


def token_from(
    query: Mapping[str, Sequence[str]], subprotocols: Iterable[str], headers: Mapping[str, str]
) -> str | None:
    """The token a request presents, if any: ``?token=``, a ``token.`` subprotocol, or
    ``Authorization: Bearer``."""
    values = query.get("token")
    if values:
        return values[0]
    for protocol in subprotocols:
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return protocol[len(TOKEN_PROTOCOL_PREFIX) :]
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept: ``collab`` if offered, else the first one (a browser
    fails a handshake that selects none of those it offered), never a token."""
    if not offered:
        return None
    if PROTOCOL in offered:
        return PROTOCOL
    plain = [p for p in offered if not p.startswith(TOKEN_PROTOCOL_PREFIX)]
    return plain[0] if plain else offered[0]


class TokenAuth(Extension):
    """The authentication hook: a token's grants, or the anonymous access.

    :param verifier: checks tokens; None when no key is configured (tokens are then
        ignored: every connection gets the anonymous access).
    :param anonymous: the access of a connection without a token (None: refused).
    """

    def __init__(self, verifier: TokenVerifier | None, anonymous: Access | None) -> None:
        self.verifier = verifier
        self.anonymous = anonymous

    async def on_authenticate(self, payload: AuthenticatePayload) -> Identity:
        return self.identify(payload.document, payload.query, payload.subprotocols, payload.headers)

    def identify(
        self,
        document: str | None,
        query: Mapping[str, Sequence[str]],
        subprotocols: Iterable[str],
        headers: Mapping[str, str],
    ) -> Identity:
        """The identity of a request for ``document`` (None: no particular document, as
        for a listing; the identity's ``claims["grants"]`` then says which ones).

        :raises Refused: 4401 without a valid token where one is needed, 4403 when the
            token does not cover ``document``.
        """
        token = token_from(query, subprotocols, headers)
        if self.verifier is None:
            token = None  # no key to check it with: every connection is anonymous
        if token is None or self.verifier is None:
            if self.anonymous is None:
                raise Refused("this server needs a token", CloseCode.UNAUTHORIZED)
            return Identity(self.anonymous, claims={"grants": Grants({"*": self.anonymous})})
        try:
            grants = self.verifier.verify(token)
        except TokenError as e:
            raise Refused(str(e), CloseCode.UNAUTHORIZED) from None
        if document is None:
            access = max(grants.patterns.values(), default=Access.READ)
        else:
            found = grants.access_for(document)
            if found is None:
                raise Refused("the token does not cover this document", CloseCode.FORBIDDEN)
            access = found
        return Identity(
            access, user=grants.subject, expires_at=grants.expires_at, claims={"grants": grants}
        )


def token_auth(settings: Settings) -> TokenAuth:
    """The :class:`TokenAuth` the settings describe.

    :raises collab.auth.ConfigError: the key cannot be used.
    """
    verifier = None
    if settings.jwt_secret is not None:
        verifier = TokenVerifier.from_secret(
            settings.jwt_secret, audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )
    elif settings.jwt_public_key is not None:
        verifier = TokenVerifier.from_key_file(
            settings.jwt_public_key, audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )
    return TokenAuth(verifier, anonymous_access(settings))


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which ``Host`` and ``Origin`` headers the server accepts.

    :param hosts: allowed host names (no port); empty: any (a server bound to every
        interface cannot know its names unless told).
    :param origins: allowed origins besides the server's own (``https://app.example``);
        ``*`` allows any.
    """

    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        hosts = {h.lower() for h in settings.allowed_hosts}
        if not hosts and not is_wildcard(settings.host):
            hosts = {settings.host.lower().strip("[]"), "localhost", "127.0.0.1", "::1"}
        origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        return cls(frozenset(hosts), frozenset(origins))

    def host_allowed(self, host: str | None) -> bool:
        if not self.hosts:
            return True
        if not host:
            return True  # browsers always send Host; a client without one is not a browser
        return _host_name(host) in self.hosts

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a request from ``origin`` (None: not a browser) to ``host`` may go on."""
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if "*" in self.origins or origin in self.origins:
            return True
        # the server's own origin: the same host and port the browser asked for
        _, sep, netloc = origin.partition("://")
        return bool(sep) and host is not None and netloc == host.lower()


def _host_name(host: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:1234`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


__all__ = [
    "OriginPolicy",
    "TokenAuth",
    "anonymous_access",
    "choose_subprotocol",
    "token_auth",
    "token_from",
]
