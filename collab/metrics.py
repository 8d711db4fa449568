"""Prometheus metrics, served at ``GET /metrics``.

prometheus-client keeps them in its process-global registry, which is what a scraper
expects; tests read them through :func:`render`.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

CONNECTIONS = Gauge("collab_connections", "Open websocket connections.")
ROOMS = Gauge("collab_rooms_loaded", "Documents loaded in memory.")
UPDATES = Counter("collab_updates_total", "Yjs updates accepted from clients.")
REJECTED = Counter(
    "collab_connections_closed_total",
    "Connections the server closed, by close code.",
    ["code"],
)
COMMIT_SECONDS = Histogram(
    "collab_commit_seconds",
    "Time from accepting an update to its group commit being durable.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)

#: (ticket, monotonic time it was handed to the store), oldest first; see note_stored.
_awaiting_commit: deque[tuple[int, float]] = deque()


def note_stored(ticket: int) -> None:
    """A room handed the store the update with this ticket."""
    _awaiting_commit.append((ticket, time.monotonic()))


def note_committed(durable_ticket: int) -> None:
    """The store made every ticket up to ``durable_ticket`` durable."""
    now = time.monotonic()
    while _awaiting_commit and _awaiting_commit[0][0] <= durable_ticket:
        _, stored_at = _awaiting_commit.popleft()
        COMMIT_SECONDS.observe(now - stored_at)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, with their content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
