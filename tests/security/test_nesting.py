"""Deep nesting: the update that would crash the CRDT core is refused before it is applied.

yrs overflows its stack (SIGSEGV) deleting ~32,000+ nested shared types; before the fix,
~340 KB of nested Y.Maps then a 6-byte delete of the root killed the process, and again
after every restart, since the tree was stored.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
from pycrdt import Doc, Map, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab.client import Client
from collab.protocol import SyncStep1, SyncStep2, SyncUpdate, decode, encode
from collab.storage.sqlite import append_updates
from collab.storage.sqlite import connect as connect_db
from tests import yjs_build as yb
from tests.conftest import ROOT, ServerProcess

ATTACKER = 4242


def root_delete(client: int = ATTACKER) -> bytes:
    """Delete the outermost map of :func:`yjs_build.nested_maps` (its clock 0)."""
    return yb.encode({}, deletes={client: [(0, 1)]})


async def closed_with(url: str, *frames: bytes) -> tuple[int | None, str]:
    async with connect(url, max_size=None) as ws:
        await ws.recv()  # sync step 1
        try:
            for frame in frames:
                await ws.send(frame)
            with anyio.fail_after(20):
                while True:
                    await ws.recv()
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")


async def test_an_update_nesting_past_the_limit_is_refused_and_the_server_lives(
    server: ServerProcess,
) -> None:
    async with Client(server.url("bystander")) as bystander:
        await bystander.synced()
        bystander.doc.get("content", type=Text).insert(0, "still here")
        deep = encode(SyncUpdate(yb.nested_maps(40_000, client=ATTACKER)))
        code, reason = await closed_with(
            server.url("victim"), deep, encode(SyncUpdate(root_delete()))
        )
        assert code == 1007
        assert "1001" in reason and "1000" in reason  # the depth it would reach, the limit
        # the process is alive and the others were not disturbed
        bystander.doc.get("content", type=Text).insert(0, "and ")
        async with Client(server.url("bystander")) as other:
            await other.synced()
            await other.wait_for(
                lambda: str(other.doc.get("content", type=Text)) == "and still here"
            )
    assert server.proc is not None and server.proc.poll() is None
    # nothing of it was stored: a restart and the same delete do nothing
    server.restart()
    await answered_after(server.url("victim"), encode(SyncUpdate(root_delete())))
    assert server.proc is not None and server.proc.poll() is None


async def answered_after(url: str, *frames: bytes) -> None:
    """Send ``frames``, then a sync step 1: the server must answer it (it is alive)."""
    async with connect(url) as ws:
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        await ws.send(encode(SyncStep1(b"\x00")))
        with anyio.fail_after(10):
            while not isinstance(decode(await ws.recv()), SyncStep2):
                pass


async def test_children_sent_before_their_parents_are_counted_too(server: ServerProcess) -> None:
    # A tree 1,500 deep in two updates from two clients, the deeper half first: it waits
    # as pending for the upper half, and the update that would integrate it is refused.
    upper = [yb.item(yb.map_type(), parent="root", sub="m")]
    upper += [yb.item(yb.map_type(), parent=(ATTACKER, i), sub="m") for i in range(799)]
    lower = [yb.item(yb.map_type(), parent=(ATTACKER, 799), sub="m")]
    lower += [yb.item(yb.map_type(), parent=(ATTACKER + 1, i), sub="m") for i in range(699)]
    first = yb.encode({ATTACKER + 1: (0, lower)})
    second = yb.encode({ATTACKER: (0, upper)})
    code, reason = await closed_with(
        server.url("split"), encode(SyncUpdate(first)), encode(SyncUpdate(second))
    )
    assert (code, reason) == (1007, "update nests a type 1001 levels deep (limit 1000)")


async def test_an_update_skipping_clocks_is_refused(server: ServerProcess) -> None:
    # yrs would integrate it outside its state vector: text and encoding would disagree.
    skipping = yb.encode({ATTACKER: (5, [yb.item(yb.string("x"), parent="content")])})
    code, reason = await closed_with(server.url("gap"), encode(SyncUpdate(skipping)))
    assert code == 1007
    assert reason.startswith(f"update skips clocks 0..4 of client {ATTACKER}")


async def test_a_real_document_with_nested_types_is_accepted(server: ServerProcess) -> None:
    doc: Doc = Doc()
    async with Client(server.url("notes"), doc, ack=True) as client:
        await client.synced()
        outer = doc.get("meta", type=Map)
        level = outer
        for i in range(20):
            inner: Map = Map()
            level[f"k{i}"] = inner
            level = inner
        level["leaf"] = "ok"
        await client.wait_durable()
    async with Client(server.url("notes")) as reader:
        await reader.synced()
        level = reader.doc.get("meta", type=Map)
        for i in range(20):
            level = level[f"k{i}"]
        assert level["leaf"] == "ok"


def test_a_stored_document_past_the_limit_is_reported_and_kept_read_only(
    tmp_path: Path,
) -> None:
    # Stored before the limit existed: it loads, refuses every update (the next delete
    # would crash yrs), and `collab check` names it.
    db = tmp_path / "old.db"
    conn = connect_db(db)
    append_updates(conn, [("old", yb.nested_maps(2000, client=ATTACKER), time.time(), None)])
    conn.close()
    result = subprocess.run(
        [sys.executable, "-m", "collab", "check", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "nest 2000 deep, past the limit of 1000" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    server = ServerProcess(db, tmp_path / "log")
    server.start()
    try:

        async def main() -> tuple[int | None, str]:
            async with connect(server.url("old")) as ws:
                await ws.recv()
                await ws.send(encode(SyncUpdate(root_delete())))
                with anyio.fail_after(10):
                    while True:
                        frame = await ws.recv()
                        assert isinstance(frame, bytes)
                        if frame[:2] == b"\x02\x00":  # permission denied
                            return None, frame[3:].decode()

        _, reason = anyio.run(main)
        assert "nests shared types past the server's limit" in reason
        assert server.proc is not None and server.proc.poll() is None
        with sqlite3.connect(db) as raw:
            assert raw.execute("SELECT count(*) FROM updates").fetchone()[0] == 1
    finally:
        server.close()
