"""Forging another user's text: re-sent struct ids with other content must change nothing.

The attack: the victim wrote "Pay Bob $100" under its client id. The attacker sends an
update carrying the same client id and clocks with the content "Pay Eve $999", merged
with one struct that waits on a dependency that never comes. The live document keeps the
victim's text (Yjs skips structs it has), but a server that stores or relays the client's
bytes as they came hands the forged ones to every new joiner, to the store, and so to
every reader after a restart.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pycrdt import Doc, Text, merge_updates
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab.client import Client
from collab.protocol import SyncStep1, SyncUpdate, encode
from collab.storage.sqlite import append_updates
from collab.storage.sqlite import connect as connect_db
from tests.conftest import ROOT, ServerProcess

VICTIM = 1111
ATTACKER = 2222


def forged_update(gap: bool = True) -> bytes:
    """The victim's struct ids with the attacker's content, plus one pending struct.

    ``gap``: the pending struct skips its own client's clocks (as in the report);
    otherwise it waits on another client's struct that never arrives.
    """
    forged: Doc = Doc(client_id=VICTIM)
    forged["content"] = text = Text()
    text.insert(0, "Pay Eve $999")
    waiting: Doc = Doc(client_id=ATTACKER)
    waiting["content"] = other = Text()
    other.insert(0, "abc")
    seen = waiting.get_state()
    if not gap:
        helper: Doc = Doc(client_id=ATTACKER + 1)
        helper.apply_update(waiting.get_update())
        seen = helper.get_state()
        helper.get("content", type=Text).insert(3, "def")
        return merge_updates(forged.get_update(), helper.get_update(seen))
    other.insert(3, "def")
    pending = waiting.get_update(seen)  # clocks 3..5 of ATTACKER: 0..2 never arrive
    return merge_updates(forged.get_update(), pending)


def export_text(server: ServerProcess, name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "collab", "docs", "export", name, "--format", "text"]
        + ["--db", str(server.db_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result.stdout


@pytest.mark.parametrize("gap", [True, False], ids=["clock-gap", "missing-origin"])
async def test_reused_struct_ids_with_other_content_reach_nobody(
    server: ServerProcess, gap: bool
) -> None:
    victim: Doc = Doc(client_id=VICTIM)
    async with Client(server.url("ledger"), victim, ack=True) as client:
        await client.synced()
        victim.get("content", type=Text).insert(0, "Pay Bob $100")
        await client.wait_durable()

        async with connect(server.url("ledger")) as attacker:
            await attacker.recv()  # the server's sync step 1
            await attacker.send(encode(SyncUpdate(forged_update(gap))))
            await attacker.send(encode(SyncStep1(b"\x00")))
            try:
                await attacker.recv()  # its sync step 2: the update was read by then
            except ConnectionClosed as e:
                # a skip of clocks is refused whole; a missing origin just waits
                assert gap and e.rcvd is not None and e.rcvd.code == 1007

        async with Client(server.url("ledger")) as joiner:
            await joiner.synced()
            assert str(joiner.doc.get("content", type=Text)) == "Pay Bob $100"
        assert str(victim.get("content", type=Text)) == "Pay Bob $100"

    server.restart()
    async with Client(server.url("ledger")) as reader:
        await reader.synced()
        assert str(reader.doc.get("content", type=Text)) == "Pay Bob $100"
    server.stop()
    assert "Pay Bob $100" in export_text(server, "ledger")
    assert "Eve" not in export_text(server, "ledger")


async def test_an_honest_pending_update_is_relayed_once_its_dependency_arrives(
    server: ServerProcess,
) -> None:
    # The other side of the rule: content that waits for a dependency is not lost, it
    # is passed on (and stored) as the document integrates it.
    writer: Doc = Doc(client_id=ATTACKER)
    writer["content"] = Text("first ")
    first = writer.get_update()
    editor: Doc = Doc(client_id=ATTACKER + 1)  # builds on the writer's text
    editor.apply_update(first)
    seen = editor.get_state()
    editor.get("content", type=Text).insert(6, "second")
    second = editor.get_update(seen)
    async with Client(server.url("order")) as reader:
        await reader.synced()
        async with connect(server.url("order")) as raw:
            await raw.recv()
            await raw.send(encode(SyncUpdate(second)))  # waits for "first "
            await raw.send(encode(SyncUpdate(first)))
            await reader.wait_for(
                lambda: str(reader.doc.get("content", type=Text)) == "first second"
            )
    server.restart()
    async with Client(server.url("order")) as later:
        await later.synced()
        assert str(later.doc.get("content", type=Text)) == "first second"


def test_collab_check_finds_a_stored_log_with_two_contents_for_one_struct_id(
    tmp_path: Path,
) -> None:
    # A log written before the fix, when the server stored the client's bytes as they came.
    victim: Doc = Doc(client_id=VICTIM)
    victim["content"] = Text("Pay Bob $100")
    db = tmp_path / "forged.db"
    conn = connect_db(db)
    now = time.time()
    append_updates(conn, [("ledger", victim.get_update(), now, None)])
    append_updates(conn, [("ledger", forged_update(), now, None)])
    append_updates(conn, [("honest", victim.get_update(), now, None)])
    conn.close()
    result = subprocess.run(
        [sys.executable, "-m", "collab", "check", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"two different contents for struct ids {VICTIM}:0..11" in output
    assert "ledger" in output
    assert not [line for line in output.splitlines() if "honest" in line and "struct" in line]
    assert "Traceback" not in output
