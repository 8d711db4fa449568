"""The client's pure parts: backoff, which closes are final, URLs, coverage of a state."""

from __future__ import annotations

import pytest

from collab.client import FIRST_BACKOFF, backoff, covers, document_of, final_close


def test_backoff_doubles_up_to_its_cap_and_is_jittered_down_by_at_most_half() -> None:
    highest = [backoff(n, 10.0, jitter=lambda: 0.0) for n in range(12)]
    assert highest[:4] == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF, 8 * FIRST_BACKOFF]
    assert max(highest) == 10.0 == highest[-1]
    assert backoff(3, 10.0, jitter=lambda: 1.0) == highest[3] / 2
    assert backoff(10_000, 10.0, jitter=lambda: 0.0) == 10.0  # no overflow after a long outage


@pytest.mark.parametrize(
    ("code", "final"),
    [(None, False), (1000, False), (1001, False), (1006, False), (1008, False), (4400, True)]
    + [(4401, True), (4409, True), (4499, True), (4500, False), (4503, False)],
)
def test_only_4000_to_4499_say_do_not_reconnect(code: int | None, final: bool) -> None:
    assert final_close(code) is final


def test_the_document_of_a_url_ignores_its_query() -> None:
    assert document_of("ws://h:1/notes/plan?ack=1&token=x") == "ws://h:1/notes/plan"


def test_covers_compares_every_client() -> None:
    assert covers({1: 5, 2: 3}, {1: 5})
    assert not covers({1: 4}, {1: 5})
    assert not covers({}, {2: 1})
    assert covers({}, {})
