"""Webhooks: a signed, debounced JSON ``POST`` to each ``--webhook`` URL when a document
changed, as an extension on the ``on_store`` hook.

Theory of operation. Each URL is a :class:`Target` holding a table of the documents it
has something to tell about, bounded in entries (``--webhook-queue``) and bytes
(``--webhook-queue-bytes``). ``on_store`` runs on the event loop once per group commit
per document and only touches that table, at constant cost:

* a document not in the table gets an entry whose *pending* range is the commit's log
  positions (epoch, first and last seq), due ``--webhook-debounce`` seconds later. If the
  table is full the change is dropped: counted, logged, and visible to the receiver as a
  gap between one call's ``last_seq`` and the next one's ``first_seq``;
* a document in the table extends its pending range to the commit's last seq (or, in a
  new epoch, replaces it: the old epoch is retired), and its due time moves to
  ``debounce`` after this commit, but never past ``--webhook-max-wait`` after the first
  change of the range.

One runner task per URL waits for a free slot (``--webhook-concurrency``) and the entry
due first, then turns its pending range into a *delivery*: a fixed range, an id and an
attempt count. Each attempt is one request under a deadline (``--webhook-timeout``):

* 2xx: delivered;
* 408, 429, 5xx, a timeout or no answer: due again after a capped exponential backoff
  with jitter (:func:`retry_delay`, or a longer ``Retry-After``), until
  ``--webhook-attempts`` attempts were made: then given up;
* any other answer (3xx: redirects are never followed; 4xx): refused, not retried.

While a delivery is in flight or waiting to retry, later commits collect in the entry's
pending range, so calls about one document go to one URL one at a time and in log order,
each range starting after the last one's. An entry leaves the table once its delivery
ended and nothing is pending.

Never: a hook that waits or does I/O, an unbounded table, two calls about one document
in flight to one URL, a redirect followed, more than 64 KiB of a response read, a secret
or a URL's credentials or query in a log line.

Deliveries are kept in memory only. On shutdown (after the store committed everything)
pending calls are sent at once, for at most a few seconds; what is still waiting then is
counted as abandoned. A receiver that must not miss a change keeps the last position it
was told of and reads from there when a call shows a gap, or after a restart.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from anyio import AsyncContextManagerMixin

from collab import __version__, logs, metrics
from collab.auth import MIN_SECRET_BYTES
from collab.config import Settings
from collab.errors import CollabError
from collab.hooks import Extension, StorePayload
from collab.limits import LogThrottle

log = logging.getLogger("collab.webhooks")

#: The header that carries the signature: ``sha256=`` and the HMAC-SHA256 of the body, hex.
SIGNATURE_HEADER = "X-Collab-Signature"
#: The header that carries the delivery id: the same on every attempt of one call.
DELIVERY_HEADER = "X-Collab-Delivery"
#: The ``event`` of every call's body.
EVENT = "document.changed"
#: Longest wait between two attempts (before jitter).
MAX_RETRY_DELAY = 300.0
#: Bytes of a response read (and thrown away) so its connection can be reused; a longer
#: body closes the connection instead.
MAX_RESPONSE_BYTES = 64 * 1024
#: Bytes one table entry is counted as, besides its document name: the entry, its ranges,
#: its heap slot, the delivery id and the body built for each attempt (tracemalloc, 10,000
#: entries with 9-byte names: 380 bytes each waiting, 740 with a delivery and its body).
ENTRY_BYTES = 1024
#: Most seconds shutdown waits for the pending calls to go out.
SHUTDOWN_GRACE = 5.0
#: Answers, other than 5xx, worth another attempt: a timeout, and "too many requests".
RETRIED_STATUSES = frozenset({408, 429})


class WebhookError(CollabError):
    """The webhook settings cannot be used (a URL that is not http or https, a short secret)."""


def sign(secret: bytes, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def retry_delay(
    failed_attempts: int, first: float, cap: float = MAX_RETRY_DELAY, jitter: float | None = None
) -> float:
    """Seconds to wait after ``failed_attempts`` failed attempts: ``first`` doubled each
    time, at most ``cap``, then a random half of it taken off ("equal jitter"), so the
    retries of calls that failed together spread out. ``jitter`` in [0, 1) fixes the
    random part (tests)."""
    delay = min(cap, first * 2.0 ** max(failed_attempts - 1, 0))
    return delay / 2 + delay / 2 * (random.random() if jitter is None else jitter)


def parse_retry_after(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header; None when absent or an HTTP date."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def redacted(url: str) -> str:
    """``url`` without credentials, query or fragment: what log lines name it by."""
    parsed = httpx.URL(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def check_url(url: str, index: int) -> str:
    """``url`` if it is an absolute http or https URL.

    :raises WebhookError: it is not (the message does not repeat it: it may hold a token).
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise WebhookError(f"--webhook number {index} is not a valid URL: {e}") from None
    if any(c.isspace() for c in url) or "%" in parsed.host or not 0 < (parsed.port or 1) < 65536:
        raise WebhookError(f"--webhook number {index} is not a valid URL")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookError(
            f"--webhook number {index} must be an http:// or https:// URL with a host"
        )
    return url


