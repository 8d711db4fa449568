"""The client's address behind a trusted reverse proxy (collab.transport.forwarded)."""

from __future__ import annotations

import pytest

from collab.transport.forwarded import client_scope, parse_networks
from collab.transport.types import Scope

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8"])


def scope_from(client: str, *forwarded: str) -> Scope:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": "http", "client": (client, 5555), "headers": headers}


@pytest.mark.parametrize(
    ("client", "forwarded", "seen"),
    [
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # nginx on loopback
        ("10.1.2.3", ["198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # two proxies in a row
        ("10.1.2.3", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),  # spoofed entry on the left
        ("10.1.2.3", ["1.1.1.1", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.1.2.3", ["2001:db8::1"], "2001:db8::1"),
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # not a proxy: its header means nothing
        ("127.0.0.1", [], "127.0.0.1"),  # a proxy's own request
        ("127.0.0.1", ["not-an-address"], "127.0.0.1"),  # garbage keeps the proxy's address
        ("127.0.0.1", ["10.0.0.1"], "127.0.0.1"),  # only proxies: nothing to believe
    ],
)
def test_the_client_is_the_rightmost_untrusted_forwarded_address(
    client: str, forwarded: list[str], seen: str
) -> None:
    scope = client_scope(scope_from(client, *forwarded), PROXIES)
    assert scope["client"][0] == seen


def test_without_trusted_proxies_nothing_changes() -> None:
    scope = scope_from("127.0.0.1", "203.0.113.7")
    assert client_scope(scope, ()) is scope


def test_a_bad_proxy_entry_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
