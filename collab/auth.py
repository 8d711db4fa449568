"""Tokens and grants: who may open which document, read-only or read-write.

A token is a JWT (RFC 7519) verified with PyJWT. Its ``docs`` claim maps document-name
patterns to an access level::

    {"sub": "ada", "docs": {"notes/*": "write", "handbook": "read"}, "exp": 1767225600}

A pattern is an exact name, or a prefix followed by ``*`` (``notes/*`` covers
``notes/2026/plan``; ``*`` alone covers every document). When several patterns match a
name, the longest one decides, so ``{"notes/*": "write", "notes/board": "read"}`` makes
``notes/board`` read-only and every other note writable. A name no pattern matches is
forbidden.

Keys: HS256 with a shared secret (at least 32 bytes, RFC 7518 section 3.2), or RS256 /
ES256 with a public key (PEM) or a JWKS file, where the token header's ``kid`` picks the
key. Only those algorithms are accepted, never ``none``; ``exp`` and ``nbf`` are checked
when present (with :data:`LEEWAY` seconds of clock skew), ``aud`` and ``iss`` when
configured.

This module knows tokens and names only: no sockets, no ASGI. ``collab.access`` turns it
into the connection-authentication hook.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from collab.errors import CollabError

#: Seconds of clock difference tolerated on ``exp`` and ``nbf``.
LEEWAY = 30.0
#: Shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2: the hash size).
MIN_SECRET_BYTES = 32
#: Longest token accepted, in bytes; a real one is a few hundred.
MAX_TOKEN_BYTES = 8192
#: Most document patterns one token may carry.
MAX_PATTERNS = 1000

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


class Access(enum.IntEnum):
    """What a connection may do with a document, in increasing order."""

    #: Receives the document and presence; may publish its own presence; cannot edit.
    READ = 1
    #: Edits too.
    WRITE = 2

    @classmethod
    def parse(cls, text: str) -> Access:
        """``read`` or ``write``.

        :raises ValueError: any other text.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"access must be 'read' or 'write', not {text!r}") from None


class TokenError(CollabError):
    """A token is missing, malformed, expired or not signed by a configured key."""


class ConfigError(CollabError):
    """The token settings cannot be used (a short secret, an unreadable key file)."""


@dataclass(frozen=True, slots=True)
class Grants:
    """What one token allows: document patterns and the access each gives."""

    patterns: Mapping[str, Access] = field(default_factory=dict)
    #: The token's ``sub``, for logs and hooks (None when it has none).
    subject: str | None = None
    #: When the token expires (UNIX seconds), if it does.
    expires_at: float | None = None

    def access_for(self, room: str) -> Access | None:
        """The access this grants to ``room`` (the longest matching pattern), or None."""
        best: tuple[int, int] | None = None  # (pattern length, exact?) of the best match
        access: Access | None = None
        for pattern, level in self.patterns.items():
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                if not room.startswith(prefix):
                    continue
                rank = (len(prefix), 0)
            elif pattern == room:
                rank = (len(pattern), 1)
            else:
                continue
            if best is None or rank > best:
                best, access = rank, level
        return access

    def may_list(self, room: str) -> bool:
        return self.access_for(room) is not None


def parse_patterns(claim: object) -> dict[str, Access]:
    """The ``docs`` claim as ``{pattern: Access}``.

    :raises TokenError: the claim is not a mapping of strings to ``read``/``write``.
    """
    if not isinstance(claim, dict):
        raise TokenError("the token has no 'docs' claim mapping document patterns to access")
    if len(claim) > MAX_PATTERNS:
        raise TokenError(f"the token names {len(claim)} patterns; the limit is {MAX_PATTERNS}")
    patterns: dict[str, Access] = {}
    for pattern, level in claim.items():
        if not isinstance(pattern, str) or not pattern or "*" in pattern[:-1]:
            raise TokenError(f"bad document pattern in the token: {pattern!r}")
        if not isinstance(level, str):
            raise TokenError(f"bad access for {pattern!r} in the token: {level!r}")
        try:
            patterns[pattern] = Access.parse(level)
        except ValueError as e:
            raise TokenError(f"bad access for {pattern!r} in the token: {e}") from None
    return patterns


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Verifies tokens against one configured key (see the module docstring)."""

    #: The key PyJWT verifies with: the HS256 secret, a public key, or a JWKS.
    _key: Any
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None
    _jwks: jwt.PyJWKSet | None = None

    @classmethod
    def from_secret(
        cls, secret: str, *, audience: str | None = None, issuer: str | None = None
    ) -> TokenVerifier:
        """HS256 with a shared secret.

        :raises ConfigError: the secret is shorter than :data:`MIN_SECRET_BYTES`.
        """
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the JWT secret is {len(secret.encode())} bytes; use at least"
                f" {MIN_SECRET_BYTES} (for example: python -c 'import secrets;"
                " print(secrets.token_urlsafe(32))')"
            )
        return cls(secret.encode(), ("HS256",), audience, issuer)

    @classmethod
    def from_key_file(
        cls, path: Path | str, *, audience: str | None = None, issuer: str | None = None
    ) -> TokenVerifier:
        """RS256/ES256 with a PEM public key, or a JWKS file (``{"keys": [...]}``).

        :raises ConfigError: the file cannot be read or holds no usable key.
        """
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read the JWT key file {str(path)!r}: {e}") from None
        if text.lstrip().startswith("{"):
            try:
                jwks = jwt.PyJWKSet.from_json(text)
            except (jwt.PyJWKSetError, jwt.PyJWKError, json.JSONDecodeError) as e:
                raise ConfigError(f"{str(path)!r} is not a usable JWKS: {e}") from None
            return cls(None, ASYMMETRIC_ALGORITHMS, audience, issuer, jwks)
        try:
            public_key = load_pem_public_key(text.encode())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{str(path)!r} is not a PEM public key: {e}") from None
        return cls(public_key, ASYMMETRIC_ALGORITHMS, audience, issuer)

    def verify(self, token: str, *, now: float | None = None) -> Grants:
        """The grants of a valid token.

        :raises TokenError: the token is malformed, expired, not yet valid, for another
            audience or issuer, or not signed by the configured key.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        key = self._key
        try:
            if self._jwks is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                matching = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
                if not matching:
                    raise TokenError(f"no key in the JWKS has the token's kid {kid!r}")
                key = matching[0]
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["aud"] if self.audience else []},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenError(f"the token lacks the {e.claim!r} claim") from None
        except jwt.PyJWTError as e:
            raise TokenError(f"invalid token: {e}") from None
        exp = claims.get("exp")
        sub = claims.get("sub")
        return Grants(
            parse_patterns(claims.get("docs")),
            subject=sub if isinstance(sub, str) else None,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
        )


def issue_token(
    secret: str,
    docs: Sequence[str],
    access: Access,
    *,
    ttl: float | None,
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token granting ``access`` to each pattern in ``docs``.

    :raises ConfigError: the secret is too short.
    :raises ValueError: no patterns, or a bad one.
    """
    TokenVerifier.from_secret(secret)  # the same length rule as verification
    if not docs:
        raise ValueError("give at least one document pattern")
    patterns = parse_patterns({d: access.name.lower() for d in docs})
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "docs": {p: a.name.lower() for p, a in patterns.items()},
        "iat": int(issued),
    }
    if ttl is not None:
        claims["exp"] = int(issued + ttl)
    if subject is not None:
        claims["sub"] = subject
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret.encode(), algorithm="HS256")


__all__ = [
    "Access",
    "ConfigError",
    "Grants",
    "TokenError",
    "TokenVerifier",
    "issue_token",
    "parse_patterns",
]
