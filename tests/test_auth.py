"""Tokens: verification with each kind of key, the claims checked, and pattern grants."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from collab.auth import (
    MIN_SECRET_BYTES,
    Access,
    ConfigError,
    Grants,
    TokenError,
    TokenVerifier,
    issue_token,
)

SECRET = "s" * MIN_SECRET_BYTES


def test_an_issued_token_grants_what_it_names() -> None:
    token = issue_token(SECRET, ["notes/*", "handbook"], Access.WRITE, ttl=3600, subject="ada")
    grants = TokenVerifier.from_secret(SECRET).verify(token)
    assert grants.subject == "ada"
    assert grants.access_for("notes/2026/plan") is Access.WRITE
    assert grants.access_for("handbook") is Access.WRITE
    assert grants.access_for("handbook/2") is None  # an exact name is not a prefix
    assert grants.access_for("secret") is None
    assert grants.expires_at is not None and grants.expires_at > time.time() + 3500


def test_the_longest_matching_pattern_decides() -> None:
    grants = Grants(
        {"*": Access.READ, "notes/*": Access.WRITE, "notes/board": Access.READ}, None, None
    )
    assert grants.access_for("anything") is Access.READ
    assert grants.access_for("notes/plan") is Access.WRITE
    assert grants.access_for("notes/board") is Access.READ
    assert grants.access_for("notes/board2") is Access.WRITE


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"docs": {"a": "write"}, "exp": int(time.time()) - 3600}, "expired"),
        ({"docs": {"a": "write"}, "nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"exp": int(time.time()) + 86400}, "no 'docs' claim"),
        ({"docs": {"a": "admin"}}, "bad access"),
        ({"docs": {"a*b": "read"}}, "bad document pattern"),
        ({"docs": ["a"]}, "no 'docs' claim"),
    ],
)
def test_bad_claims_are_refused(claims: dict[str, object], message: str) -> None:
    token = jwt.encode(claims, SECRET.encode(), algorithm="HS256")
    with pytest.raises(TokenError, match=message):
        TokenVerifier.from_secret(SECRET).verify(token)


def test_wrong_key_none_algorithm_and_garbage_are_refused() -> None:
    verifier = TokenVerifier.from_secret(SECRET)
    other = jwt.encode({"docs": {"*": "write"}}, ("x" * 40).encode(), algorithm="HS256")
    with pytest.raises(TokenError, match="invalid token"):
        verifier.verify(other)
    unsigned = jwt.encode({"docs": {"*": "write"}}, None, algorithm="none")
    with pytest.raises(TokenError):
        verifier.verify(unsigned)
    for garbage in ["", "abc", "a.b.c", "x" * 10_000]:
        with pytest.raises(TokenError):
            verifier.verify(garbage)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = TokenVerifier.from_secret(SECRET, audience="collab", issuer="https://id.example")
    good = issue_token(
        SECRET, ["*"], Access.READ, ttl=60, audience="collab", issuer="https://id.example"
    )
    assert verifier.verify(good).access_for("x") is Access.READ
    with pytest.raises(TokenError, match="another audience"):
        verifier.verify(
            issue_token(
                SECRET, ["*"], Access.READ, ttl=60, audience="other", issuer="https://id.example"
            )
        )
    with pytest.raises(TokenError, match="lacks the 'aud'"):
        verifier.verify(issue_token(SECRET, ["*"], Access.READ, ttl=60))
    with pytest.raises(TokenError, match="lacks the 'iss'"):
        verifier.verify(issue_token(SECRET, ["*"], Access.READ, ttl=60, audience="collab"))
    with pytest.raises(TokenError, match="another issuer"):
        verifier.verify(
            issue_token(SECRET, ["*"], Access.READ, ttl=60, audience="collab", issuer="evil")
        )


def test_a_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        TokenVerifier.from_secret("short")


def _pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_keys_verify_their_own_tokens_only(tmp_path: Path, algorithm: str) -> None:
    def private() -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        if algorithm == "RS256":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    key, stranger = private(), private()
    path = tmp_path / "key.pem"
    path.write_text(_pem(key))
    verifier = TokenVerifier.from_key_file(path)
    token = jwt.encode({"docs": {"a": "write"}}, key, algorithm=algorithm)
    assert verifier.verify(token).access_for("a") is Access.WRITE
    forged = jwt.encode({"docs": {"a": "write"}}, stranger, algorithm=algorithm)
    with pytest.raises(TokenError):
        verifier.verify(forged)
    # An HS256 token "signed" with the public key text must not pass (algorithm confusion).
    confused = jwt.encode({"docs": {"a": "write"}}, "k" * 64, algorithm="HS256")
    with pytest.raises(TokenError):
        verifier.verify(confused)


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    one = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    two = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, private_key, algorithm in [("one", one, "RS256"), ("two", two, "ES256")]:
        keys.append(_jwk(private_key, kid, algorithm))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    verifier = TokenVerifier.from_key_file(path)
    token = jwt.encode({"docs": {"b": "read"}}, two, algorithm="ES256", headers={"kid": "two"})
    assert verifier.verify(token).access_for("b") is Access.READ
    wrong = jwt.encode({"docs": {"b": "read"}}, two, algorithm="ES256", headers={"kid": "one"})
    with pytest.raises(TokenError):
        verifier.verify(wrong)
    unknown = jwt.encode({"docs": {"b": "read"}}, one, algorithm="RS256", headers={"kid": "x"})
    with pytest.raises(TokenError, match="no key in the JWKS"):
        verifier.verify(unknown)


def _jwk(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, algorithm: str
) -> dict[str, object]:
    if algorithm == "RS256":
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


def test_unreadable_or_unusable_key_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier.from_key_file(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        TokenVerifier.from_key_file(bad)
    bad.write_text('{"keys": [{"kty": "nope"}]}')
    with pytest.raises(ConfigError, match="not a usable JWKS"):
        TokenVerifier.from_key_file(bad)


def test_access_parses_only_read_and_write() -> None:
    assert Access.parse("read") is Access.READ
    assert Access.parse(" WRITE ") is Access.WRITE
    with pytest.raises(ValueError, match="'read' or 'write'"):
        Access.parse("admin")
