"""The same concurrent editing sessions through OT (collab.ot_server) and the CRDT (pycrdt).

Sessions come from ``bench/editing_sessions.py``, which ``bench/ot_vs_crdt.py`` also uses
to measure both systems. Here we check that both converge on every generated session, that
where they end up differing it is only in the order of concurrent inserts, and that the
real editing traces in ``bench/traces`` (shipped in the repository) replay to
their recorded end text in both.
"""

from __future__ import annotations

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from pycrdt import Doc, Text

from bench.editing_sessions import (
    TEXT_NAME,
    Deliver,
    Disconnect,
    Edit,
    Reconnect,
    Session,
    Sync,
    compare,
    first_divergence,
    generate_session,
    load_trace,
    offline_session,
    position,
    replay,
    rounds_session,
)
from collab.client import Client
from tests.conftest import ServerProcess


@pytest.mark.parametrize(
    ("clients", "offline_chance", "deliveries_per_edit"),
    [(2, 0.0, 1.0), (3, 0.05, 1.5), (5, 0.1, 0.5)],
    ids=["two-clients", "three-with-offline", "five-slow-network"],
)
def test_generated_sessions_converge_in_both_systems(
    clients: int, offline_chance: float, deliveries_per_edit: float
) -> None:
    differ = 0
    for seed in range(25):
        session = generate_session(
            seed,
            clients=clients,
            edits=120,
            offline_chance=offline_chance,
            deliveries_per_edit=deliveries_per_edit,
        )
        ot_result, crdt_result = compare(session)
        assert ot_result.converged, f"OT diverged on seed {seed}: {ot_result.texts}"
        assert crdt_result.converged, f"CRDT diverged on seed {seed}: {crdt_result.texts}"
        differ += ot_result.server_text != crdt_result.server_text
    # Recorded, not asserted: once two concurrent inserts are ordered differently, later
    # edits (placed at a fraction of each client's text) land elsewhere too.
    print(f"{clients} clients: final texts differ in {differ} of 25 sessions")


def test_systems_differ_only_in_the_order_of_concurrent_inserts() -> None:
    diverged = 0
    for seed in range(150):
        divergence = first_divergence(rounds_session(seed, clients=3, rounds=4, edits=4))
        if divergence is None:
            continue
        diverged += 1
        # Same starting text, same ops: both keep and delete the same characters.
        assert sorted(divergence.ot_text) == sorted(divergence.crdt_text), divergence
    assert 0 < diverged < 150


def test_concurrent_inserts_at_one_spot_are_ordered_differently() -> None:
    # Both type into an empty doc; client 0's op reaches the OT server first.
    steps = (Edit(0, 0.0, 0, "A"), Edit(1, 0.0, 0, "B"), Deliver(0, True), Deliver(1, True), Sync())
    divergence = first_divergence(Session(0, 2, "", steps))
    assert divergence is not None
    assert divergence.ot_text == "BA"  # the later op wins the tie at the server ("left")
    assert divergence.crdt_text == "AB"  # Yjs puts the lower client id first


def test_offline_client_catches_up_in_both_systems() -> None:
    session = offline_session(1, missed=300, offline=40)
    ot_result, crdt_result = compare(session)
    assert ot_result.converged and crdt_result.converged
    # The reconnecting op is transformed over every op it missed, at the server, and each
    # missed op over the client's pending op on the way in.
    assert ot_result.stats.transforms >= 300


def _replay_plain(patches: list[tuple[int, int, str]], text: str) -> str:
    for pos, delete, insert in patches:
        text = text[:pos] + insert + text[pos + delete :]
    return text


@pytest.mark.parametrize("system", ["OT", "CRDT"])
def test_sequential_trace_replays_in_both_systems(system: str) -> None:
    # The whole automerge-paper trace takes 10-15 s per system; bench/ot_vs_crdt.py runs it.
    trace = load_trace("automerge-paper").prefix(25_000)
    expected = trace.start
    for txn in trace.txns:
        expected = _replay_plain(list(txn.patches), expected)
    result = replay(trace, system)
    assert result.texts == [expected] * len(result.texts)


@pytest.mark.parametrize("system", ["OT", "CRDT"])
@pytest.mark.parametrize("name", ["clownschool", "friendsforever"])
def test_concurrent_trace_reaches_its_end_content(name: str, system: str) -> None:
    trace = load_trace(name)
    assert trace.concurrent
    result = replay(trace, system)
    for text in result.texts:
        assert text == trace.end


# --- the integration variant: CRDT clients through a running `collab serve` -----------------


def _splice(text: Text, at: float, delete: int, insert: str) -> None:
    current = str(text)
    pos = position(at, len(current))
    delete = min(delete, len(current) - pos)
    # pycrdt indexes text by UTF-8 bytes.
    start = len(current[:pos].encode())
    size = len(current[pos : pos + delete].encode())
    with text.doc.transaction():
        if size:
            del text[start : start + size]
        if insert:
            text.insert(start, insert)


async def test_session_through_collab_serve(server: ServerProcess) -> None:
    """A generated session with real sockets: offline means the connection is closed, and
    delivery order is whatever the network and server make of it."""
    session = generate_session(11, clients=3, edits=80, offline_chance=0.1)
    url = server.url("ot-vs-crdt")
    docs: list[Doc[Text]] = [Doc() for _ in range(session.clients)]
    texts = [doc.get(TEXT_NAME, type=Text) for doc in docs]
    online: dict[int, tuple[Client, anyio.Event, anyio.Event]] = {}  # (connection, stop, stopped)

    async def hold(client: int, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        stop, stopped = anyio.Event(), anyio.Event()
        try:
            async with Client(url, doc=docs[client]) as connection:
                await connection.synced()
                online[client] = connection, stop, stopped
                task_status.started()
                await stop.wait()
        finally:
            stopped.set()

    async def disconnect(client: int) -> None:
        _, stop, stopped = online.pop(client)
        stop.set()
        await stopped.wait()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for client in range(session.clients):
                await tg.start(hold, client)
            for step in session.steps:
                if isinstance(step, Edit):
                    _splice(texts[step.client], step.at, step.delete, step.insert)
                elif isinstance(step, Deliver):
                    await anyio.lowlevel.checkpoint()
                elif isinstance(step, Disconnect):
                    await disconnect(step.client)
                elif isinstance(step, Reconnect):
                    await tg.start(hold, step.client)
            for client in range(session.clients):
                if client not in online:
                    await tg.start(hold, client)

            # Everything any client made, merged: what every replica must end up with.
            merged: Doc[Text] = Doc()
            for doc in docs:
                merged.apply_update(doc.get_update())
            expected = str(merged.get(TEXT_NAME, type=Text))
            async with Client(url) as late:
                late_text = late.doc.get(TEXT_NAME, type=Text)
                await late.synced()
                await late.wait_for(lambda: str(late_text) == expected, timeout=20)
            for client, (connection, _, _) in online.items():
                text = texts[client]
                await connection.wait_for(lambda text=text: str(text) == expected, timeout=20)
            for client in list(online):
                await disconnect(client)
    assert expected  # the session typed something
