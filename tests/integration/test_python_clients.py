"""Real server process, real sockets, pycrdt clients."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio
import pytest
from pycrdt import Array, Doc, Map, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab.client import Client
from collab.errors import CloseCode, ConnectionClosedError
from collab.protocol import SyncStep1, SyncUpdate, encode
from tests.conftest import ServerProcess


async def read_until_closed(ws: ClientConnection, timeout: float = 5) -> list[bytes | str]:
    """Every frame the server sends until it closes the connection."""
    frames: list[bytes | str] = []
    with anyio.fail_after(timeout):
        try:
            async for frame in ws:
                frames.append(frame)
        except ConnectionClosed:
            pass
    return frames


def stored_rows(server: ServerProcess) -> int:
    with sqlite3.connect(server.db_path) as db:
        return int(db.execute("SELECT count(*) FROM updates").fetchone()[0])


async def test_two_clients_converge_on_text_map_and_array(server: ServerProcess) -> None:
    async with Client(server.url("shared")) as a, Client(server.url("shared")) as b:
        await a.synced()
        await b.synced()
        text_a, text_b = a.doc.get("content", type=Text), b.doc.get("content", type=Text)
        map_a, map_b = a.doc.get("map", type=Map), b.doc.get("map", type=Map)
        array_a, array_b = a.doc.get("array", type=Array), b.doc.get("array", type=Array)
        text_a += "hello "
        map_a["who"] = "a"
        array_b.append(1)
        text_b.insert(0, ">> ")
        map_b["when"] = 2026
        array_a.append("x")
        await a.wait_for(lambda: len(text_a) == 9 and len(map_a) == 2 and len(array_a) == 2)
        await b.wait_for(lambda: len(text_b) == 9 and len(map_b) == 2 and len(array_b) == 2)
        assert str(text_a) == str(text_b)
        assert set(str(text_a)) == set(">> hello ")
        assert map_a.to_py() == map_b.to_py() == {"who": "a", "when": 2026}
        assert sorted(map(str, array_a.to_py())) == sorted(map(str, array_b.to_py()))


async def test_late_joiner_gets_everything(server: ServerProcess) -> None:
    async with Client(server.url("late")) as a:
        await a.synced()
        text = a.doc.get("content", type=Text)
        for i in range(50):
            text += f"{i},"
        async with Client(server.url("late"), ack=True) as b:
            await b.synced()
            await b.wait_for(lambda: str(b.doc.get("content", type=Text)) == str(text))


async def test_documents_are_isolated_including_slashes_and_unicode(server: ServerProcess) -> None:
    names = ["notes/2026/plan", "notes/2026", "café", "日本語/メモ", "a b?c"]
    for name in names:
        async with Client(server.url(name), ack=True) as client:
            await client.synced()
            client.doc.get("content", type=Text).insert(0, f"I am {name}")
            await client.wait_durable()
    for name in names:
        async with Client(server.url(name)) as client:
            await client.synced()
            await client.wait_for(
                lambda c=client, n=name: str(c.doc.get("content", type=Text)) == f"I am {n}"
            )
    with sqlite3.connect(server.db_path) as db:
        stored = {row[0] for row in db.execute("SELECT name FROM documents")}
    assert stored == set(names)


async def test_offline_edits_merge_on_reconnect(server: ServerProcess) -> None:
    offline = Doc()
    async with Client(server.url("offline"), offline) as a, Client(server.url("offline")) as b:
        await a.synced()
        await b.synced()
        offline.get("content", type=Text).insert(0, "shared start.")
        await b.wait_for(lambda: str(b.doc.get("content", type=Text)) == "shared start.")
    # a is disconnected now: both sides edit
    offline.get("content", type=Text).insert(0, "[offline] ")
    async with Client(server.url("offline")) as b:
        await b.synced()
        b.doc.get("content", type=Text).insert(len("shared start."), " [online]")
        async with Client(server.url("offline"), offline) as a:
            await a.synced()
            expected = "[offline] shared start. [online]"
            await a.wait_for(lambda: str(offline.get("content", type=Text)) == expected)
            await b.wait_for(lambda: str(b.doc.get("content", type=Text)) == expected)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_state_survives_restart(server: ServerProcess, how: str) -> None:
    async with Client(server.url("durable")) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        for word in ["every ", "edit ", "survives"]:
            text += word
    await anyio.sleep(1.2)  # the promise is "received more than a second before the kill"
    if how == "sigterm":
        assert server.stop() == 0
    else:
        server.kill()
    server.start()
    async with Client(server.url("durable")) as client:
        await client.synced()
        assert str(client.doc.get("content", type=Text)) == "every edit survives"


async def test_sigterm_commits_an_update_received_just_before(server: ServerProcess) -> None:
    async with Client(server.url("last-moment")) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "just in time")
        await anyio.sleep(0.1)
        assert server.stop() == 0
    server.start()
    async with Client(server.url("last-moment")) as client:
        await client.synced()
        assert str(client.doc.get("content", type=Text)) == "just in time"


async def test_shutdown_tells_every_peer_going_away(server: ServerProcess) -> None:
    async with connect(server.url("a")) as first, connect(server.url("b")) as second:
        for ws in (first, second):
            await ws.send(encode(SyncStep1(b"\x00")))
            await ws.recv()  # synced: the server has the peer in its room
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        for ws in (first, second):
            await read_until_closed(ws)
            assert ws.close_code == CloseCode.GOING_AWAY
            assert ws.close_reason == "server is shutting down"
    assert server.proc is not None and server.proc.wait(15) == 0


async def test_a_frame_over_the_size_limit_closes_with_1009(server: ServerProcess) -> None:
    async with connect(server.url("big"), max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):  # the server may close mid-frame
            await ws.send(encode(SyncUpdate(b"\x00" * (16 * 1024 * 1024))))
            await read_until_closed(ws, timeout=20)
    assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
    async with Client(server.url("big")) as client:  # the server is fine
        await client.synced()


async def test_ack_reports_the_durable_state(server: ServerProcess) -> None:
    async with Client(server.url("acked"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "saved means saved")
        await client.wait_durable()
    assert stored_rows(server) == 1


async def test_several_tasks_can_wait_on_one_client(server: ServerProcess) -> None:
    async with Client(server.url("waiters")) as writer, Client(server.url("waiters")) as reader:
        await writer.synced()
        await reader.synced()
        text = reader.doc.get("content", type=Text)
        woke: list[str] = []

        async def wait(letter: str) -> None:
            await reader.wait_for(lambda: letter in str(text), timeout=5)
            woke.append(letter)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "x")
            tg.start_soon(wait, "y")
            await anyio.sleep(0.1)  # both are waiting
            writer.doc.get("content", type=Text).insert(0, "x")
            await anyio.sleep(0.1)
            writer.doc.get("content", type=Text).insert(1, "y")
    assert sorted(woke) == ["x", "y"]


async def test_waiting_on_a_closed_connection_fails_at_once(server: ServerProcess) -> None:
    async with Client(server.ws_url + "/") as client:  # an empty name: closed with 4400
        with anyio.fail_after(5), pytest.raises(ConnectionClosedError) as info:
            await client.wait_for(lambda: False, timeout=60)
    assert info.value.close_code == CloseCode.BAD_DOCUMENT_NAME


async def test_a_burst_of_edits_faster_than_the_socket_all_arrive(server: ServerProcess) -> None:
    async with Client(server.url("burst"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        for _ in range(12_000):  # no await in between: the outbox takes them all
            text += "x"
        await client.wait_durable(timeout=30)
    async with Client(server.url("burst")) as reader:
        await reader.synced()
        assert len(str(reader.doc.get("content", type=Text))) == 12_000


async def test_clients_that_do_not_ask_never_get_acks(server: ServerProcess) -> None:
    async with connect(server.url("no-ack")) as ws:
        doc = Doc()
        doc.get("content", type=Text).insert(0, "x")
        await ws.send(encode(SyncStep1(b"\x00")))
        await ws.send(encode(SyncUpdate(doc.get_update())))
        frames = []
        with anyio.move_on_after(0.5):
            while True:
                frames.append(await ws.recv())
    assert frames, "the server sends sync step 1 and step 2"
    assert all(frame[0] in (0, 1) for frame in frames)


async def test_many_clients_arriving_together_all_see_the_stored_document(
    server: ServerProcess,
) -> None:
    async with Client(server.url("stampede")) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        for _i in range(200):
            text += "x"
    server.restart()  # the next clients find it only on disk

    results: list[str] = []

    async def join() -> None:
        async with Client(server.url("stampede")) as c:
            await c.synced()
            results.append(str(c.doc.get("content", type=Text)))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(join)
    assert results == ["x" * 200] * 20
    loads = [line for line in server.log().splitlines() if "loaded 'stampede'" in line]
    assert len(loads) == 2, loads  # once empty before the restart, once after it


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00\x02\xff\xff\xff\xff", CloseCode.INVALID_PAYLOAD),  # truncated update length
        (b"\x00\x02\x05\x01\x02", CloseCode.INVALID_PAYLOAD),  # length prefix past the end
        (b"\x00\x02\x03\xff\xff\xff", CloseCode.INVALID_PAYLOAD),  # an update pycrdt cannot decode
        (b"\x00\x07\x00", CloseCode.INVALID_PAYLOAD),  # unknown sync message type
        (b"\x01\x05\x02\x01", CloseCode.INVALID_PAYLOAD),  # truncated awareness update
        (b"", CloseCode.INVALID_PAYLOAD),  # empty frame
        ("text frame", CloseCode.UNSUPPORTED_DATA),
    ],
)
async def test_bad_input_closes_only_that_connection(
    server: ServerProcess, frame: bytes | str, code: CloseCode
) -> None:
    async with Client(server.url("victim")) as good:
        await good.synced()
        good.doc.get("content", type=Text).insert(0, "intact")
        async with connect(server.url("victim")) as bad:
            await bad.send(frame)
            await read_until_closed(bad)
            assert bad.close_code == code, bad.close_reason
            assert bad.close_reason
        good.doc.get("content", type=Text).insert(6, "!")
        async with Client(server.url("victim")) as later:
            await later.synced()
            await later.wait_for(lambda: str(later.doc.get("content", type=Text)) == "intact!")
    assert good.close_code is None
    server.restart()
    async with Client(server.url("victim")) as after:
        await after.synced()
        assert str(after.doc.get("content", type=Text)) == "intact!"


async def test_unknown_message_types_are_ignored(server: ServerProcess) -> None:
    async with connect(server.url("tolerant")) as ws:
        await ws.send(b"\x07hello")
        await ws.send(encode(SyncStep1(b"\x00")))
        frames = [await ws.recv() for _ in range(2)]
    assert frames[1][:2] == b"\x00\x01"  # our step 1 got its step 2


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/", "empty"),
        ("/" + "a" * 513, "limit is 512"),
        ("/%ff%fe", "UTF-8"),
        ("/evil%00", "control character"),
        ("/tab%09name", "control character"),
    ],
)
async def test_bad_document_names_are_refused(
    server: ServerProcess, path: str, reason: str
) -> None:
    async with connect(server.ws_url + path) as ws:
        await read_until_closed(ws)
    assert ws.close_code == CloseCode.BAD_DOCUMENT_NAME
    assert reason in (ws.close_reason or "")


async def test_query_string_is_not_part_of_the_name(server: ServerProcess) -> None:
    async with Client(server.url("q") + "?token=abc") as a:
        await a.synced()
        a.doc.get("content", type=Text).insert(0, "same doc")
        async with Client(server.url("q")) as b:
            await b.synced()
            await b.wait_for(lambda: str(b.doc.get("content", type=Text)) == "same doc")


async def test_invalid_update_is_never_stored(server: ServerProcess) -> None:
    async with connect(server.url("clean")) as ws:
        await ws.send(b"\x00\x02\x04\x01\x01\xff\xff")
        await read_until_closed(ws)
    assert ws.close_code == CloseCode.INVALID_PAYLOAD
    server.stop()
    with sqlite3.connect(server.db_path) as db:
        assert db.execute("SELECT count(*) FROM updates").fetchone()[0] == 0


async def test_permessage_deflate_is_declined(server: ServerProcess) -> None:
    # websockets offers permessage-deflate by default, as browsers and Node's ws do.
    async with connect(server.url("plain"), compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def scrape(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_count_updates_connections_and_commit_latency(server: ServerProcess) -> None:
    async with Client(server.url("measured"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "counted")
        await client.wait_durable()
        during = scrape(server)
    assert during["collab_connections"] == 1
    assert during["collab_updates_total"] == 1
    assert during["collab_rooms_loaded"] == 1
    assert during["collab_commit_seconds_count"] == 1
    assert 0 < during["collab_commit_seconds_sum"] < 5
    with urllib.request.urlopen(f"{server.http_url}/api/stats", timeout=5) as response:
        latency = json.loads(response.read())["commit_latency_ms"]
    assert latency["n"] == 1
    assert 0 < latency["p50"] == latency["p99"] <= latency["max"] < 5000


@pytest.mark.parametrize("asgi_server", ["hypercorn", "uvicorn"])
def test_serve_on_a_file_that_is_not_a_database_is_one_clear_line(
    tmp_path: Path, asgi_server: str
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("shopping list\n" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "collab", "serve", "--port", "0", "--db", str(bad)]
        + ["--server", asgi_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Error: cannot open database" in result.stderr
    assert "Traceback" not in result.stderr
    assert bad.read_text() == "shopping list\n" * 100  # and it is left as it was
