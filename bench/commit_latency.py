#!/usr/bin/env python3
"""Commit latency (issue 16): PostgreSQL against SQLite, as the group commit sees it.

A single-machine measurement: PostgreSQL runs on the same host, over loopback, so no
network round trip is in these numbers beyond the kernel's; on a real deployment add the
round trip to the database host times the ~5 round trips of a commit. Three measures:

* ``commit``: one group commit of ``rows`` keystroke updates to one document, the backend's
  own function on its own connection (``append_updates`` for SQLite, ``append_batch`` for
  PostgreSQL), timed around the call, ``--commits`` in a row;
* ``store``: through the store as a room uses it (``open_store``, ``commit_delay`` 0): from
  ``append_nowait`` to the commit thread's ``committed_at``, one update at a time;
* ``two_nodes``: PostgreSQL only, two stores (two nodes) appending to the same document at
  once, each update's append-to-durable time; the row lock makes them take turns.

Each measure is run ``--runs`` times; the table shows the median over runs of each run's
median and 99th percentile. SQLite is the file backend with ``synchronous`` NORMAL (the
default) and FULL; PostgreSQL runs with the server's settings (``synchronous_commit``
reported in the JSON).

Example::

    .venv/bin/python bench/commit_latency.py                # ~1 min
    .venv/bin/python bench/commit_latency.py --quick        # a few seconds

Writes bench/results/commit_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.machine import machine  # noqa: E402
from collab.config import Settings  # noqa: E402
from collab.storage import Store, open_store  # noqa: E402
from collab.storage.postgres.append import KnownNames, append_batch  # noqa: E402
from collab.storage.postgres.schema import conninfo  # noqa: E402
from collab.storage.sqlite import append_updates, connect  # noqa: E402
from tests.edits import keystrokes  # noqa: E402

RESULTS = BENCH / "results" / "commit_latency.json"
SERVER = os.environ.get("COLLAB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(runs: list[list[float]]) -> dict[str, Any]:
    """Median over runs of each run's median and p99, in milliseconds."""
    return {
        "p50_ms": round(statistics.median(statistics.median(r) for r in runs) * 1000, 3),
        "p99_ms": round(statistics.median(percentile(r, 0.99) for r in runs) * 1000, 3),
        "runs": len(runs),
        "samples_per_run": len(runs[0]),
    }


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on ``SERVER`` for one measure; dropped afterwards."""
    name = f"collab_bench_{secrets.token_hex(4)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = SERVER.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def batches(rows: int, count: int) -> list[list[tuple[str, bytes, float, int | None]]]:
    updates = keystrokes("x" * (rows * count))
    now = time.time()
    return [
        [("doc", u, now, None) for u in updates[i * rows : (i + 1) * rows]] for i in range(count)
    ]


def timed(
    commit: Callable[[list[tuple[str, bytes, float, int | None]]], object], rows: int, count: int
) -> list[float]:
    times = []
    for batch in batches(rows, count):
        start = time.perf_counter()
        commit(batch)
        times.append(time.perf_counter() - start)
    return times


def commit_sqlite(work: Path, synchronous: str, rows: int, count: int) -> list[float]:
    path = work / f"commit-{synchronous}-{rows}-{secrets.token_hex(3)}.db"
    db = connect(path, synchronous=synchronous)
    try:
        append_updates(db, batches(1, 1)[0])  # the document exists, as in a running room
        return timed(lambda batch: append_updates(db, batch), rows, count)
    finally:
        db.close()


def commit_postgres(rows: int, count: int) -> list[float]:
    with postgres_database() as url:

        async def migrate() -> None:
            async with open_store(Settings(db=url)):
                pass

        anyio.run(migrate)
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            known = KnownNames()
            append_batch(conn, batches(1, 1)[0], known=known)
            return timed(lambda batch: append_batch(conn, batch, known=known), rows, count)


async def through_store(stores: list[Store], count: int) -> list[float]:
    """Each store appends ``count`` updates one at a time, all stores at once; the time
    from each ``append_nowait`` to the commit that made it durable."""
    latencies: list[float] = []

    async def one_node(store: Store, updates: list[bytes]) -> None:
        committed: dict[int, float] = {}
        store.on_commit(lambda ticket, at: committed.__setitem__(ticket, at))
        for update in updates:
            start = time.monotonic()
            ticket = store.append_nowait("doc", update)
            await store.flush()
            at = next(at for t, at in sorted(committed.items()) if t >= ticket)
            latencies.append(at - start)
            committed.clear()

    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(one_node, store, keystrokes("y" * count))
    return latencies


def store_latency(db: str, count: int, nodes: int = 1) -> list[float]:
    async def main() -> list[float]:
        settings = Settings(db=db, commit_delay=0.0, compact_rows=1_000_000)
        async with open_store(settings) as first:
            if nodes == 1:
                return await through_store([first], count)
            async with open_store(settings) as second:
                return await through_store([first, second], count)

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="Runs per measure (median).")
    parser.add_argument("--commits", type=int, default=300, help="Commits per run.")
    parser.add_argument("--quick", action="store_true", help="1 run of 20 commits.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs, count = (1, 20) if args.quick else (args.runs, args.commits)
    with psycopg.connect(SERVER) as conn:
        row = conn.execute("SELECT version(), current_setting('synchronous_commit')").fetchone()
    assert row is not None
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {**machine(), "sqlite": __import__("sqlite3").sqlite_version},
            "postgresql": row[0],
            "synchronous_commit": row[1],
            "note": "PostgreSQL on the same machine, over loopback",
            "load_average_before": os.getloadavg()[0],
        },
        "commit": {},
        "store": {},
    }
    with tempfile.TemporaryDirectory(prefix="collab-bench-commit-") as tmp:
        work = Path(tmp)
        for rows in (1, 10, 100):
            for backend in ("sqlite-normal", "sqlite-full", "postgresql"):
                log(f"commit: {backend}, {rows} rows per commit")
                if backend == "postgresql":
                    samples = [commit_postgres(rows, count) for _ in range(runs)]
                else:
                    sync = backend.split("-")[1].upper()
                    samples = [commit_sqlite(work, sync, rows, count) for _ in range(runs)]
                results["commit"][f"{backend}/{rows}"] = summary(samples)
        for backend in ("sqlite-normal", "postgresql"):
            log(f"store: {backend}, append to durable")
            samples = []
            for _ in range(runs):
                if backend == "postgresql":
                    with postgres_database() as url:
                        samples.append(store_latency(url, count))
                else:
                    samples.append(store_latency(str(work / f"s-{secrets.token_hex(3)}.db"), count))
            results["store"][backend] = summary(samples)
        log("store: postgresql, two nodes on one document")
        samples = []
        for _ in range(runs):
            with postgres_database() as url:
                samples.append(store_latency(url, count, nodes=2))
        results["store"]["postgresql-two-nodes"] = summary(samples)
    results["meta"]["load_average_after"] = os.getloadavg()[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.output}")
    print(f"\ncommit latency, {results['meta']['date']}, {results['meta']['machine']['cpu']}")
    for section in ("commit", "store"):
        for key, r in results[section].items():
            print(f"{section:<8}{key:<28}p50 {r['p50_ms']:>8.3f} ms   p99 {r['p99_ms']:>8.3f} ms")


if __name__ == "__main__":
    main()