@dataclass(slots=True)
class LogRange:
    """Positions in one document's log, told in one call."""

    epoch: int
    first_seq: int
    last_seq: int
    #: When the newest update of the range was received (Unix seconds).
    changed_at: float
    #: When the range's first change was noted (monotonic seconds): for the max wait.
    noted_at: float


@dataclass(slots=True)
class Delivery:
    """One call: its range stays fixed across attempts."""

    id: str
    range: LogRange
    attempts: int = 0

    def body(self, document: str, sent_at: float) -> bytes:
        """The JSON body of this attempt (what the signature covers)."""
        r = self.range
        return json.dumps(
            {
                "event": EVENT,
                "document": document,
                "epoch": r.epoch,
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "changed_at": round(r.changed_at, 3),
                "delivery": self.id,
                "attempt": self.attempts,
                "sent_at": round(sent_at, 3),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()


@dataclass(slots=True, eq=False)
class Entry:
    """One document's row in a target's table."""

    document: str
    #: What the entry counts against ``--webhook-queue-bytes``.
    cost: int
    #: When the runner should act on it next (monotonic seconds): send the pending range,
    #: or retry the delivery.
    due: float
    #: Changes not yet in any delivery.
    pending: LogRange | None = None
    #: The call in flight or waiting to retry.
    delivery: Delivery | None = None
    #: An attempt is in flight (the entry is then not in the heap).
    sending: bool = False


class Target:
    """One ``--webhook`` URL: its table, its runner, its connections."""

    def __init__(self, url: str, settings: Settings, secret: bytes | None) -> None:
        self.url = url
        self.label = redacted(url)
        self.settings = settings
        self._secret = secret
        self.entries: dict[str, Entry] = {}
        self.bytes = 0
        # (due, tie-breaker, document): one item per entry that is not sending, whose due
        # is at most the entry's (an entry's due only moves later while it waits, so the
        # runner re-files an item it finds early instead of the hook searching the heap).
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._wake = anyio.Event()
        self._emptied = anyio.Event()
        self._slots = anyio.Semaphore(settings.webhook_concurrency)
        self._hurry = False
        self._throttle = LogThrottle(log)

    # -- the hook side: on the event loop, no waiting ---------------------------------

    def note(self, payload: StorePayload, now: float) -> None:
        """A commit stored ``payload``'s range of ``payload.document`` at ``now``."""
        entry = self.entries.get(payload.document)
        if entry is None:
            self._add(payload, now)
            return
        pending = entry.pending
        if pending is None or pending.epoch != payload.epoch:
            pending = entry.pending = LogRange(
                payload.epoch, payload.first_seq, payload.last_seq, payload.received_at, now
            )
        else:
            pending.last_seq = payload.last_seq
            pending.changed_at = payload.received_at
        if entry.delivery is None:
            # Waiting for its debounce, which moves on (the heap item is re-filed when due).
            entry.due = self._due(pending, now)

    def _add(self, payload: StorePayload, now: float) -> None:
        settings = self.settings
        cost = len(payload.document.encode()) + ENTRY_BYTES
        if (
            len(self.entries) >= settings.webhook_queue_size
            or self.bytes + cost > settings.webhook_queue_bytes
        ):
            metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
            self._throttle.warning(
                "full",
                f"webhook queue of {self.label} is full ({len(self.entries)} documents,"
                f" {self.bytes} bytes): dropped the change to {payload.document!r}"
                f" (epoch {payload.epoch}, seq {payload.first_seq}-{payload.last_seq})",
            )
            return
        pending = LogRange(
            payload.epoch, payload.first_seq, payload.last_seq, payload.received_at, now
        )
        entry = Entry(payload.document, cost, self._due(pending, now), pending)
        self.entries[entry.document] = entry
        self.bytes += cost
        metrics.WEBHOOK_PENDING.inc()
        self._file(entry)

    def _due(self, pending: LogRange, now: float) -> float:
        if self._hurry:
            return now
        settings = self.settings
        return min(now + settings.webhook_debounce, pending.noted_at + settings.webhook_max_wait)

    def _file(self, entry: Entry) -> None:
        heapq.heappush(self._heap, (entry.due, next(self._order), entry.document))
        self._wake.set()

    def _remove(self, entry: Entry) -> None:
        del self.entries[entry.document]
        self.bytes -= entry.cost
        metrics.WEBHOOK_PENDING.dec()
        if not self.entries:
            self._emptied.set()

    # -- the runner --------------------------------------------------------------------

    async def run(self, client: httpx.AsyncClient) -> None:
        """Send what falls due, at most ``--webhook-concurrency`` requests at once, until
        cancelled."""
        async with anyio.create_task_group() as tg:
            while True:
                await self._slots.acquire()
                try:
                    entry = await self._next_due()
                except BaseException:
                    self._slots.release()
                    raise
                entry.sending = True
                if entry.delivery is None:
                    assert entry.pending is not None, "an entry waits for something"
                    entry.delivery = Delivery(uuid.uuid4().hex, entry.pending)
                    entry.pending = None
                tg.start_soon(self._attempt, client, entry)

    async def _next_due(self) -> Entry:
        while True:
            if not self._heap:
                await self._sleep(None)
                continue
            due, _, document = self._heap[0]
            entry = self.entries.get(document)
            if entry is None or entry.sending:  # no longer waiting (not expected)
                heapq.heappop(self._heap)
                continue
            if entry.due > due:  # its debounce moved on since it was filed
                heapq.heapreplace(self._heap, (entry.due, next(self._order), document))
                continue
            delay = due - time.monotonic()
            if delay > 0:
                await self._sleep(delay)
                continue
            heapq.heappop(self._heap)
            return entry

    async def _sleep(self, timeout: float | None) -> None:
        # Nothing runs between the caller's look at the heap and this: no wake-up is lost.
        self._wake = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._wake.wait()

    async def _attempt(self, client: httpx.AsyncClient, entry: Entry) -> None:
        delivery = entry.delivery
        assert delivery is not None and entry.sending
        delivery.attempts += 1
        started = time.monotonic()
        try:
            status, result, error, retry_after = await self._post(client, entry.document, delivery)
        except Exception as e:
            # A bug (ours or httpx's) must not end the runner, and with it the app: this
            # attempt failed, loudly.
            log.exception("webhook attempt to %s raised", self.label)
            status, result, error, retry_after = None, "error", f"{type(e).__name__}: {e}", None
        finally:
            self._slots.release()
        now = time.monotonic()
        took = now - started
        metrics.WEBHOOK_ATTEMPTS.labels(result).inc()
        metrics.WEBHOOK_ATTEMPT_SECONDS.observe(took)
        settings = self.settings
        retry_in: float | None = None
        if result == "ok":
            outcome = "delivered"
        elif status is not None and status < 500 and status not in RETRIED_STATUSES:
            outcome = "refused"
        elif delivery.attempts >= settings.webhook_attempts:
            outcome = "gave_up"
        else:
            outcome = "retrying"
            retry_in = retry_delay(delivery.attempts, settings.webhook_retry_delay)
            if retry_after is not None:
                retry_in = max(retry_in, min(retry_after, MAX_RETRY_DELAY))
        self._log_attempt(entry.document, delivery, outcome, status, result, error, took, retry_in)
        entry.sending = False
        if retry_in is not None:
            entry.due = now + retry_in
            self._file(entry)
            return
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        entry.delivery = None
        if entry.pending is not None:
            entry.due = self._due(entry.pending, now)
            self._file(entry)
        else:
            self._remove(entry)

    async def _post(
        self, client: httpx.AsyncClient, document: str, delivery: Delivery
    ) -> tuple[int | None, str, str | None, float | None]:
        """One attempt: (status, result, error, Retry-After seconds)."""
        body = delivery.body(document, time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"collab/{__version__}",
            DELIVERY_HEADER: delivery.id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        status: int | None = None
        retry_after: float | None = None
        try:
            with anyio.fail_after(self.settings.webhook_timeout):
                async with client.stream("POST", self.url, content=body, headers=headers) as r:
                    status = r.status_code
                    retry_after = parse_retry_after(r.headers.get("retry-after"))
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break  # leaving the block closes the connection
        except (TimeoutError, httpx.TimeoutException):
            if status is None:
                return None, "timeout", "no answer in time", None
        except httpx.HTTPError as e:  # refused, reset, DNS, TLS, a malformed answer
            if status is None:
                return None, "error", f"{type(e).__name__}: {e}"[:200], None
        # An answer counts even if its body then stalled or broke off.
        assert status is not None
        return status, "ok" if 200 <= status < 300 else "status", None, retry_after

    def _log_attempt(
        self,
        document: str,
        delivery: Delivery,
        outcome: str,
        status: int | None,
        result: str,
        error: str | None,
        took: float,
        retry_in: float | None,
    ) -> None:
        answer = f"answered {status}" if status is not None else (error or result)
        level, message = {
            "delivered": (logging.INFO, "webhook delivered"),
            "retrying": (logging.WARNING, f"webhook attempt failed ({answer}); will retry"),
            "gave_up": (
                logging.ERROR,
                f"webhook call given up after {delivery.attempts} attempts ({answer})",
            ),
            "refused": (logging.ERROR, f"webhook call refused by the receiver ({answer})"),
        }[outcome]
        r = delivery.range
        logs.event(
            log,
            level,
            "webhook.attempt",
            message,
            url=self.label,
            doc=document,
            delivery=delivery.id,
            attempt=delivery.attempts,
            outcome=outcome,
            result=result,
            status=status,
            error=error,
            duration=round(took, 3),
            retry_in=None if retry_in is None else round(retry_in, 3),
            epoch=r.epoch,
            first_seq=r.first_seq,
            last_seq=r.last_seq,
        )

    # -- shutdown ----------------------------------------------------------------------

    def hurry(self, hurry: bool = True) -> None:
        """From now on nothing waits for its debounce: everything pending is due now (or,
        with False, waits as usual again)."""
        self._hurry = hurry
        if not hurry:
            return
        now = time.monotonic()
        for entry in self.entries.values():
            if entry.delivery is None and not entry.sending:
                entry.due = now
        self._heap = [
            (e.due, next(self._order), e.document) for e in self.entries.values() if not e.sending
        ]
        heapq.heapify(self._heap)
        self._wake.set()

    async def wait_emptied(self) -> None:
        """Return once the table is empty."""
        while self.entries:
            self._emptied = anyio.Event()
            await self._emptied.wait()

    def abandon(self) -> int:
        """Forget every entry still waiting (shutdown); returns how many there were."""
        left = len(self.entries)
        if left:
            metrics.WEBHOOK_DELIVERIES.labels("abandoned").inc(left)
            metrics.WEBHOOK_PENDING.dec(left)
            logs.event(
                log,
                logging.WARNING,
                "webhook.abandoned",
                f"shutting down with {left} webhook calls to {self.label} not delivered",
                url=self.label,
                count=left,
            )
        self.entries.clear()
        self._heap.clear()
        self.bytes = 0
        return left


class Webhooks(Extension, AsyncContextManagerMixin):
    """The ``--webhook`` extension: one :class:`Target` per URL, fed by ``on_store``.

    Deliveries run while it is entered (``async with webhooks:``); ``collab.app`` enters
    it around the store, so the last commits of a shutdown are told too.

    :raises WebhookError: a URL or the secret cannot be used.
    """

    def __init__(self, settings: Settings) -> None:
        secret = settings.webhook_secret
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            # RFC 2104, section 3: a key shorter than the hash's output weakens the MAC.
            raise WebhookError(
                f"the webhook secret is {len(secret.encode())} bytes; use at least"
                f" {MIN_SECRET_BYTES} (for example: python -c 'import secrets;"
                " print(secrets.token_urlsafe(32))')"
            )
        self.settings = settings
        key = secret.encode() if secret is not None else None
        self.targets = [
            Target(check_url(url, i), settings, key)
            for i, url in enumerate(settings.webhooks, start=1)
        ]
        if self.targets and key is None:
            log.warning("no --webhook-secret: webhook calls are sent unsigned")

    def on_store(self, payload: StorePayload) -> None:
        now = time.monotonic()
        for target in self.targets:
            target.note(payload, now)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Webhooks]:
        settings = self.settings
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        follow_redirects=False,
                        timeout=settings.webhook_timeout,
                        limits=httpx.Limits(
                            max_connections=settings.webhook_concurrency,
                            max_keepalive_connections=settings.webhook_concurrency,
                        ),
                    )
                )
                for _ in self.targets
            ]
            async with anyio.create_task_group() as tg:
                for target, client in zip(self.targets, clients, strict=True):
                    target.hurry(False)
                    tg.start_soon(target.run, client)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._send_what_is_left()
                    tg.cancel_scope.cancel()
            for target in self.targets:
                target.abandon()

    async def _send_what_is_left(self) -> None:
        for target in self.targets:
            target.hurry()
        with anyio.move_on_after(min(SHUTDOWN_GRACE, self.settings.webhook_timeout)):
            for target in self.targets:
                await target.wait_emptied()


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "Webhooks",
    "WebhookError",
    "redacted",
    "retry_delay",
    "sign",
]
