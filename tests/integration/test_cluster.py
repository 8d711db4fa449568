"""Several ``collab serve`` processes on one bus (Redis, NATS) and one SQLite file: clients
spread over the nodes converge, see each other's presence, and lose nothing when a node
dies or the bus restarts.

Each test's nodes use a bus prefix of their own on the machine's Redis and NATS; the tests
that restart the bus run a private ``redis-server`` / ``nats-server`` (tests/buses.py).
"""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Text

from collab.client import Client
from collab.errors import CloseCode, ConnectionClosedError
from collab.protocol import decode_state_vector
from collab.rooms import build_doc
from tests.buses import Broker, shared_bus, unique_prefix
from tests.conftest import ROOT, ServerProcess

KINDS = ["redis", "nats"]
room_numbers = itertools.count()


class Nodes:
    """``count`` collab nodes on the bus at ``url``, sharing one database file."""

    def __init__(self, workdir: Path, url: str, count: int = 3, *extra: str) -> None:
        self.db_path = workdir / "collab.db"
        prefix = unique_prefix()
        self.servers = [
            ServerProcess(
                self.db_path,
                workdir / f"node{i}.log",
                "--bus",
                url,
                "--bus-prefix",
                prefix,
                "--bus-heartbeat",
                "0.5",
                *extra,
            )
            for i in range(count)
        ]

    def __enter__(self) -> Nodes:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for i, server in enumerate(self.servers):
            server.close()
            print(f"--- node {i} ({server.log_path}) ---\n{server.log()[-6000:]}")

    def __getitem__(self, i: int) -> ServerProcess:
        return self.servers[i]


def stored_text(db_path: Path, room: str) -> str:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT data FROM updates JOIN documents ON documents.id = doc_id"
            " WHERE name = ? ORDER BY seq",
            [room],
        ).fetchall()
    return str(build_doc(room, [bytes(r[0]) for r in rows]).get("content", type=Text))


async def wait_stored(db_path: Path, room: str, expected: str, timeout: float = 15) -> None:
    """Until the store replays to ``expected`` (each node stores what it accepted)."""
    with anyio.fail_after(timeout):
        while await anyio.to_thread.run_sync(stored_text, db_path, room) != expected:
            await anyio.sleep(0.05)


def converged(clients: list[Client]) -> bool:
    # Equal state vectors, not just equal texts (two clients that each typed "a").
    states = {frozenset(decode_state_vector(c.doc.get_state()).items()) for c in clients}
    texts = {str(c.doc.get("content", type=Text)) for c in clients}
    return len(states) == 1 and len(texts) == 1


async def wait_converged(clients: list[Client], timeout: float = 15) -> None:
    # Polled: the update that completes one client arrives at another, which a wait on
    # the first client's own frames would never see.
    with anyio.fail_after(timeout):
        while not converged(clients):
            await anyio.sleep(0.02)


def names(client: Client) -> set[str]:
    return {
        s["user"]["name"]
        for s in client.awareness.states.values()
        if isinstance(s, dict) and isinstance(s.get("user"), dict)
    }


# -- convergence -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nodes]:
    url = shared_bus(request.param)
    # The periodic exchange far apart: what converges here, the bus delivered.
    with Nodes(tmp_path_factory.mktemp("cluster"), url, 3, "--bus-sync-interval", "60") as nodes:
        yield nodes


edit = st.tuples(
    st.integers(0, 5),  # which client
    st.integers(0, 1000),  # position (clamped)
    st.one_of(st.text("abcdé 🙂\n", min_size=1, max_size=4), st.integers(1, 3)),
    st.booleans(),  # yield to the network after this edit
)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(edit, min_size=1, max_size=40))
def test_clients_spread_over_three_nodes_converge_on_random_concurrent_edits(
    cluster: Nodes, edits: list[tuple[int, int, str | int, bool]]
) -> None:
    room = f"spread-{next(room_numbers)}"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(Client(cluster[i % 3].url(room))) for i in range(6)
            ]
            for client in clients:
                await client.synced()
            texts = [c.doc.get("content", type=Text) for c in clients]
            for who, position, change, pause in edits:
                text = texts[who]
                s = str(text)
                if isinstance(change, str):
                    text.insert(utf8_index(s, min(position, len(s))), change)
                elif s:
                    start = min(position, len(s) - 1)
                    stop = min(start + change, len(s))
                    del text[utf8_index(s, start) : utf8_index(s, stop)]
                if pause:
                    await anyio.sleep(0)
            await wait_converged(clients)
            (expected,) = {str(t) for t in texts}
        await wait_stored(cluster.db_path, room, expected)

    anyio.run(main)


def utf8_index(s: str, index: int) -> int:
    return len(s[:index].encode("utf-8"))


