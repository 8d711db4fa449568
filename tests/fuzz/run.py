"""Run the structure-aware fuzzer for a time box and print how many inputs it tried.

    .venv/bin/python tests/fuzz/run.py --seconds 300 [--seed 1]

Each session starts a fresh victim room, offers it up to 20 generated inputs (checking
the cheap invariants after each) and then the full ones (tests/fuzz/harness.py). A
failed invariant stops the run with the seed and input that broke it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.harness import Harness, hostile_update  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    deadline = time.monotonic() + args.seconds
    tried = accepted = sessions = 0
    started = time.monotonic()
    while time.monotonic() < deadline:
        harness = Harness()
        sessions += 1
        for _ in range(rng.randrange(1, 21)):
            update = hostile_update(rng)
            try:
                harness.offer(update, as_awareness=rng.random() < 0.05)
            except AssertionError:
                print(f"invariant broken (seed {seed}, input {tried}): {update.hex()}")
                raise
            tried += 1
        harness.check()
        accepted += harness.accepted
        harness.close()
    elapsed = time.monotonic() - started
    print(
        f"seed {seed}: {tried} inputs in {sessions} sessions, {elapsed:.0f} s"
        f" ({tried / elapsed:.0f}/s); {accepted} accepted, {tried - accepted} refused;"
        " every invariant held"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
