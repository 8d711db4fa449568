"""collab.webhooks without a receiver: the table, the backoff, the settings.

The deliveries themselves are tested against a real receiver and a real server in
tests/integration/test_webhooks.py.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.config import Settings
from collab.hooks import StorePayload
from collab.webhooks import (
    ENTRY_BYTES,
    MAX_RETRY_DELAY,
    Target,
    WebhookError,
    Webhooks,
    redacted,
    retry_delay,
    sign,
)
from tests.test_config_file import collab, settings_of

URL = "http://127.0.0.1:9/hook"
SECRET = "s" * 32


def stored(document: str, first: int, last: int | None = None, epoch: int = 0) -> StorePayload:
    return StorePayload(document, b"", epoch, first, first if last is None else last, 1000.0)


def target(**settings: object) -> Target:
    return Target(URL, Settings(webhooks=(URL,), **settings), None)  # type: ignore[arg-type]


@given(
    st.integers(1, 200),
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 1, exclude_max=True, allow_nan=False),
)
def test_retry_delay_doubles_is_capped_and_jittered_by_at_most_half(
    failed: int, first: float, jitter: float
) -> None:
    full = min(MAX_RETRY_DELAY, first * 2.0 ** (failed - 1))
    delay = retry_delay(failed, first, jitter=jitter)
    assert full / 2 <= delay <= full
    assert retry_delay(failed, first, jitter=0) == full / 2


def test_retry_delays_grow_from_the_first() -> None:
    assert [retry_delay(n, 1.0, jitter=0.999999) for n in range(1, 5)] == pytest.approx(
        [1, 2, 4, 8], rel=1e-5
    )
    assert retry_delay(30, 1.0, jitter=0.999999) == pytest.approx(MAX_RETRY_DELAY, rel=1e-5)


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"document":"d"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET.encode(), body) == f"sha256={expected}"


async def test_commits_to_one_document_merge_into_one_pending_range() -> None:
    t = target(webhook_debounce=2.0, webhook_max_wait=10.0)
    t.note(stored("d", 1), now=100.0)
    t.note(stored("d", 2, 5), now=101.0)
    (entry,) = t.entries.values()
    assert entry.pending is not None
    assert (entry.pending.epoch, entry.pending.first_seq, entry.pending.last_seq) == (0, 1, 5)
    assert entry.due == 103.0  # debounced: 2 s after the last commit
    t.note(stored("d", 6), now=109.5)
    assert entry.due == 110.0  # but at most 10 s after the first
    t.note(stored("d", 1, 2, epoch=1), now=111.0)  # the document was deleted meanwhile
    assert (entry.pending.epoch, entry.pending.first_seq, entry.pending.last_seq) == (1, 1, 2)
    assert len(t.entries) == 1


async def test_the_table_is_bounded_in_entries() -> None:
    t = target(webhook_queue_size=3)
    for i in range(10):
        t.note(stored(f"doc-{i}", 1), now=0.0)
    assert sorted(t.entries) == ["doc-0", "doc-1", "doc-2"]
    t.note(stored("doc-0", 2), now=1.0)  # a document already waiting still merges
    assert t.entries["doc-0"].pending.last_seq == 2  # type: ignore[union-attr]


async def test_the_table_is_bounded_in_bytes() -> None:
    t = target(webhook_queue_bytes=64 * 1024)
    long = "n" * 500
    for i in range(100):
        t.note(stored(f"{long}{i:03d}", 1), now=0.0)
    per_entry = 503 + ENTRY_BYTES
    assert len(t.entries) == 64 * 1024 // per_entry
    assert t.bytes == len(t.entries) * per_entry <= 64 * 1024


def test_logs_name_a_url_without_its_credentials_or_query() -> None:
    assert redacted("https://ada:pw@hooks.example:8443/in/collab?token=abc#x") == (
        "https://hooks.example:8443/in/collab"
    )
    assert redacted("http://[::1]/hook") == "http://[::1]/hook"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "hooks.example/x",
        "http:///nohost",
        "http://exa mple/",
        "http://hooks.example:99999/",
        "http://hooks.example:port/",
    ],
)
def test_a_webhook_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(WebhookError, match="--webhook number 1") as raised:
        Webhooks(Settings(webhooks=(url,), webhook_secret=SECRET))
    assert url not in str(raised.value)  # it may hold a token


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(WebhookError, match="is 8 bytes; use at least 32"):
        Webhooks(Settings(webhooks=(URL,), webhook_secret="12345678"))


def test_webhooks_come_from_flags_environment_or_file_and_the_secret_is_masked(
    tmp_path: Path,
) -> None:
    config = tmp_path / "collab.toml"
    config.write_text('webhook = ["http://a.example/1", "https://b.example/2"]\n')
    result = collab("config", "--config", str(config), env={"COLLAB_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    shown = settings_of(result.stdout)
    assert shown["webhook"] == f'["http://a.example/1", "https://b.example/2"]  # file {config}'
    assert shown["webhook-secret"] == '"********"  # environment COLLAB_WEBHOOK_SECRET'
    assert SECRET not in result.stdout + result.stderr
    result = collab("config", env={"COLLAB_WEBHOOK": "http://a.example/1 http://b.example/2"})
    assert settings_of(result.stdout)["webhook"].startswith(
        '["http://a.example/1", "http://b.example/2"]'
    )
    result = collab("config", "--webhook", "http://a.example/1", "--webhook", "http://c/3")
    assert settings_of(result.stdout)["webhook"] == '["http://a.example/1", "http://c/3"]  # flag'


def test_a_bad_webhook_setting_is_one_clear_line() -> None:
    for args, message in (
        (["--webhook", "ftp://hooks.example/x"], "must be an http:// or https:// URL"),
        (["--webhook", URL, "--webhook-secret", "short"], "the webhook secret is 5 bytes"),
    ):
        result = collab("serve", "--port", "0", *args)
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
