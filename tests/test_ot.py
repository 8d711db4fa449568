"""The text OT type in collab.ot: examples, laws (hypothesis) and rejection of bad ops."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab import ot
from collab.errors import CollabError

LAWS = settings(max_examples=200, deadline=None)

# ASCII, newlines, combining marks, CJK, astral characters and a zero-width joiner sequence.
SPECIAL = ["\n", "e\u0301", "\u0301", "中", "😀", "\U0001d538", "👩\u200d💻", "\r\n", "\t"]
chars = st.one_of(
    st.sampled_from(SPECIAL),
    st.characters(exclude_categories=["Cs"], max_codepoint=0x1FFFF),
)
texts = st.lists(chars, max_size=25).map("".join)
nonempty_texts = st.lists(chars, min_size=1, max_size=6).map("".join)


@st.composite
def ops_for(draw: st.DrawFn, doc: str, *, invertible: bool | None = None) -> ot.Op:
    """A valid op for ``doc``; deletes carry their text when ``invertible`` (random if None)."""
    op: list[Any] = []
    pos = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["skip", "insert", "delete"]))
        room = len(doc) - pos
        if kind == "insert":
            op.append(draw(nonempty_texts))
        elif room > 0:
            count = draw(st.integers(1, room))
            if kind == "skip":
                op.append(count)
            else:
                keep_text = draw(st.booleans()) if invertible is None else invertible
                op.append({"d": doc[pos : pos + count] if keep_text else count})
            pos += count
    return ot.normalize(op)


@st.composite
def doc_and_ops(draw: st.DrawFn, count: int = 2) -> tuple[Any, ...]:
    doc = draw(texts)
    return (doc, *(draw(ops_for(doc)) for _ in range(count)))


def test_readme_examples() -> None:
    assert ot.apply("hi there", [3, {"d": 5}, "🤖👻💃"]) == "hi 🤖👻💃"
    assert ot.insert(2, "hi there") == [2, "hi there"]
    assert ot.remove(0, "hi") == [{"d": "hi"}]
    assert ot.compose(ot.insert(2, "hi there"), ot.remove(2, "hi there")) == []
    assert ot.invert([2, {"d": "hello"}]) == [2, "hello"]
    assert ot.invert_with_doc([2, {"d": 5}], "a hello") == [2, "hello"]


def test_positions_count_code_points() -> None:
    doc = "😀e\u0301中"  # 4 code points: an astral character, e plus a combining accent, 中
    assert ot.apply(doc, [1, {"d": 2}]) == "😀中"
    assert ot.apply(doc, [4, "!"]) == doc + "!"
    with pytest.raises(ot.InvalidOpError):
        ot.apply(doc, [5, "!"])
    assert ot.transform_position(4, ["💃"]) == 5


def test_side_breaks_ties_between_inserts_at_one_position() -> None:
    assert ot.transform(["a"], ["b"], "left") == ["a"]
    assert ot.transform(["a"], ["b"], "right") == [1, "a"]
    # Only one insert component goes first: the reference does the same for unmerged inserts.
    assert ot.transform(["a", "b"], ["X"], "left") == ["a", 1, "b"]


def test_cursor_stays_before_text_inserted_at_it() -> None:
    assert ot.transform_position(2, [2, "xyz"]) == 2
    assert ot.transform_position(3, [2, "xyz"]) == 6
    assert ot.transform_position(3, [1, {"d": 5}]) == 1


@given(doc_and_ops())
@LAWS
def test_transform_converges_tp1(case: tuple[str, ot.Op, ot.Op]) -> None:
    doc, a, b = case
    via_a = ot.apply(ot.apply(doc, a), ot.transform(b, a, "right"))
    via_b = ot.apply(ot.apply(doc, b), ot.transform(a, b, "left"))
    assert via_a == via_b


@given(st.data())
@LAWS
def test_compose_is_apply_then_apply(data: st.DataObject) -> None:
    doc = data.draw(texts)
    a = data.draw(ops_for(doc))
    b = data.draw(ops_for(ot.apply(doc, a)))
    composed = ot.compose(a, b)
    ot.check_op(composed)
    assert ot.apply(doc, composed) == ot.apply(ot.apply(doc, a), b)
    if ot.is_invertible(a) and ot.is_invertible(b):
        assert ot.is_invertible(composed)


@given(st.data())
@LAWS
def test_compose_is_associative_in_effect(data: st.DataObject) -> None:
    doc = data.draw(texts)
    a = data.draw(ops_for(doc))
    b = data.draw(ops_for(ot.apply(doc, a)))
    c = data.draw(ops_for(ot.apply(ot.apply(doc, a), b)))
    left = ot.compose(ot.compose(a, b), c)
    right = ot.compose(a, ot.compose(b, c))
    assert ot.apply(doc, left) == ot.apply(doc, right)


messy_components = st.one_of(
    st.integers(0, 5),
    st.sampled_from(["", "a", "😀", "\n"]),
    st.builds(lambda n: {"d": n}, st.integers(0, 4)),
    st.builds(lambda s: {"d": s}, st.sampled_from(["", "x", "e\u0301"])),
)


@given(st.lists(messy_components, max_size=12))
@LAWS
def test_normalize_is_idempotent_and_gives_valid_ops(op: list[Any]) -> None:
    snapshot = json.dumps(op)
    once = ot.normalize(op)
    ot.check_op(once)
    assert ot.normalize(once) == once
    assert json.dumps(op) == snapshot  # the argument is not modified


@given(doc_and_ops(count=1))
@LAWS
def test_normalize_keeps_the_effect(case: tuple[str, ot.Op]) -> None:
    doc, op = case
    # Split every component in two (still a valid op once skips are merged) and normalize back.
    split: list[Any] = []
    for c in op:
        if isinstance(c, str) and len(c) > 1:
            split += [c[:1], c[1:]]
        elif isinstance(c, dict) and isinstance(c["d"], int) and c["d"] > 1:
            split += [{"d": 1}, {"d": c["d"] - 1}]
        else:
            split.append(c)
    assert ot.apply(doc, split) == ot.apply(doc, op)
    assert ot.normalize(split) == op


@given(st.data())
@LAWS
def test_invert_undoes_an_op(data: st.DataObject) -> None:
    doc = data.draw(texts)
    op = data.draw(ops_for(doc, invertible=True))
    assert ot.is_invertible(op)
    assert ot.apply(ot.apply(doc, op), ot.invert(op)) == doc
    assert ot.invert(ot.invert(op)) == op
    plain = ot.strip_invertible(op)
    assert ot.apply(doc, plain) == ot.apply(doc, op)
    assert ot.make_invertible(plain, doc) == op
    assert ot.apply(ot.apply(doc, plain), ot.invert_with_doc(plain, doc)) == doc


@given(st.data())
@LAWS
def test_transform_keeps_ops_invertible(data: st.DataObject) -> None:
    doc = data.draw(texts)
    a = data.draw(ops_for(doc, invertible=True))
    b = data.draw(ops_for(doc, invertible=True))
    a2 = ot.transform(a, b, "left")
    assert ot.is_invertible(a2)
    after = ot.apply(ot.apply(doc, b), a2)
    assert ot.apply(after, ot.invert(a2)) == ot.apply(doc, b)


MARK = "\U0010ffff"  # never drawn: generated characters stop at U+1FFFF


@given(st.data())
@LAWS
def test_transform_position_follows_a_marker(data: st.DataObject) -> None:
    """A cursor moves like a one-character insert at it that wins every tie."""
    doc = data.draw(texts)
    op = data.draw(ops_for(doc))
    pos = data.draw(st.integers(0, len(doc)))
    marked = ot.apply(doc, ot.insert(pos, MARK))
    moved = ot.apply(marked, ot.transform(op, ot.insert(pos, MARK), "right"))
    assert ot.transform_position(pos, op) == moved.index(MARK)
    assert ot.transform_selection([pos, 0], op) == [moved.index(MARK), 0]


@given(doc_and_ops(count=1))
@LAWS
def test_transform_against_noop_changes_nothing(case: tuple[str, ot.Op]) -> None:
    _, op = case
    assert ot.transform(op, [], "left") == op
    assert ot.transform([], op, "right") == []
    assert ot.compose(op, []) == op
    assert ot.compose([], op) == op


@pytest.mark.parametrize(
    "op",
    [
        [-1, "a"],
        [0, "a"],
        ["a", ""],
        [{"d": 0}],
        [{"d": -1}],
        [{"d": ""}],
        [{"d": 1.0}],
        [{"d": 1, "i": "x"}],
        [1, 1, "a"],
        ["a", 1],
        [True, "a"],
        [1.5, "a"],
        [None],
        [["a"]],
        ["\ud800"],
        "abc",
        {"d": 1},
    ],
)
def test_invalid_ops_raise_invalid_op_error(op: Any) -> None:
    for call in (
        lambda: ot.apply("abcdef", op),
        lambda: ot.transform(op, ["x"], "left"),
        lambda: ot.transform(["x"], op, "left"),
        lambda: ot.compose(op, ["x"]),
        lambda: ot.compose(["x"], op),
    ):
        with pytest.raises(ot.InvalidOpError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, CollabError)


def test_ops_that_run_past_the_doc_raise() -> None:
    with pytest.raises(ot.InvalidOpError, match="past the end"):
        ot.apply("ab", [3, "x"])
    with pytest.raises(ot.InvalidOpError, match="past the end"):
        ot.apply("ab", [1, {"d": 2}])
    with pytest.raises(ot.InvalidOpError, match="without its text"):
        ot.invert([{"d": 2}])
    with pytest.raises(ValueError, match="side"):
        ot.transform(["a"], ["b"], "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ot.transform_position(-1, ["a"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats(-2, 3) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("dx"), inner),
    max_leaves=8,
)


@given(texts, json_values)
@LAWS
def test_garbage_gives_a_result_or_invalid_op_error(doc: str, op: Any) -> None:
    snapshot = json.dumps(op)
    for call in (
        lambda: ot.apply(doc, op),
        lambda: ot.transform(op, ["x"], "right"),
        lambda: ot.compose(op, [1, "y"]),
        lambda: ot.normalize(op),
        lambda: ot.transform_position(1, op),
        lambda: ot.invert(op),
    ):
        try:
            call()
        except ot.InvalidOpError:
            pass
    assert json.dumps(op) == snapshot
