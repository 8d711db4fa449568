"""Fan-out between nodes: what one node's rooms accept reaches the same rooms elsewhere.

``base.py`` holds the two interfaces (:class:`Bus`, and :class:`BusNode`, what a bus
delivers to); ``local.py`` is the in-process bus every node runs without configuration;
``network.py`` is what every bus across machines does, over a broker connection that
``redis.py`` and ``nats.py`` each provide. :func:`open_bus` is the one place that knows
them: a new bus is one new module and one entry in its table.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

from collab.bus.base import Bus, BusNode
from collab.bus.local import LocalBus
from collab.errors import CollabError

if TYPE_CHECKING:
    from collab.bus.network import NetworkBus
    from collab.config import Settings
    from collab.storage.base import UpdateLog

#: URL scheme: (module, function(url, **options) -> NetworkBus). Imported on use, so a
#: node on the local bus never loads a broker client.
NETWORK_BUSES = {
    "redis": ("collab.bus.redis", "open_redis_bus"),
    "rediss": ("collab.bus.redis", "open_redis_bus"),
    "nats": ("collab.bus.nats", "open_nats_bus"),
    "tls": ("collab.bus.nats", "open_nats_bus"),
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class BusConfigError(CollabError):
    """``--bus`` names no bus collab has."""


def poll_interval(settings: Settings) -> float:
    """How often a bus polls the store's versions: at most every 2 s, and often enough
    for the shortest awareness timeout and idle unload."""
    return max(min(2.0, settings.awareness_timeout / 10, settings.idle_unload / 2), 0.05)


def check_bus_url(url: str) -> str:
    """The scheme of the bus ``url`` names (``local`` for the local bus).

    :raises BusConfigError: it names no bus collab has.
    """
    if url == "local":
        return url
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in NETWORK_BUSES:
        supported = ", ".join(f"{s}://" for s in NETWORK_BUSES)
        raise BusConfigError(f"--bus {url!r}: give local, or a URL starting {supported}")
    return scheme


def open_bus(settings: Settings, store: UpdateLog) -> LocalBus | NetworkBus:
    """The bus ``settings.bus`` names, ready for ``async with``: ``local``, or a
    ``redis://`` or ``nats://`` URL.

    :raises BusConfigError: the URL names no bus collab has. A broker that cannot be
        reached is no error: the node serves alone and keeps trying to connect.
    """
    url = settings.bus
    scheme = check_bus_url(url)
    if scheme == "local":
        return LocalBus(store, poll_interval(settings))
    module, function = NETWORK_BUSES[scheme]
    opener = getattr(importlib.import_module(module), function)
    bus: NetworkBus = opener(
        url,
        prefix=settings.bus_prefix,
        heartbeat=settings.bus_heartbeat,
        sync_interval=settings.bus_sync_interval,
        store=store,
        poll_interval=poll_interval(settings),
    )
    return bus


__all__ = [
    "Bus",
    "BusConfigError",
    "BusNode",
    "LocalBus",
    "check_bus_url",
    "open_bus",
    "poll_interval",
]
