"""The fuzz harness in the suite: a few thousand generated hostile inputs, seeded."""

from __future__ import annotations

import random

import pytest

from tests.fuzz.harness import Harness, hostile_update


@pytest.mark.parametrize("seed", range(8))
def test_generated_hostile_updates_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    tried = 0
    for _ in range(25):
        harness = Harness()
        for _ in range(rng.randrange(1, 21)):
            harness.offer(hostile_update(rng), as_awareness=rng.random() < 0.05)
            tried += 1
        harness.check()
        harness.close()
    assert tried > 100


def test_the_generator_makes_inputs_the_room_accepts_and_refuses() -> None:
    # a generator whose every input is refused (or accepted) would test little
    rng = random.Random(99)
    harness = Harness()
    for _ in range(300):
        harness.offer(hostile_update(rng))
    assert harness.accepted > 20 and harness.refused > 100
    harness.check()
    harness.close()
