"""The ShareDB-style OT server document and client state machine in collab.ot_server."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from collab import ot
from collab.ot_server import (
    Ack,
    Broadcast,
    ClientState,
    OTClient,
    OTDocument,
    RevisionError,
    Submit,
)


def test_submit_transforms_an_op_made_against_an_old_revision() -> None:
    doc = OTDocument("hello")
    assert doc.submit([5, " world"], 0) == ([5, " world"], 1)
    # Made against revision 0: its "!" ties with " world" at position 5 and, arriving later,
    # goes first (the server transforms incoming ops with side "left").
    assert doc.submit([{"d": 1}, 4, "!"], 0) == ([{"d": 1}, 4, "!"], 2)
    assert doc.text == "ello! world"
    assert doc.ops_since(1) == [[{"d": 1}, 4, "!"]]


def test_later_op_wins_ties_at_the_server() -> None:
    doc = OTDocument("")
    doc.submit(["a"], 0)
    op, _ = doc.submit(["b"], 0)
    assert op == ["b"]
    assert doc.text == "ba"


def test_bad_submissions_change_nothing() -> None:
    doc = OTDocument("abc")
    doc.submit(["x"], 0)
    with pytest.raises(RevisionError):
        doc.submit(["y"], 2)
    with pytest.raises(RevisionError):
        doc.submit(["y"], -1)
    with pytest.raises(ot.InvalidOpError):
        doc.submit([{"d": 9}], 1)
    with pytest.raises(ot.InvalidOpError):
        doc.submit([1, 1], 1)
    assert (doc.text, doc.revision) == ("xabc", 1)


def test_client_moves_through_its_states() -> None:
    client = OTClient("abc")
    states = [client.state]
    assert client.edit(["x"]) == Submit(["x"], 0)
    states.append(client.state)
    assert client.edit([1, "y"]) is None
    assert client.edit([2, "z"]) is None
    assert client.buffer == [[1, "yz"]]  # composed
    states.append(client.state)
    assert client.receive_op(Broadcast([3, "!"], 1)) == [6, "!"]
    assert client.text == "xyzabc!"
    assert client.receive_ack(Ack(2)) == Submit([1, "yz"], 2)
    states.append(client.state)
    assert client.receive_ack(Ack(3)) is None
    states.append(client.state)
    assert [s.name for s in states] == [
        "SYNCHRONIZED",
        "AWAITING",
        "AWAITING_WITH_BUFFER",
        "AWAITING",
        "SYNCHRONIZED",
    ]


def test_client_without_compose_queues_each_edit() -> None:
    client = OTClient("", compose=False)
    client.edit(["a"])
    client.edit([1, "b"])
    client.edit([2, "c"])
    assert client.buffer == [[1, "b"], [2, "c"]]
    assert client.receive_ack(Ack(1)) == Submit([1, "b"], 1)


def test_client_refuses_out_of_order_messages() -> None:
    client = OTClient("")
    with pytest.raises(RevisionError):
        client.receive_ack(Ack(1))  # nothing in flight
    with pytest.raises(RevisionError):
        client.receive_op(Broadcast(["x"], 2))
    with pytest.raises(ot.InvalidOpError):
        client.edit([{"d": 1}])
    assert (client.text, client.revision, client.state) == ("", 0, ClientState.SYNCHRONIZED)


TEXT = st.sampled_from(["a", "bc", "😀", "e\u0301", "\n", "中"])


class Network(RuleBasedStateMachine):
    """Clients and one server; every message waits in a FIFO queue until a rule delivers it."""

    def __init__(self) -> None:
        super().__init__()
        self.server = OTDocument("start")
        self.clients = [OTClient("start", compose=i != 0) for i in range(3)]
        self.up: list[deque[Submit]] = [deque() for _ in self.clients]
        self.down: list[deque[Ack | Broadcast]] = [deque() for _ in self.clients]
        self.texts = ["start"]  # the server's text at every revision

    @rule(data=st.data(), client=st.integers(0, 2))
    def edit(self, data: st.DataObject, client: int) -> None:
        text = self.clients[client].text
        pos = data.draw(st.integers(0, len(text)))
        count = data.draw(st.integers(0, min(3, len(text) - pos)))
        op = ot.normalize([pos, {"d": count}, data.draw(TEXT)])
        if (message := self.clients[client].edit(op)) is not None:
            self.up[client].append(message)

    @precondition(lambda self: any(self.up))
    @rule(data=st.data())
    def deliver_to_server(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from([i for i, q in enumerate(self.up) if q]))
        ack, broadcast = self.server.receive(self.up[client].popleft())
        self.texts.append(self.server.text)
        for i, queue in enumerate(self.down):
            queue.append(ack if i == client else broadcast)

    @precondition(lambda self: any(self.down))
    @rule(data=st.data())
    def deliver_to_client(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from([i for i, q in enumerate(self.down) if q]))
        self.deliver_down(client)

    def deliver_down(self, client: int) -> None:
        message = self.down[client].popleft()
        if isinstance(message, Ack):
            if (submit := self.clients[client].receive_ack(message)) is not None:
                self.up[client].append(submit)
        else:
            self.clients[client].receive_op(message)

    @rule()
    def settle(self) -> None:
        while any(self.up) or any(self.down):
            for i in range(len(self.clients)):
                while self.up[i]:
                    ack, broadcast = self.server.receive(self.up[i].popleft())
                    self.texts.append(self.server.text)
                    for j, queue in enumerate(self.down):
                        queue.append(ack if j == i else broadcast)
                while self.down[i]:
                    self.deliver_down(i)
        assert all(c.text == self.server.text for c in self.clients)
        assert all(c.state is ClientState.SYNCHRONIZED for c in self.clients)

    def teardown(self) -> None:
        self.settle()

    @invariant()
    def client_text_is_server_text_plus_pending_ops(self) -> None:
        for client in self.clients:
            text = self.texts[client.revision]
            for op in [client.inflight, *client.buffer]:
                if op is not None:
                    text = ot.apply(text, op)
            assert client.text == text

    @invariant()
    def at_most_one_op_in_flight(self) -> None:
        for client, queue in zip(self.clients, self.up, strict=True):
            assert len(queue) <= 1
            assert (client.inflight is None) == (client.state is ClientState.SYNCHRONIZED)


TestNetwork = Network.TestCase
TestNetwork.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
