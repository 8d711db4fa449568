"""collab.ot against the reference: npm ``ot-text-unicode`` v4 under Node, case by case.

Each test builds a seeded batch of cases in Python, sends the whole batch to
``tests/js/ot_reference.mjs`` in one Node process, and compares every answer with ours.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab import ot

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parent / "js"

# Code points of every width the reference distinguishes: ASCII, BMP, astral (a surrogate
# pair in JS), combining marks and a zero-width joiner (several code points, one glyph).
ALPHABET = "abcxyz  \n\té中€" + "e\u0301" + "\u200d" + "😀🤖💃" + "\U0001d538"
WORDS = ["a", "hi ", "😀", "e\u0301", "\n", "中文", "👩\u200d💻", "xyz ", "\U0001d538b"]

Case = list[Any]


def run_reference(cases: list[Case]) -> list[dict[str, Any]]:
    """Answer every case with the reference in a single Node process."""
    node = shutil.which("node")
    assert node is not None, "node is not installed (scripts/test installs it)"
    proc = subprocess.run(
        [node, str(JS_DIR / "ot_reference.mjs")],
        input=json.dumps(cases).encode(),
        capture_output=True,
        cwd=JS_DIR,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"ot_reference.mjs failed ({proc.returncode}):\n{proc.stderr.decode()}")
    answers: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(answers) == len(cases)
    return answers


OURS: dict[str, Callable[..., Any]] = {
    "apply": ot.apply,
    "transform": ot.transform,
    "compose": ot.compose,
    "normalize": ot.normalize,
    "transformPosition": ot.transform_position,
    "invert": ot.invert,
    "invertWithDoc": ot.invert_with_doc,
    "makeInvertible": ot.make_invertible,
    "stripInvertible": ot.strip_invertible,
    "isInvertible": ot.is_invertible,
}


def run_ours(case: Case) -> dict[str, Any]:
    name, *args = case
    try:
        return {"ok": OURS[name](*args)}
    except ot.InvalidOpError as e:
        return {"error": str(e)}


def assert_same_answers(cases: list[Case]) -> None:
    mismatches = []
    for case, theirs in zip(cases, run_reference(cases), strict=True):
        ours = run_ours(case)
        same = ("error" in ours and "error" in theirs) or ours.get("ok", ours) == theirs.get(
            "ok", theirs
        )
        if not same:
            mismatches.append(f"{case!r}\n  reference: {theirs!r}\n  collab.ot: {ours!r}")
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(
        mismatches[:10]
    )


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(size))


def random_op(rng: random.Random, doc: str, *, normal: bool = True) -> ot.Op:
    """A valid op for ``doc``, in the manner of the reference's own ``test/genOp.js``.

    With ``normal=False`` the op may have neighbouring inserts or deletes, which are valid
    but not in normal form (transform treats ``["a", "b"]`` and ``["ab"]`` differently).
    """
    op: ot.Op = []
    pos = 0
    while pos < len(doc) and rng.randrange(7):
        skip = rng.randrange(min(len(doc) - pos, 6) + 1)
        if skip and not (op and isinstance(op[-1], int)):
            op.append(skip)
            pos += skip
        if rng.randrange(3) == 0:
            op.append(rng.choice(WORDS))
        elif pos < len(doc):
            count = rng.randrange(1, min(len(doc) - pos, 10) + 1)
            op.append({"d": doc[pos : pos + count]} if rng.randrange(2) else {"d": count})
            pos += count
        if normal:
            op = ot.normalize(op)
    if rng.randrange(4) == 0:  # the loop above rarely inserts at the very end
        if pos < len(doc):
            op.append(len(doc) - pos)
        op.append(rng.choice(WORDS))
    while op and isinstance(op[-1], int):
        op.pop()
    return ot.normalize(op) if normal else op


def test_apply_transform_compose_match_the_reference() -> None:
    rng = random.Random(20240601)
    cases: list[Case] = []
    for _ in range(1500):
        doc = random_text(rng, rng.randrange(0, 30))
        normal = rng.randrange(3) > 0
        a = random_op(rng, doc, normal=normal)
        b = random_op(rng, doc, normal=normal)
        after_a = ot.apply(doc, a)
        c = random_op(rng, after_a, normal=normal)
        cases += [
            ["apply", doc, a],
            ["transform", a, b, "left"],
            ["transform", a, b, "right"],
            ["transform", b, a, "left"],
            ["compose", a, c],
            ["transformPosition", rng.randrange(len(doc) + 3), a],
        ]
    assert_same_answers(cases)


def test_unrelated_ops_still_match_the_reference() -> None:
    """Transform and compose do not check that the two ops fit one doc; neither do we."""
    rng = random.Random(7)
    cases: list[Case] = []
    for _ in range(1000):
        a = random_op(rng, random_text(rng, rng.randrange(0, 25)), normal=rng.randrange(2) > 0)
        b = random_op(rng, random_text(rng, rng.randrange(0, 25)), normal=rng.randrange(2) > 0)
        cases += [
            ["transform", a, b, rng.choice(["left", "right"])],
            ["compose", a, b],
        ]
    assert_same_answers(cases)


def test_normalize_and_invert_match_the_reference() -> None:
    rng = random.Random(99)
    cases: list[Case] = []
    for _ in range(1000):
        doc = random_text(rng, rng.randrange(0, 25))
        op = random_op(rng, doc, normal=False)
        # Sprinkle no-op components and split skips: normalize must remove them.
        messy: list[Any] = []
        for c in op:
            if rng.randrange(4) == 0:
                messy.append(rng.choice([0, "", {"d": 0}, {"d": ""}]))
            if isinstance(c, int) and c > 1 and rng.randrange(2):
                cut = rng.randrange(1, c)
                messy += [cut, c - cut]
            else:
                messy.append(c)
        if rng.randrange(3) == 0:
            messy.append(rng.randrange(0, 4))  # a trailing skip
        invertible = ot.make_invertible(op, doc)
        cases += [
            ["normalize", messy],
            ["makeInvertible", op, doc],
            ["invertWithDoc", op, doc],
            ["invert", invertible],
            ["stripInvertible", invertible],
            ["isInvertible", op],
        ]
    assert_same_answers(cases)


def test_invalid_ops_are_rejected_by_both() -> None:
    bad_ops: list[Any] = [
        [-1, "a"],
        [0, "a"],
        ["a", 0, "b"],
        [""],
        [{"d": 0}],
        [{"d": -2}],
        [{"d": ""}],
        [1, 2, "a"],
        ["a", 3],
        [None],
        [[1]],
        [{"x": 1}],
        "not a list",
    ]
    cases: list[Case] = []
    for op in bad_ops:
        cases += [["apply", "abcdef", op], ["transform", op, ["x"], "left"]]
        cases += [["transform", ["x"], op, "right"], ["compose", op, ["x"]]]
    cases.append(["apply", "ab", [3, "x"]])  # skips past the end
    cases.append(["invert", [1, {"d": 3}]])  # nothing to re-insert
    answers = run_reference(cases)
    for case, theirs in zip(cases, answers, strict=True):
        assert "error" in theirs, case
        with pytest.raises(ot.InvalidOpError):
            run_ours_raising(case)


def run_ours_raising(case: Case) -> object:
    name, *args = case
    return OURS[name](*args)


def test_reference_accepts_ops_we_reject() -> None:
    """Where the reference quietly accepts a malformed op, collab.ot refuses it."""
    cases: list[Case] = [
        ["apply", "ab", [1, {"d": 5}]],  # the reference truncates the delete
        ["apply", "ab", [1.5, "x"]],  # a fractional skip
        ["apply", "ab", [True, "x"]],  # a bool is ignored as a component
        ["apply", "ab", [{"d": 1, "extra": 1}]],  # unknown keys are ignored
    ]
    for case, theirs in zip(cases, run_reference(cases), strict=True):
        assert "ok" in theirs, case
        with pytest.raises(ot.InvalidOpError):
            run_ours_raising(case)
