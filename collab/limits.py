"""Resource limits, pure: token buckets for what a connection sends, and the connection caps.

Nothing here does I/O or knows ASGI; the websocket endpoint asks and enforces (closing
the offender with the documented code) and counts every hit in ``collab.metrics``.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

from collab.config import Settings


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens at ``now`` (monotonic seconds); False if too few."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


@dataclass(slots=True)
class RateLimit:
    """One connection's two buckets: messages and bytes."""

    messages: TokenBucket
    bytes: TokenBucket

    @classmethod
    def from_settings(cls, settings: Settings, now: float) -> RateLimit:
        return cls(
            TokenBucket(settings.rate_messages, settings.burst_messages, stamp=now),
            TokenBucket(settings.rate_bytes, settings.burst_bytes, stamp=now),
        )

    def allows(self, size: int, now: float) -> str | None:
        """None if a message of ``size`` bytes may go on at ``now``, else what ran out."""
        if not self.messages.take(1, now):
            return "messages"
        if not self.bytes.take(size, now):
            return "bytes"
        return None


def file_descriptor_limit() -> int:
    """The process's soft limit on open files (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


#: File descriptors kept for everything but client sockets: the database and its WAL,
#: the listening sockets, logs, health checks and the admin commands' own connections.
RESERVED_DESCRIPTORS = 128


def connection_limit(settings: Settings) -> int:
    """The cap on open connections: ``--max-connections``, kept below what the process
    may open (a server out of descriptors cannot even answer ``/healthz``)."""
    room = max(file_descriptor_limit() - RESERVED_DESCRIPTORS, 16)
    return min(settings.max_connections, room) if settings.max_connections else room


class ConnectionCaps:
    """Open connections in total, per client address and per document, with their caps."""

    def __init__(self, total: int, per_address: int, per_document: int) -> None:
        self.total_cap = total
        self.per_address_cap = per_address
        self.per_document_cap = per_document
        self.total = 0
        self.by_address: Counter[str] = Counter()
        self.by_document: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionCaps:
        return cls(
            connection_limit(settings),
            settings.max_connections_per_address,
            settings.max_connections_per_document,
        )

    def refusal(self, address: str, document: str) -> str | None:
        """Why one more connection from ``address`` to ``document`` is refused, or None."""
        if self.total >= self.total_cap:
            return f"the server has {self.total} connections, its limit"
        if self.by_address[address] >= self.per_address_cap:
            return f"too many connections from your address (limit {self.per_address_cap})"
        if self.by_document[document] >= self.per_document_cap:
            return f"this document has {self.per_document_cap} connections, its limit"
        return None

    def acquire(self, address: str, document: str) -> None:
        self.total += 1
        self.by_address[address] += 1
        self.by_document[document] += 1

    def release(self, address: str, document: str) -> None:
        self.total -= 1
        for counter, key in ((self.by_address, address), (self.by_document, document)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]  # bounded by open connections, not by all ever seen


class LogThrottle:
    """At most one log line per ``key`` every ``interval`` seconds; the lines held back in
    between are counted and reported with the next one. A flood of refused connections
    must not become a flood of log lines (20,000 connections once logged 50 MB)."""

    def __init__(self, log: logging.Logger, interval: float = 10.0) -> None:
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def warning(self, key: str, message: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held and last is not None:
            message += f" (and {held} more like it in the last {now - last:.0f} s)"
        self.log.warning("%s", message)
