"""--webhook against a real receiver: an HTTP server in this process on a real socket,
called by a real ``collab serve`` process while pycrdt clients edit."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from pycrdt import Text

from collab.client import Client
from tests.conftest import ROOT, ServerProcess, free_port
from tests.integration.test_metrics import scrape

SECRET = "webhook-test-secret-" * 3
Answer = int | str  # a status, or "hang" / "endless" (200 with a body that never ends)


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """An ASGI app recording every request; answers with ``answers`` in turn, then 200."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    #: Set at teardown: every hanging request ends.
    release: anyio.Event = field(default_factory=anyio.Event)
    #: Bytes of endless bodies sent before the client went away, one entry per such body.
    endless_sent: list[int] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.calls.append(Call(scope["path"], headers, body))
        self._changed.set()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await self.release.wait()
            answer = 200
        if answer == "endless":
            await self._endless(receive, send)
            return
        assert isinstance(answer, int)
        extra = [(b"location", b"/elsewhere")] if 300 <= answer < 400 else []
        await send({"type": "http.response.start", "status": answer, "headers": extra})
        await send({"type": "http.response.body", "body": b"{}"})

    async def _endless(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        gone = anyio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        sent = 0
        chunk = b"x" * 65536
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            while not gone.is_set() and sent < 1024 * len(chunk):  # 64 MiB at most
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                await anyio.sleep(0)
            tg.cancel_scope.cancel()
        self.endless_sent.append(sent if gone.is_set() else -1)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                self._changed = anyio.Event()
                await self._changed.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = Receiver()
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
    )
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        app.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield app
        finally:
            app.release.set()
            server.should_exit = True


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``collab serve`` with the arguments given; each is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(tmp_path / "data" / "c.db", tmp_path / "server.log", *args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()
        print(f"--- collab serve log ---\n{server.log()[-20000:]}")


def events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    return [e for e in map(json.loads, lines) if e.get("event") == name]


async def wait_for_events(
    server: ServerProcess, name: str, predicate: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The server's ``name`` log events, once ``predicate`` holds for them."""
    with anyio.fail_after(20):
        while not predicate(found := events(server, name)):
            await anyio.sleep(0.05)
    return found


def readme_verify() -> Callable[..., dict[str, Any]]:
    """The receiver's ``verify`` exactly as the README's Webhooks section prints it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


async def edit(server: ServerProcess, name: str, times: int = 1) -> None:
    """``times`` edits of ``name``, each on disk before the next is made."""
    async with Client(server.url(name), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        for i in range(times):
            text.insert(len(text), f"{i} ")
            await client.wait_durable()


def webhook_args(receiver: Receiver, *extra: str) -> tuple[str, ...]:
    return ("--webhook", receiver.url, "--webhook-secret", SECRET, *extra)


async def test_a_burst_of_edits_is_one_signed_call_covering_its_range(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    server = start(*webhook_args(receiver))  # the default debounce, 2 s
    await edit(server, "notes/plan", times=10)  # ten commits, seq 1 to 10
    await receiver.wait_for(lambda: len(receiver.calls) == 1)
    (call,) = receiver.calls
    assert call.path == "/hook" and call.headers["content-type"] == "application/json"
    body = call.json
    assert (body["document"], body["epoch"], body["first_seq"], body["last_seq"]) == (
        "notes/plan",
        0,
        1,
        10,
    )
    assert body["event"] == "document.changed" and body["attempt"] == 1
    assert call.headers["x-collab-delivery"] == body["delivery"]

    verify = readme_verify()
    assert verify(call.body, call.headers["x-collab-signature"], SECRET) == body
    with pytest.raises(ValueError, match="bad signature"):
        verify(call.body, call.headers["x-collab-signature"], SECRET.upper())
    with pytest.raises(ValueError, match="bad signature"):  # one byte of the body changed
        verify(
            call.body.replace(b'"last_seq":10', b'"last_seq":11'),
            call.headers["x-collab-signature"],
            SECRET,
        )

    # Nothing else was sent about the burst: the next call starts right after it.
    await edit(server, "notes/plan")
    await receiver.wait_for(lambda: len(receiver.calls) == 2)
    later = receiver.calls[1].json
    assert (later["first_seq"], later["last_seq"]) == (11, 11)
    assert later["delivery"] != body["delivery"]
    (delivered, _) = await wait_for_events(server, "webhook.attempt", lambda e: len(e) == 2)
    assert delivered["outcome"] == "delivered" and delivered["status"] == 200
    assert delivered["url"] == receiver.url and delivered["doc"] == "notes/plan"
    assert SECRET not in server.log()


async def test_a_failed_call_is_retried_until_the_receiver_answers(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    receiver.answers = [500, 503]
    server = start(
        *webhook_args(receiver, "--webhook-debounce", "0", "--webhook-retry-delay", "0.05")
    )
    await edit(server, "retried")
    await receiver.wait_for(lambda: len(receiver.calls) == 3)
    bodies = [c.json for c in receiver.calls]
    assert [b["attempt"] for b in bodies] == [1, 2, 3]
    assert len({b["delivery"] for b in bodies}) == 1  # one call, three attempts
    assert {(b["first_seq"], b["last_seq"]) for b in bodies} == {(1, 1)}
    attempts = await wait_for_events(server, "webhook.attempt", lambda e: len(e) == 3)
    assert [(a["status"], a["outcome"]) for a in attempts] == [
        (500, "retrying"),
        (503, "retrying"),
        (200, "delivered"),
    ]
    assert all(a["retry_in"] > 0 for a in attempts[:2])
    samples = scrape(server)
    assert samples['collab_webhook_attempts_total{result="status"}'] == 2
    assert samples['collab_webhook_attempts_total{result="ok"}'] == 1
    assert samples['collab_webhook_deliveries_total{outcome="delivered"}'] == 1
    assert samples["collab_webhook_attempt_seconds_count"] == 3
    assert samples["collab_webhook_pending"] == 0


async def test_a_call_is_given_up_after_the_configured_attempts(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    receiver.answers = [500] * 3
    nobody = f"http://127.0.0.1:{free_port()}/down"  # a second URL, where nothing listens
    server = start(
        *webhook_args(
            receiver,
            "--webhook",
            nobody,
            "--webhook-debounce",
            "0",
            "--webhook-retry-delay",
            "0.05",
            "--webhook-attempts",
            "3",
        )
    )
    await edit(server, "doomed")
    attempts = await wait_for_events(
        server, "webhook.attempt", lambda e: sum(a["outcome"] == "gave_up" for a in e) == 2
    )
    for url, result in ((receiver.url, "status"), (nobody, "error")):
        mine = [a for a in attempts if a["url"] == url]
        assert [(a["attempt"], a["outcome"], a["result"]) for a in mine] == [
            (1, "retrying", result),
            (2, "retrying", result),
            (3, "gave_up", result),
        ]
        assert mine[-1]["level"] == "error" and "given up after 3 attempts" in mine[-1]["msg"]
    assert len(receiver.calls) == 3
    samples = scrape(server)
    assert samples['collab_webhook_deliveries_total{outcome="gave_up"}'] == 2
    assert samples['collab_webhook_attempts_total{result="status"}'] == 3
    assert samples['collab_webhook_attempts_total{result="error"}'] == 3
    # The document is free again: its next change is a new call, and the gap shows.
    await edit(server, "doomed")
    await receiver.wait_for(lambda: len(receiver.calls) == 4)
    later = receiver.calls[3].json
    assert later["attempt"] == 1 and (later["first_seq"], later["last_seq"]) == (2, 2)


async def test_a_hanging_receiver_never_delays_editing_or_commits(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    receiver.answers = ["hang"]
    server = start(
        *webhook_args(
            receiver,
            "--webhook-debounce",
            "0",
            "--webhook-timeout",
            "600",
            "--webhook-concurrency",
            "1",
            "--webhook-queue",
            "3",
        )
    )
    await edit(server, "first")
    await receiver.wait_for(lambda: len(receiver.calls) == 1)  # and it hangs there
    # Forty documents edited and committed, each seen by a second client, while the only
    # request slot is stuck: nothing of it waits for the receiver.
    with anyio.fail_after(60):
        for i in range(40):
            async with (
                Client(server.url(f"doc-{i}"), ack=True) as writer,
                Client(server.url(f"doc-{i}")) as reader,
            ):
                await writer.synced()
                await reader.synced()
                text = f"edit {i}"
                writer.doc.get("content", type=Text).insert(0, text)
                await writer.wait_durable()
                await reader.wait_for(
                    lambda r=reader, t=text: str(r.doc.get("content", type=Text)) == t
                )
    assert len(receiver.calls) == 1
    samples = scrape(server)
    # The table holds three documents ("first", in flight, and two more); the rest dropped.
    assert samples["collab_webhook_pending"] == 3
    assert samples['collab_webhook_deliveries_total{outcome="dropped"}'] == 38
    assert "webhook queue of " + receiver.url + " is full" in server.log()
    # Shutdown does not wait for the receiver for long either, and says what it dropped.
    assert await anyio.to_thread.run_sync(server.stop) == 0
    (abandoned,) = events(server, "webhook.abandoned")
    assert abandoned["count"] == 3


async def test_redirects_are_not_followed_nor_retried(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    receiver.answers = [302]
    server = start(*webhook_args(receiver, "--webhook-debounce", "0"))
    await edit(server, "moved")
    (attempt,) = await wait_for_events(server, "webhook.attempt", lambda e: len(e) == 1)
    assert (attempt["status"], attempt["outcome"]) == (302, "refused")
    assert [c.path for c in receiver.calls] == ["/hook"]
    assert scrape(server)['collab_webhook_deliveries_total{outcome="refused"}'] == 1


async def test_an_endless_answer_is_not_read_to_its_end(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    receiver.answers = ["endless"]
    server = start(*webhook_args(receiver, "--webhook-debounce", "0"))
    await edit(server, "chatty")
    (attempt,) = await wait_for_events(server, "webhook.attempt", lambda e: len(e) == 1)
    assert attempt["outcome"] == "delivered"
    await receiver.wait_for(lambda: bool(receiver.endless_sent))
    (sent,) = receiver.endless_sent
    assert 0 < sent < 64 * 1024 * 1024  # collab hung up long before the end


async def test_a_change_waiting_for_its_debounce_is_sent_at_shutdown(
    receiver: Receiver, start: Callable[..., ServerProcess]
) -> None:
    server = start(*webhook_args(receiver, "--webhook-debounce", "600"))
    await edit(server, "last words", times=3)
    assert receiver.calls == []  # still debounced
    assert await anyio.to_thread.run_sync(server.stop) == 0
    (call,) = receiver.calls
    assert (call.json["document"], call.json["first_seq"], call.json["last_seq"]) == (
        "last words",
        1,
        3,
    )
    assert events(server, "webhook.abandoned") == []
