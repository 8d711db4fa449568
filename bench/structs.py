#!/usr/bin/env python3
"""How long collab.structs takes on one keystroke: read_update, and check + commit.

Types the first 5,000 inserts of the ``automerge-paper`` trace into a pycrdt Text, keeps
each transaction's update (about 25 bytes), then times reading them all and running
them through a NestingTracker. Prints microseconds per update (best of 5 runs).

Example::

    .venv/bin/python bench/structs.py
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from pycrdt import Doc, Text

from collab.structs import NestingTracker, max_depth, read_update

TRACE = Path(__file__).parent / "traces" / "automerge-paper.json.gz"


def main(n: int = 5000, runs: int = 5) -> None:
    txns = json.loads(gzip.decompress(TRACE.read_bytes()))["txns"][:n]
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda e: updates.append(e.update))
    for txn in txns:
        for pos, delete, insert in txn["patches"]:
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)
    doc.unobserve(sub)
    size = sum(map(len, updates)) / len(updates)

    def best(fn: object) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times) / len(updates) * 1e6

    def scan() -> None:
        for u in updates:
            read_update(u)

    def track() -> None:
        tracker = NestingTracker()
        for u in updates:
            tracker.commit(tracker.check(u))

    def apply() -> None:
        d: Doc = Doc()
        for u in updates:
            d.apply_update(u)

    whole = doc.get_update()
    t0 = time.perf_counter()
    max_depth(whole)
    whole_ms = (time.perf_counter() - t0) * 1e3
    print(f"{len(updates)} updates, {size:.1f} bytes each on average")
    print(f"read_update:        {best(scan):6.2f} us/update")
    print(f"check + commit:     {best(track):6.2f} us/update")
    print(f"pycrdt apply:       {best(apply):6.2f} us/update (for scale)")
    print(f"max_depth of the whole doc ({len(whole)} bytes): {whole_ms:.1f} ms")


if __name__ == "__main__":
    main()
