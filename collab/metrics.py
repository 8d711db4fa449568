"""Prometheus metrics, served at ``GET /metrics``.

prometheus-client keeps them in its process-global registry, which is what a scraper
expects; tests read them through :func:`render`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

CONNECTIONS = Gauge("collab_connections", "Open websocket connections.")
EVENT_STREAMS = Gauge("collab_event_streams", "Open event streams (GET /api/docs/{name}/events).")
ROOMS = Gauge("collab_rooms_loaded", "Documents loaded in memory.")
UPDATES = Counter("collab_updates_total", "Yjs updates accepted from clients.")
CLOSED = Counter(
    "collab_connections_closed_total",
    "Connections the server closed (not the client), by close code.",
    ["code"],
)
REFUSED = Counter(
    "collab_refused_total",
    "Messages and handshakes refused: read_only (an update from a viewer), origin and"
    " host (a websocket handshake answered 403), awareness (an entry for another"
    " connection's client id).",
    ["reason"],
)
LIMIT_HITS = Counter(
    "collab_limit_hits_total",
    "Connections closed or refused at a limit: messages, bytes (the rate limits),"
    " connections, send_queue, awareness.",
    ["limit"],
)
FANOUT_SECONDS = Histogram(
    "collab_fanout_seconds",
    "Time from accepting an update to handing it to every other connection of its"
    " document (one observation per batch: what a loop turn accepted).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
COMPACTIONS = Counter("collab_compactions_total", "Compactions of a document's log run.")
COMPACTION_SECONDS = Histogram(
    "collab_compaction_seconds",
    "How long each compaction took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STORE_BATCH_ROWS = Histogram(
    "collab_store_batch_rows",
    "Rows (merged updates) written by each group commit.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
COMMIT_SECONDS = Histogram(
    "collab_commit_seconds",
    "Time from accepting an update to its group commit being durable.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)
WEBHOOK_ATTEMPTS = Counter(
    "collab_webhook_attempts_total",
    "Webhook requests made, by result: ok (a 2xx answer), status (any other answer),"
    " timeout, error (no answer: refused, reset, TLS, DNS).",
    ["result"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "collab_webhook_attempt_seconds",
    "How long each webhook request took, whatever its result.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_DELIVERIES = Counter(
    "collab_webhook_deliveries_total",
    "Webhook calls ended, by outcome: delivered, refused (a 3xx or 4xx answer, not"
    " retried), gave_up (every attempt failed), dropped (the queue was full),"
    " abandoned (still waiting at shutdown).",
    ["outcome"],
)
WEBHOOK_PENDING = Gauge(
    "collab_webhook_pending", "Documents with a webhook call waiting or in flight (all URLs)."
)
BUS_CONNECTED = Gauge(
    "collab_bus_connected", "1 while the node is connected to its bus (redis, nats).", ["bus"]
)
BUS_RECONNECTS = Counter(
    "collab_bus_reconnects_total", "Connections to the bus lost (and re-established).", ["bus"]
)
BUS_MESSAGES = Counter(
    "collab_bus_messages_total",
    "Messages published to (out) and read from (in) the bus.",
    ["bus", "direction"],
)
BUS_DROPPED = Counter(
    "collab_bus_dropped_total",
    "Bus messages dropped: disconnected, queue_full (publishing; the state exchange"
    " heals them), too_large, malformed (received).",
    ["bus", "reason"],
)

#: (ticket, monotonic time its first update was accepted), oldest first; see note_stored.
_awaiting_commit: deque[tuple[int, float]] = deque()
#: The most recent accept-to-commit latencies, in seconds, for exact percentiles at
#: ``GET /api/stats`` (the histogram above only has buckets). Bounded: 100k floats.
_recent_commits: deque[float] = deque(maxlen=100_000)


#: Messages and bytes in and out by y-websocket message type (the frame's first byte),
#: kept as plain integers on the hot path and read by :class:`_TrafficCollector` when
#: /metrics is scraped: a prometheus counter per delivery would cost a lock each.
MESSAGE_TYPES = {0: "sync", 1: "awareness", 2: "auth", 3: "query_awareness", 100: "ack"}
traffic_in: dict[int, list[int]] = {}
traffic_out: dict[int, list[int]] = {}


def count(table: dict[int, list[int]], frame: bytes) -> None:
    """Count one frame (its type, its bytes) in ``traffic_in`` or ``traffic_out``."""
    kind = frame[0] if frame else -1
    entry = table.get(kind)
    if entry is None:
        entry = table[kind] = [0, 0]
    entry[0] += 1
    entry[1] += len(frame)


class _TrafficCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        for direction, table in (("in", traffic_in), ("out", traffic_out)):
            messages = CounterMetricFamily(
                f"collab_messages_{direction}",
                f"Websocket messages {'received' if direction == 'in' else 'sent'},"
                " by y-websocket message type.",
                labels=["type"],
            )
            size = CounterMetricFamily(
                f"collab_bytes_{direction}",
                f"Bytes of websocket messages {'received' if direction == 'in' else 'sent'},"
                " by y-websocket message type.",
                labels=["type"],
            )
            for kind, (n, b) in sorted(table.items()):
                label = MESSAGE_TYPES.get(kind, "other")
                messages.add_metric([label], n)
                size.add_metric([label], b)
            yield messages
            yield size


REGISTRY.register(_TrafficCollector())


def note_stored(ticket: int, accepted_at: float) -> None:
    """A room handed the store, as ``ticket``, updates it accepted from ``accepted_at`` on
    (``time.monotonic()``)."""
    _awaiting_commit.append((ticket, accepted_at))


def note_committed(durable_ticket: int, committed_at: float) -> None:
    """The store made every ticket up to ``durable_ticket`` durable at ``committed_at``."""
    while _awaiting_commit and _awaiting_commit[0][0] <= durable_ticket:
        _, accepted_at = _awaiting_commit.popleft()
        latency = committed_at - accepted_at
        COMMIT_SECONDS.observe(latency)
        _recent_commits.append(latency)


def stats() -> dict[str, Any]:
    """Accept-to-commit latency percentiles over the last 100k commits, in milliseconds."""
    values = sorted(_recent_commits)
    if not values:
        return {"commit_latency_ms": {"n": 0, "p50": None, "p99": None, "max": None}}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)

    return {
        "commit_latency_ms": {
            "n": len(values),
            "p50": at(0.5),
            "p99": at(0.99),
            "max": round(values[-1] * 1000, 3),  # of the window, like the percentiles
        }
    }


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, with their content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
