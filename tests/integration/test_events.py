"""The change feed against a running server, read with httpx-sse: GET /api/docs/{name}/events
(one event per stored update, resumable by its id), POST /api/docs/{name}/awareness, and
what they answer to bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
from pycrdt import Awareness, Doc, Text

from collab.client import Client
from collab.errors import CloseCode
from tests.conftest import ROOT, ServerProcess, running_server
from tests.eventfeed import Writer, feed


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with a short keep-alive, under each ASGI server in turn."""
    yield from running_server(tmp_path, request.param, "--sse-keepalive", "0.2")


serving = contextmanager(running_server)


def events_url(server: ServerProcess, name: str, query: str = "") -> str:
    return f"{server.http_url}/api/docs/{quote(name, safe='')}/events{query}"


def collab(server: ServerProcess, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "collab", *args, "--db", str(server.db_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


async def test_each_stored_update_is_one_event_named_by_its_log_position(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "notes/plan")
    await writer.type("ab")
    async with feed(server.http_url, "notes/plan") as f:
        assert (await f.next()).event == "session"
        assert f.session and len(f.session) >= 24
        snapshot = await f.next()
        assert (snapshot.event, snapshot.id, f.text()) == ("snapshot", "0-2", "ab")
        assert (await f.next()).event == "synced"
        await writer.type("cd")
        await f.until_text("abcd")
        assert f.positions == [("snapshot", "0-2"), ("update", "0-3"), ("update", "0-4")]
    # httpx-sse skips comments: read a keep-alive as it comes, raw, with the retry field
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", events_url(server, "notes/plan")) as response:
            lines: list[str] = []
            with anyio.fail_after(10):
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == ": keep-alive":
                        break
    assert lines[0] == "retry: 1000"
    assert "event: snapshot" in lines and "id: 0-4" in lines


async def test_a_reader_resumes_after_a_dropped_connection_without_gap_or_duplicate(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "resume")
    await writer.type("one ")
    async with feed(server.http_url, "resume") as f:
        await f.until_text("one ")
    await writer.type("two ")  # while the reader is away
    async with feed(server.http_url, "resume", resume=f) as again:
        await again.until("synced")
        assert again.positions == [("update", f"0-{n}") for n in range(5, 9)]
        assert again.text() == "one two "
        await writer.type("3")
        await again.next()
        assert again.positions[-1] == ("update", "0-9")
        last = again.last_id
    # ?last_event_id= for clients that cannot set a header; the header wins over it
    async with feed(server.http_url, "resume", query=f"?last_event_id={last}") as by_query:
        await by_query.until("synced")
        assert by_query.positions == []
    async with feed(
        server.http_url, "resume", last_event_id="0-8", query="?last_event_id=0-1"
    ) as both:
        await both.until("synced")
        assert both.positions == [("update", "0-9")]
    # the whole document, rebuilt from one snapshot or from every update, is the server's
    async with feed(server.http_url, "resume", last_event_id="0-0") as whole:
        await whole.until("synced")
        assert whole.text() == "one two 3" and len(whole.positions) == 9


async def test_a_reader_resumes_across_a_server_restart(server: ServerProcess) -> None:
    writer = Writer(server.http_url, "restart")
    await writer.type("abc")
    async with feed(server.http_url, "restart") as f:
        await f.until_text("abc")
        await anyio.to_thread.run_sync(server.stop)
        await f.until("close")
        assert f.closed == {"code": CloseCode.GOING_AWAY, "reason": "server is shutting down"}
    await anyio.to_thread.run_sync(server.start)
    await writer.type("d")
    async with feed(server.http_url, "restart", resume=f) as again:
        await again.until_text("abcd")
        assert again.positions == [("update", "0-4")]


async def test_resume_across_compaction_keeping_history_gives_every_update(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "kept")
    await writer.type("ab")
    async with feed(server.http_url, "kept") as f:
        await f.until_text("ab")
    await writer.type("cdef")
    await anyio.to_thread.run_sync(
        lambda: collab(server, "docs", "compact", "kept", "--retention", "3600")
    )
    async with feed(server.http_url, "kept", resume=f) as again:
        await again.until("synced")
        assert again.positions == [("update", f"0-{n}") for n in range(3, 7)]
        assert again.text() == "abcdef"  # what came after 0-2, one update at a time


async def test_resume_past_a_compaction_without_history_gets_one_snapshot(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "squashed")
    await writer.type("abcdef")
    await anyio.to_thread.run_sync(
        lambda: collab(server, "docs", "compact", "squashed", "--retention", "0")
    )
    async with feed(server.http_url, "squashed", last_event_id="0-2") as f:
        await f.until("synced")
        assert f.positions == [("snapshot", "0-6")]
        assert f.text() == "abcdef"  # never a partial document
        await writer.type("g")
        await f.until_text("abcdefg")
        assert f.positions[-1] == ("update", "0-7")
    async with feed(server.http_url, "squashed", last_event_id="0-99") as ahead:  # ahead of the log
        await ahead.until("synced")
        assert ahead.positions == [("snapshot", "0-7")]


async def test_a_deleted_document_closes_its_streams_and_resumes_in_the_new_epoch(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "minutes")
    await writer.type("secret")
    async with feed(server.http_url, "minutes") as f:
        await f.until_text("secret")
        await anyio.to_thread.run_sync(lambda: collab(server, "docs", "delete", "minutes", "--yes"))
        await f.until("close")
        assert f.closed is not None and f.closed["code"] == CloseCode.STALE_EPOCH
    assert f.last_id == "0-6"
    async with feed(server.http_url, "minutes", resume=f) as again:
        await again.until("synced")
        assert again.positions == [("snapshot", "1-0")]
        assert again.text() == ""  # the retired epoch's text is gone for the reader too
        fresh = Writer(server.http_url, "minutes")
        await fresh.type("new")
        await again.until_text("new")
        assert again.positions[1:] == [("update", "1-1"), ("update", "1-2"), ("update", "1-3")]


async def test_an_update_another_process_stores_reaches_the_feed(server: ServerProcess) -> None:
    writer = Writer(server.http_url, "imported")
    await writer.type("a")
    other = Doc()
    other.get("content", type=Text).insert(0, "from the CLI ")
    path = server.db_path.parent / "other.ydoc"
    path.write_bytes(other.get_update())
    async with feed(server.http_url, "imported") as f:
        await f.until_text("a")
        await anyio.to_thread.run_sync(
            lambda: collab(server, "docs", "import", "imported", str(path))
        )
        with anyio.fail_after(10):
            while "from the CLI" not in f.text():
                await f.next()
        assert f.positions[-1] == ("update", "0-2")


async def test_awareness_posted_for_a_session_reaches_websockets_and_leaves_with_the_stream(
    server: ServerProcess,
) -> None:
    async with Client(server.url("presence")) as ws:
        await ws.synced()
        ws.awareness.set_local_state({"user": {"name": "Ada"}})
        async with feed(server.http_url, "presence", query="?awareness=1") as f:
            await f.until("synced")
            assert f.session is not None
            # Ada, already there, announced to the stream
            with anyio.fail_after(10):
                while not any(b"Ada" in a for a in f.awareness):
                    await f.next()
            mine = Awareness(Doc())
            mine.set_local_state({"user": {"name": "Grace"}})
            body = mine.encode_awareness_update([mine.client_id])
            url = f"{server.http_url}/api/docs/presence/awareness?session={f.session}"
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(url, content=body)
                assert response.status_code == 204, response.text
            await ws.wait_for(lambda: mine.client_id in ws.awareness.states)
            assert ws.awareness.states[mine.client_id] == {"user": {"name": "Grace"}}
            with anyio.fail_after(10):  # the sender hears its own state back, as on a websocket
                while not any(b"Grace" in a for a in f.awareness):
                    await f.next()
        # the stream ended: its awareness goes with it
        await ws.wait_for(lambda: mine.client_id not in ws.awareness.states)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, content=body)
        assert response.status_code == 404 and "reconnect" in response.json()["error"]


async def test_bad_requests_get_4xx_with_a_message_and_change_nothing(
    server: ServerProcess,
) -> None:
    writer = Writer(server.http_url, "doc")
    await writer.type("kept")
    base = f"{server.http_url}/api/docs"
    async with httpx.AsyncClient(timeout=10) as http:
        before = await http.get(f"{base}/doc", headers={"Accept": "application/octet-stream"})
        cases = [
            ("/doc/events", {"Last-Event-ID": "banana"}, "EPOCH-SEQ"),
            ("/doc/events", {"Last-Event-ID": "1-2-3"}, "EPOCH-SEQ"),
            ("/doc/events", {"Last-Event-ID": "-1-2"}, "EPOCH-SEQ"),
            ("/doc/events", {"Last-Event-ID": "\u0661-1".encode()}, "EPOCH-SEQ"),  # not ASCII
            ("/doc/events?last_event_id=7", {}, "EPOCH-SEQ"),
            ("/doc/events?last_event_id=", {}, "EPOCH-SEQ"),
            ("/doc/events?since=0-1", {}, "unknown query parameter 'since'"),
            ("/doc/events?awareness=maybe", {}, "awareness must be"),
            ("/doc/events?awareness=1&awareness=0", {}, "more than once"),
            ("/evil%E2%80%AEname/events", {}, "U+202E"),
            ("/%FF%FE/events", {}, "UTF-8"),
        ]
        for path, headers, message in cases:
            response = await http.get(base + path, headers=headers)
            assert response.status_code == 400, (path, response.text)
            assert message in response.json()["error"], (path, response.text)
        response = await http.post(f"{base}/doc/events")
        assert response.status_code == 405
        session_cases = [
            ("", b"\x00", 400, "session is required"),
            ("?session=nope", b"\x00", 404, "no open event stream"),
            ("?session=x&color=red", b"\x00", 400, "unknown query parameter 'color'"),
        ]
        for query, body, status, message in session_cases:
            response = await http.post(f"{base}/doc/awareness{query}", content=body)
            assert response.status_code == status, (query, response.text)
            assert message in response.json()["error"]
        async with feed(server.http_url, "doc", query="?awareness=1") as f:
            await f.until("synced")
            url = f"{base}/doc/awareness?session={f.session}"
            other = await http.post(f"{base}/other/awareness?session={f.session}", content=b"")
            assert other.status_code == 404  # a session names one document's stream
            # a huge body is refused from its Content-Length, before it is read
            path = url.removeprefix(server.http_url)
            huge = await anyio.to_thread.run_sync(
                lambda: answer_to(server.port, f"POST {path}", "Content-Length: 4194305")
            )
            assert huge.startswith(b"HTTP/1.1 413") and b"bytes at most" in huge
            garbage = await http.post(url, content=b"\x05\x01")
            assert garbage.status_code == 400 and "stream is closed" in garbage.json()["error"]
            await f.until("close")
            assert f.closed is not None and f.closed["code"] == CloseCode.INVALID_PAYLOAD
        after = await http.get(f"{base}/doc", headers={"Accept": "application/octet-stream"})
        assert after.content == before.content
        listing = (await http.get(base)).json()["docs"]
        assert [d["name"] for d in listing] == ["doc"]  # nothing else was created


async def test_event_streams_count_against_the_connection_caps(tmp_path: Path) -> None:
    with serving(tmp_path, "hypercorn", "--max-connections-per-document", "1") as process:
        async with feed(process.http_url, "capped") as f:
            await f.until("synced")
            async with httpx.AsyncClient(timeout=10) as http:
                refused = await http.get(events_url(process, "capped"))
            assert refused.status_code == 503
            assert "connections, its limit" in refused.json()["error"]
            async with Client(process.url("capped")) as ws:
                await ws.wait_for(lambda: ws.close_code is not None)
            assert ws.close_code == CloseCode.TRY_AGAIN_LATER
        async with feed(process.http_url, "capped") as again:  # the stream's slot is free again
            await again.until("synced")


def answer_to(port: int, request_line: str, *headers: str) -> bytes:
    """The answer to a request sent as is (its body, if any, never follows)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = "\r\n".join([f"{request_line} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers])
        sock.sendall(head.encode() + b"\r\n\r\n")
        answer = b""
        while b"}" not in answer:  # every answer here is a JSON error
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def raw_request(port: int, path: str) -> socket.socket:
    """A reader that sends its request and then reads nothing (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_reader_that_stops_reading_is_closed_and_never_stalls_the_room(
    tmp_path: Path,
) -> None:
    with serving(
        tmp_path, "hypercorn", "--send-queue", "4", "--send-queue-bytes", "65536"
    ) as process:
        sock = raw_request(process.port, "/api/docs/busy/events")
        try:
            writer = Writer(process.http_url, "busy")
            async with Client(process.url("busy")) as ws:
                await ws.synced()
                text = ws.doc.get("content", type=Text)
                block = "x" * (512 * 1024)
                for n in range(24):  # 12 MiB, far past what the socket buffers hold
                    await writer.type(str(n % 10))
                    before = writer.doc.get_state()
                    writer.text += block
                    await writer.post(writer.doc.get_update(before))
                    # the websocket peer of the same room keeps up all along
                    await ws.wait_for(lambda n=n: len(text) == (n + 1) * (len(block) + 1))
            received = await anyio.to_thread.run_sync(read_all, sock)
        finally:
            sock.close()
        tail = received[-400:].decode("ascii", errors="replace")
        assert "event: close" in tail, tail
        assert f'"code": {int(CloseCode.TOO_SLOW)}' in tail
        assert "Last-Event-ID" in tail
        closed = [
            json.loads(line) for line in process.log().splitlines() if "stream.closed" in line
        ]
        assert [(c["code"], c["by"]) for c in closed] == [(CloseCode.TOO_SLOW, "server")]


async def test_a_stream_outlives_hypercorns_read_timeout(tmp_path: Path) -> None:
    # --ping-interval 0.5 makes hypercorn drop connections silent for 2 s; a stream's
    # client never sends anything after its request.
    with serving(tmp_path, "hypercorn", "--ping-interval", "0.5", "--sse-keepalive", "0.2") as p:
        lines: list[str] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
            async with http.stream("GET", events_url(p, "quiet")) as response:
                with anyio.fail_after(20):
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if lines.count(": keep-alive") == 15:  # 3 s of silence from the client
                            break
        assert lines.count(": keep-alive") == 15, lines[-5:]
        assert lines.count("event: session") == 1 and "event: close" not in lines
