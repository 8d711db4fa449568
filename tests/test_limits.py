"""collab.limits: token buckets and connection caps, without a server."""

from __future__ import annotations

from collab.config import Settings
from collab.limits import (
    RESERVED_DESCRIPTORS,
    ConnectionCaps,
    RateLimit,
    TokenBucket,
    connection_limit,
    file_descriptor_limit,
)


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, stamp=0.0)
    assert [bucket.take(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(1, 0.05)  # half a token refilled
    assert bucket.take(1, 0.1)
    assert bucket.take(4, 10.0) and not bucket.take(2, 10.0)  # refills to the burst only


def test_a_rate_limit_says_which_bucket_ran_out() -> None:
    limit = RateLimit(TokenBucket(100, 3, stamp=0.0), TokenBucket(1000, 2000, stamp=0.0))
    assert limit.allows(1500, 0.0) is None
    assert limit.allows(600, 0.0) == "bytes"
    assert limit.allows(10, 0.0) is None
    assert limit.allows(10, 0.0) == "messages"


def test_caps_count_per_address_and_document_and_forget_what_closed() -> None:
    caps = ConnectionCaps(total=3, per_address=2, per_document=2)
    caps.acquire("a", "doc")
    caps.acquire("a", "other")
    assert caps.refusal("a", "third") is not None and "address" in str(caps.refusal("a", "x"))
    caps.acquire("b", "doc")
    assert "document" in str(caps.refusal("c", "doc")) or "server" in str(caps.refusal("c", "doc"))
    assert "server" in str(caps.refusal("c", "new"))
    for address, document in (("a", "doc"), ("a", "other"), ("b", "doc")):
        caps.release(address, document)
    assert caps.total == 0 and not caps.by_address and not caps.by_document
    assert caps.refusal("a", "doc") is None


def test_the_connection_limit_stays_below_the_descriptor_limit() -> None:
    room = file_descriptor_limit() - RESERVED_DESCRIPTORS
    assert connection_limit(Settings(max_connections=0)) == room
    assert connection_limit(Settings(max_connections=10**9)) == room
    assert connection_limit(Settings(max_connections=50)) == min(50, room)
