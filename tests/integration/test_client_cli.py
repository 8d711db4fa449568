"""`collab get`, `collab put` and `collab watch` as processes against a running server."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from pycrdt import Array, Assoc, Map, StickyIndex, Text

from collab.client import Client, ConnectionState
from collab.remote import text_edits
from tests.conftest import ROOT, ServerProcess, free_port
from tests.integration.test_offline_client import dropping_proxy, stored_text


def collab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


async def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: collab(*args, stdin=stdin))


async def test_put_then_get_round_trips_text_with_unicode(server: ServerProcess) -> None:
    url = server.url("notes/caf\u00e9")
    body = "# Plan \u65e5\u672c\n\n- one \U0001f600\n- two\n"
    put = await run("put", url, "--root", "content", stdin=body)
    assert put.returncode == 0, put.stderr
    assert "saved" in put.stderr
    assert stored_text(server, "notes/caf\u00e9") == body  # on disk when put returned
    got = await run("get", url)
    assert (got.returncode, got.stdout) == (0, body)


async def test_get_prints_a_map_or_an_array_as_json(server: ServerProcess) -> None:
    async with Client(server.url("board"), ack=True) as client:
        await client.synced()
        client.doc.get("meta", type=Map)["owner"] = "ada"
        client.doc.get("items", type=Array).extend([1, "two"])
        client.doc.get("content", type=Text).insert(0, "notes")
        await client.wait_durable()
    meta = await run("get", server.url("board"), "--root", "meta")
    assert json.loads(meta.stdout) == {"owner": "ada"}
    items = await run("get", server.url("board"), "--root", "items:array")
    assert json.loads(items.stdout) == [1, "two"]
    everything = await run("get", server.url("board"))
    assert json.loads(everything.stdout) == {
        "meta": {"owner": "ada"},
        "items": [1, "two"],
        "content": "notes",
    }
    missing = await run("get", server.url("board"), "--root", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"Error: {server.url('board')} has no root 'nope'; its roots are content, items, meta"
    )


async def test_put_is_a_minimal_diff_that_keeps_a_concurrent_editors_cursor_and_edit(
    server: ServerProcess,
) -> None:
    before = "The quick brown fox jumps over the lazy dog.\n"
    after = "The slow red fox jumps over the lazy dog.\nA second line.\n"
    async with (
        dropping_proxy(server) as proxy,
        Client(proxy.url("story"), ack=True, max_backoff=0.5) as editor,
    ):
        await editor.synced()
        text = editor.doc.get("content", type=Text)
        text += before
        await editor.wait_durable()
        cursor = StickyIndex.new(text, before.index("dog"), Assoc.AFTER)  # its caret
        proxy.cut()  # the editor types while `collab put` runs: neither sees the other
        await editor.wait_for(lambda: editor.state is not ConnectionState.CONNECTED)
        text.insert(before.index("lazy"), "very ")
        put = await run("put", server.url("story"), "--root", "content", stdin=after)
        assert put.returncode == 0, put.stderr
        # "quick brown" -> "slow red", plus a line: not the 45 characters deleted of a rewrite
        deleted, inserted = map(int, re.findall(r"\d+", put.stderr))
        assert deleted <= len("quick brown") and inserted <= len("slow red\nA second line.")
        proxy.restore()
        expected = "The slow red fox jumps over the very lazy dog.\nA second line.\n"
        await editor.wait_for(lambda: str(text) == expected, timeout=30)
        assert cursor.get_index() == expected.index("dog")
        await editor.wait_durable(timeout=30)
    assert stored_text(server, "story") == expected


def test_text_edits_keep_what_is_common() -> None:
    assert text_edits("abc", "abc") == []
    assert text_edits("hello world", "hello brave world") == [(6, 0, "brave ")]
    assert text_edits("keep; drop; keep", "keep; keep") == [(6, 6, "")]
    # a long text with one line changed is one small edit, not a rewrite
    lines = [f"line {i}\n" for i in range(20_000)]
    old = "".join(lines)
    new = "".join(lines[:5000] + ["changed\n"] + lines[5001:])
    edits = text_edits(old, new)
    assert sum(deleted + len(inserted) for _, deleted, inserted in edits) <= len("line 5000changed")
    for at, deleted, inserted in reversed(edits):
        old = old[:at] + inserted + old[at + deleted :]
    assert old == new


async def test_watch_prints_the_document_then_each_change(server: ServerProcess) -> None:
    async with Client(server.url("feed"), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        text += "hello"
        await client.wait_durable()
        watcher = await anyio.open_process(
            [sys.executable, "-m", "collab", "watch", server.url("feed")], cwd=ROOT
        )
        try:
            assert watcher.stdout is not None
            lines = TextReceiveStream(watcher.stdout)
            buffer = ""

            async def line() -> dict[str, object]:
                nonlocal buffer
                with anyio.fail_after(30):
                    while "\n" not in buffer:
                        buffer += await lines.receive()
                first, buffer = buffer.split("\n", 1)
                return json.loads(first)  # type: ignore[no-any-return]

            assert await line() == {"root": "content", "value": "hello"}
            text += " world"
            assert await line() == {
                "root": "content",
                "delta": [{"retain": 5}, {"insert": " world"}],
            }
            del text[0:6]
            assert await line() == {"root": "content", "delta": [{"delete": 6}]}
        finally:
            watcher.kill()
            await watcher.aclose()


@pytest.mark.parametrize("command", [["get"], ["put", "--root", "content"], ["watch"]])
async def test_a_server_that_is_down_is_one_clear_line(command: list[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/notes"
    result = await run(command[0], url, *command[1:], stdin="text")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: cannot connect to {url}: connection refused (is the server running?)"
    )


@pytest.mark.parametrize("command", [["get"], ["put", "--root", "content"], ["watch"]])
async def test_a_bad_name_is_one_clear_line(server: ServerProcess, command: list[str]) -> None:
    url = server.ws_url + "/bad%00name"
    result = await run(command[0], url, *command[1:], stdin="text")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {url!r} names no valid document: ")
    assert "control character (U+0000)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