# -- presence --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_presence_crosses_nodes_and_goes_with_the_client_and_with_its_node(
    kind: str, tmp_path: Path
) -> None:
    with Nodes(tmp_path, shared_bus(kind), 3) as nodes:
        async with Client(nodes[1].url("room")) as bea, Client(nodes[2].url("room")) as cy:
            await bea.synced()
            await cy.synced()
            async with Client(nodes[0].url("room")) as ada:
                await ada.synced()
                ada.awareness.set_local_state({"user": {"name": "Ada"}})
                await bea.wait_for(lambda: "Ada" in names(bea))
                await cy.wait_for(lambda: "Ada" in names(cy))
            # Ada's connection closed: node 0 removes her state, and so does every node.
            await bea.wait_for(lambda: "Ada" not in names(bea))
            await cy.wait_for(lambda: "Ada" not in names(cy))

            async with Client(nodes[0].url("room")) as ada:
                await ada.synced()
                ada.awareness.set_local_state({"user": {"name": "Ada"}})
                await bea.wait_for(lambda: "Ada" in names(bea))
                # Node 0 dies with Ada connected: no close, no removal, no goodbye.
                await anyio.to_thread.run_sync(nodes[0].kill)
                # Heartbeats every 0.5 s, dead after three missed: well within 10 s.
                await bea.wait_for(lambda: "Ada" not in names(bea), timeout=10)
                await cy.wait_for(lambda: "Ada" not in names(cy), timeout=10)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_node_that_opens_a_document_later_shows_the_presence_already_there(
    kind: str, tmp_path: Path
) -> None:
    with Nodes(tmp_path, shared_bus(kind), 2) as nodes:
        async with Client(nodes[0].url("room")) as ada:
            await ada.synced()
            ada.awareness.set_local_state({"user": {"name": "Ada"}})
            async with Client(nodes[1].url("room")) as bea:  # node 1 loads the room now
                await bea.synced()
                await bea.wait_for(lambda: "Ada" in names(bea), timeout=5)


# -- epochs ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_delete_closes_the_stale_clients_of_every_node(kind: str, tmp_path: Path) -> None:
    with Nodes(tmp_path, shared_bus(kind), 2) as nodes:
        async with Client(nodes[0].url("minutes"), ack=True) as ada:
            async with Client(nodes[1].url("minutes")) as bea:
                await ada.synced()
                await bea.synced()
                ada.doc.get("content", type=Text).insert(0, "confidential draft")
                await bea.wait_for(lambda: "confidential" in str(bea.doc.get("content", type=Text)))
                await wait_stored(nodes.db_path, "minutes", "confidential draft")
                await anyio.to_thread.run_sync(delete, nodes.db_path, "minutes")
                for client in (ada, bea):
                    with pytest.raises(ConnectionClosedError):
                        await client.wait_for(lambda: False, timeout=10)
                    assert client.close_code == CloseCode.STALE_EPOCH


def delete(db_path: Path, name: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "collab", "docs", "delete", name, "--yes", "--db", str(db_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


# -- the bus restarts ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_the_bus_restarting_while_clients_type_loses_nothing(
    kind: str, tmp_path: Path
) -> None:
    broker = Broker(kind, tmp_path)
    broker.start()
    try:
        with Nodes(tmp_path, broker.url, 3, "--bus-sync-interval", "1") as nodes:
            await type_through_a_bus_restart(nodes, broker)
    finally:
        broker.stop()


async def type_through_a_bus_restart(nodes: Nodes, broker: Broker) -> None:
    room = "typing"
    typed: list[str] = []
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(nodes[i % 3].url(room))) for i in range(6)
        ]
        for client in clients:
            await client.synced()

        async def type_words(who: int, words: int) -> None:
            text = clients[who].doc.get("content", type=Text)
            for n in range(words):
                word = f"<{who}.{len(typed)}.{n}>"
                typed.append(word)
                text += word
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            for who in range(len(clients)):
                tg.start_soon(type_words, who, 10)
        await anyio.to_thread.run_sync(broker.stop)  # the bus is gone; typing goes on
        async with anyio.create_task_group() as tg:
            for who in range(len(clients)):
                tg.start_soon(type_words, who, 10)
        await anyio.to_thread.run_sync(broker.start)
        async with anyio.create_task_group() as tg:
            for who in range(len(clients)):
                tg.start_soon(type_words, who, 10)
        # Reconnect (backoff up to 5 s) and the state exchange (every 1 s) heal it.
        await wait_converged(clients, timeout=30)
        final = str(clients[0].doc.get("content", type=Text))
    missing = [word for word in typed if word not in final]
    assert missing == []
    await wait_stored(nodes.db_path, room, final)


async def test_a_node_whose_bus_is_down_serves_alone_and_catches_up_when_it_comes_up(
    tmp_path: Path,
) -> None:
    broker = Broker("redis", tmp_path)  # not started yet
    try:
        with Nodes(tmp_path, broker.url, 2, "--bus-sync-interval", "1") as nodes:
            async with Client(nodes[0].url("alone")) as ada, Client(nodes[1].url("alone")) as bea:
                await ada.synced()
                await bea.synced()
                ada.doc.get("content", type=Text).insert(0, "typed alone")
                await anyio.to_thread.run_sync(broker.start)
                await bea.wait_for(
                    lambda: str(bea.doc.get("content", type=Text)) == "typed alone", timeout=20
                )
    finally:
        broker.stop()


def test_a_bad_bus_url_fails_at_startup_with_a_clear_message(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "collab.db", tmp_path / "node.log", "--bus", "kafka://x")
    with pytest.raises(RuntimeError, match="kafka"):
        server.start()
    server.close()
    assert "Traceback" not in server.log()
