"""The client's address behind a reverse proxy (``--trusted-proxy``).

Behind nginx every connection comes from nginx, so per-address limits would count all
clients as one and the loopback rule for ``/metrics`` would let everyone in. When the
connecting address is a trusted proxy, the client is the rightmost ``X-Forwarded-For``
entry that is not itself a trusted proxy (entries further left are the client's own
claims and cannot be trusted). Anything else leaves the address as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from collab.transport.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.5``, ``10.0.0.0/8``, ``::1`` as networks.

    :raises ValueError: an entry is neither an address nor a network.
    """
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_scope(scope: Scope, networks: tuple[Network, ...]) -> Scope:
    """``scope`` with ``client`` set to the address the proxy says it forwarded for."""
    client = scope.get("client")
    if not networks or not client or not _trusted(str(client[0]), networks):
        return scope
    forwarded = [
        value.decode("latin-1")
        for key, value in scope.get("headers") or ()
        if key.lower() == b"x-forwarded-for"
    ]
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                address = str(ipaddress.ip_address(hop.removeprefix("[").removesuffix("]")))
            except ValueError:
                return scope  # garbage from the proxy: keep the proxy's own address
            return {**scope, "client": (address, 0)}
    return scope
