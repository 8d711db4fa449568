"""The admin CLI as a real subprocess against the database a running server is writing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from pycrdt import Doc, Text

from collab.client import Client
from tests.conftest import ROOT, ServerProcess


async def collab(server: ServerProcess, *args: str, input: bytes | None = None) -> tuple[int, str]:
    """Run ``python -m collab ARGS --db <the server's db>``; return (exit code, output)."""
    result = await anyio.run_process(
        [sys.executable, "-m", "collab", *args, "--db", str(server.db_path)],
        input=input,
        check=False,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    return result.returncode, (result.stdout + result.stderr).decode()


def rows(server: ServerProcess, room: str) -> int:
    with sqlite3.connect(server.db_path) as db:
        return int(
            db.execute(
                "SELECT count(*) FROM updates JOIN documents d ON d.id = doc_id WHERE d.name = ?",
                [room],
            ).fetchone()[0]
        )


def merged_rows(server: ServerProcess, room: str) -> int:
    """How many stored rows are compacted ones (standing for more than one update)."""
    with sqlite3.connect(server.db_path) as db:
        return int(
            db.execute(
                "SELECT count(*) FROM updates JOIN documents d ON d.id = doc_id"
                " WHERE d.name = ? AND merged > 1",
                [room],
            ).fetchone()[0]
        )


async def test_admin_commands_run_while_a_client_types(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with Client(server.url("busy"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        stop = anyio.Event()

        async def type_away() -> None:
            while not stop.is_set():
                text.insert(len(text), "x")
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(type_away)
            await client.wait_for(lambda: len(text) >= 50)
            backup = tmp_path / "backup.db"
            for args in (
                ["docs", "list", "--json"],
                ["docs", "export", "busy", "--format", "text"],
                ["docs", "compact", "--all"],
                ["backup", str(backup)],
                ["check"],
                ["docs", "history", "busy"],
            ):
                code, output = await collab(server, *args)
                assert code == 0, f"{args}: {output}"
            stop.set()
        await client.wait_durable()
        typed = str(text)
    # Everything the server acknowledged is in the database, compaction notwithstanding.
    code, output = await collab(server, "docs", "export", "busy", "--format", "text")
    assert code == 0 and output == typed + "\n"  # a text export ends with a newline
    # The backup is a consistent earlier moment: a prefix of what was typed.
    code, output = await collab(server, "check", "--db", str(backup))
    assert code == 0, output
    with sqlite3.connect(backup) as db:
        assert db.execute("SELECT count(*) FROM documents WHERE name = 'busy'").fetchone() == (1,)


async def test_the_server_compacts_a_growing_document(server: ServerProcess) -> None:
    async with Client(server.url("long"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        # One stored row per server loop turn with data: pace the keystrokes so that there
        # are more rows than the default compact_rows (500).
        for i in range(800):
            text.insert(len(text), str(i % 10))
            await anyio.sleep(0.002)
        await client.wait_durable(timeout=20)
        expected = str(text)
    with anyio.fail_after(10):
        while merged_rows(server, "long") == 0:
            await anyio.sleep(0.05)
    code, output = await collab(server, "docs", "export", "long", "--format", "text")
    assert code == 0 and output == expected + "\n"
    code, output = await collab(server, "docs", "list", "--json")
    (doc,) = [d for d in json.loads(output) if d["name"] == "long"]
    assert doc["rows"] < 500 and doc["history_bytes"] > 0
    # A restart loads the compacted row plus the tail.
    server.restart()
    async with Client(server.url("long")) as client:
        await client.synced()
        await client.wait_for(lambda: str(client.doc.get("content", type=Text)) == expected)


async def test_export_import_round_trip_through_a_running_server(server: ServerProcess) -> None:
    async with Client(server.url("source"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "carried across")
        await client.wait_durable()
    code, _ = await collab(
        server, "docs", "export", "source", "-o", str(server.db_path.parent / "x")
    )
    assert code == 0
    code, output = await collab(server, "docs", "import", "copy", str(server.db_path.parent / "x"))
    assert code == 0, output
    async with Client(server.url("copy")) as client:
        await client.synced()
        await client.wait_for(lambda: str(client.doc.get("content", type=Text)) == "carried across")


async def test_replacing_a_document_open_but_never_stored_reaches_its_client(
    server: ServerProcess,
) -> None:
    # Nothing stored yet: the document row the import creates has the epoch the open room
    # already holds, so only the generation tells the server to look.
    source = server.db_path.parent / "replacement"
    doc = Doc()
    doc.get("content", type=Text).insert(0, "imported")
    source.write_bytes(doc.get_update())
    async with Client(server.url("fresh")) as client:
        await client.synced()
        code, output = await collab(
            server, "docs", "import", "fresh", str(source), "--replace", "--yes"
        )
        assert code == 0, output
        await client.wait_for(
            lambda: str(client.doc.get("content", type=Text)) == "imported", timeout=10
        )


async def test_a_deleted_document_is_not_written_back_by_its_open_room(
    server: ServerProcess,
) -> None:
    async with Client(server.url("doomed"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        text += "old content"
        await client.wait_durable()
        code, output = await collab(server, "docs", "delete", "doomed", "--yes")
        assert code == 0, output
        text += " and a late edit"
        # Rooms pass the epoch they loaded (append_nowait(..., epoch=room.epoch)): the store
        # refuses the late edit of the deleted epoch and the room closes its peers: reload.
        await client.wait_for(lambda: client.close_code is not None, timeout=10)
        assert client.close_code == 4409
    assert rows(server, "doomed") == 0
    async with Client(server.url("doomed")) as fresh:
        await fresh.synced()
        assert str(fresh.doc.get("content", type=Text)) == ""


@pytest.mark.parametrize("command", [["docs", "list"], ["check"]])
async def test_commands_on_a_missing_database_fail_cleanly(
    tmp_path: Path, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collab", *command, "--db", str(tmp_path / "missing.db")],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("Error: no database at")
    assert b"Traceback" not in result.stderr
