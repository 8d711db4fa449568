"""Fan-out between nodes: what one node's rooms accept reaches the same rooms elsewhere.

``base.py`` holds the two interfaces (:class:`Bus`, and :class:`BusNode`, what a bus
delivers to); ``local.py`` is the in-process bus every node runs without configuration.
A bus across machines (Redis, NATS) is one new module implementing :class:`Bus`.
"""

from __future__ import annotations

from collab.bus.base import Bus, BusNode
from collab.bus.local import LocalBus

__all__ = ["Bus", "BusNode", "LocalBus"]
