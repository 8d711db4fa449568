"""Property: random concurrent edits from several pycrdt clients through a running server
converge, and the server's stored log replays to the same document."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Text

from collab.client import Client
from collab.protocol import decode_state_vector
from collab.rooms import build_doc
from tests.conftest import ServerProcess

room_numbers = itertools.count()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("convergence")
    process = ServerProcess(path / "collab.db", path / "server.log")
    process.start()
    yield process
    process.close()


edit = st.tuples(
    st.integers(0, 3),  # which client
    st.integers(0, 1000),  # position (clamped)
    st.one_of(
        st.text("abcdéf 🙂\n", min_size=1, max_size=4), st.integers(1, 3)
    ),  # insert or delete
    st.booleans(),  # yield to the network after this edit
)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.lists(edit, min_size=1, max_size=40))
def test_random_concurrent_edits_converge(
    shared_server: ServerProcess, clients: int, edits: list
) -> None:
    room = f"property-{next(room_numbers)}"

    async def main() -> None:
        url = shared_server.url(room)
        async with (
            Client(url, ack=True) as c0,
            Client(url) as c1,
            Client(url) as c2,
            Client(url) as c3,
        ):
            peers = [c0, c1, c2, c3][:clients]
            for peer in (c0, c1, c2, c3):
                await peer.synced()
            texts = [p.doc.get("content", type=Text) for p in peers]
            for who, position, change, pause in edits:
                text = texts[who % clients]
                # pycrdt indexes text by UTF-8 bytes; positions are picked in code points
                length = len(str(text))
                if isinstance(change, str):
                    text.insert(_utf8_index(str(text), min(position, length)), change)
                elif length:
                    start = min(position, length - 1)
                    stop = min(start + change, length)
                    s = str(text)
                    del text[_utf8_index(s, start) : _utf8_index(s, stop)]
                if pause:
                    await anyio.sleep(0)

            def converged() -> bool:
                # Equal texts are not enough: two clients that each typed "a" read the
                # same before either has the other's. Equal state vectors are.
                states = {frozenset(decode_state_vector(p.doc.get_state()).items()) for p in peers}
                return len(states) == 1 and len({str(t) for t in texts}) == 1

            for peer in peers:
                await peer.wait_for(converged, timeout=15)
            (expected,) = {str(t) for t in texts}
            await c0.wait_durable()  # c0 holds everything: the whole document is on disk
        with sqlite3.connect(shared_server.db_path) as db:
            rows = db.execute(
                "SELECT data FROM updates JOIN documents ON documents.id = doc_id"
                " WHERE name = ? ORDER BY seq",
                [room],
            ).fetchall()
        replayed = build_doc(room, [bytes(r[0]) for r in rows]).get("content", type=Text)
        assert str(replayed) == expected

    anyio.run(main)


def _utf8_index(s: str, index: int) -> int:
    return len(s[:index].encode("utf-8"))
