"""Coverage-guided fuzzing of a room with atheris, time-boxed.

    .venv/bin/python tests/fuzz/fuzz_atheris.py -max_total_time=120 -print_final_stats=1

Each input is split into up to four updates (the first byte picks how), offered to a
victim's room; tests/fuzz/harness.py checks the invariants after each, and the full ones
every 20 inputs, when a fresh room takes over. libFuzzer prints how many inputs it ran
(``stat::number_of_executed_units``).
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

#: Inputs offered to one room before the full check and a fresh room.
SESSION = 20
_state: dict[str, object] = {"harness": None, "count": 0}


def one_input(data: bytes) -> None:
    if not data:
        return
    harness = _state["harness"]
    if not isinstance(harness, Harness):
        harness = _state["harness"] = Harness()
    pieces = data[0] % 4 + 1
    body = data[1:]
    size = max(1, len(body) // pieces)
    for i in range(pieces):
        chunk = body[i * size : (i + 1) * size] if i < pieces - 1 else body[i * size :]
        harness.offer(chunk, as_awareness=data[0] & 0x80 != 0)
    count = int(str(_state["count"])) + 1
    _state["count"] = count
    if count % SESSION == 0:
        harness.check()
        harness.close()
        _state["harness"] = None


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="collab-fuzz-"))
    for i, seed in enumerate([*REAL, VICTIM_UPDATE]):
        (corpus / f"seed{i}").write_bytes(b"\x00" + seed)
    atheris.Setup([*sys.argv, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
