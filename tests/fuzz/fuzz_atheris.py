"""Coverage-guided fuzzing of a room with atheris, time-boxed.

    .venv/bin/python tests/fuzz/fuzz_atheris.py -max_total_time=120 -print_final_stats=1

Each input is split into up to eight updates (the first byte picks how), offered to a
fresh victim's room; tests/fuzz/harness.py checks the invariants after each, and the full
ones at the end, so that a failing input reproduces on its own. libFuzzer prints how many
inputs it ran (``stat::number_of_executed_units``).
Seeds: the real updates of the harness, written to a temporary corpus.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from collab import rooms, structs, updates  # noqa: F401
    from collab.protocol import codec  # noqa: F401

from tests.fuzz.harness import REAL, VICTIM_UPDATE, Harness  # noqa: E402


def one_input(data: bytes) -> None:
    """One input is one session: up to eight updates to a fresh room, then the full
    check, so that a failing input reproduces on its own."""
    if not data:
        return
    pieces = data[0] % 8 + 1
    body = data[1:]
    size = max(1, len(body) // pieces)
    harness = Harness()
    try:
        for i in range(pieces):
            chunk = body[i * size : (i + 1) * size] if i < pieces - 1 else body[i * size :]
            harness.offer(chunk, as_awareness=data[0] & 0x80 != 0)
        harness.check()
    finally:
        harness.close()


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="collab-fuzz-"))
    for i, seed in enumerate([*REAL, VICTIM_UPDATE]):
        (corpus / f"seed{i}").write_bytes(b"\x00" + seed)
    atheris.Setup([*sys.argv, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
