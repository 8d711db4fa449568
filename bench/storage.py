#!/usr/bin/env python3
"""Storage benchmarks (issue 3): cold load before and after compaction, size per document,
and server memory while a client visits many documents in turn.

Cold load is what opening a document costs the server: read its rows from SQLite
(``SQLiteLog.load``) and replay them into a pycrdt doc. Documents are made from the
``automerge-paper`` editing trace, one stored update per trace transaction (a keystroke):
the first 10,000, and all 259,778. Each is timed with three replay strategies:

* ``replay``: ``collab.updates.doc_from``, 64 updates merged per ``apply_update``;
* ``merge_all``: ``merge_updates(*all)`` then one apply, as ``collab.rooms.build_doc`` does
  today (only for the 10k document by default; the full trace takes about 10 minutes, pass
  ``--merge-all-full`` to time it anyway);

then after ``compact_doc`` (history kept, as within the retention window) and after the
history is pruned (past the window). Medians of ``--runs`` (3) fresh opens; the file is
in the OS page cache (warm disk, cold process state).

The memory test starts ``python -m collab serve --idle-unload 1`` and has one pycrdt client
(``collab.client.Client``) open N documents one after another, type into each, wait for
the durability ack and leave; the server's RSS is sampled as it goes.

Example::

    .venv/bin/python bench/storage.py                 # everything (~4 min on 2 cores)
    .venv/bin/python bench/storage.py --quick         # 2k-keystroke docs, 200 visits

Writes bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from pycrdt import Doc, Text, merge_updates  # noqa: E402

from bench.machine import machine as bench_machine  # noqa: E402
from collab.storage.sqlite import (  # noqa: E402
    SQLiteLog,
    append_updates,
    compact_doc,
    connect,
)
from collab.updates import doc_from  # noqa: E402

TRACE = REPO / "bench" / "traces" / "automerge-paper.json.gz"
RESULTS = BENCH / "results" / "storage.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trace_updates(limit: int | None) -> tuple[list[bytes], str]:
    """One Yjs update per trace transaction (what a client sends for it), and the text."""
    data = json.loads(gzip.open(TRACE).read())
    txns = data["txns"][:limit] if limit else data["txns"]
    ascii_only = all(patch[2].isascii() for txn in txns for patch in txn["patches"])
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    mirror = ""
    updates: list[bytes] = []
    # A transaction's own update, as a client sends it (``doc.get_update(state)`` would
    # also repeat the document's whole delete set every time).
    subscription = doc.observe(lambda event: updates.append(event.update))
    for txn in txns:
        with doc.transaction():
            for position, delete, insert in txn["patches"]:
                if not ascii_only:  # pycrdt indexes Text by UTF-8 bytes, the trace by code points
                    start = len(mirror[:position].encode())
                    end = len(mirror[: position + delete].encode())
                    mirror = mirror[:position] + insert + mirror[position + delete :]
                    position, delete = start, end - start
                if delete:
                    del text[position : position + delete]
                if insert:
                    text.insert(position, insert)
    doc.unobserve(subscription)
    result = str(text)
    if not limit:
        assert result == data["endContent"], "the trace replay does not reproduce endContent"
    return updates, result


def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def db_bytes(path: Path) -> tuple[int, int]:
    """The database file after a full WAL checkpoint, and the part of it in use (free pages
    left by deleted rows are reused by later writes, or returned by VACUUM)."""
    db = connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    db.close()
    return path.stat().st_size, (pages - free) * page_size


def table_bytes(path: Path) -> dict[str, int]:
    db = connect(path)
    sizes = {
        table: int(db.execute(f"SELECT coalesce(sum(length(data)), 0) FROM {table}").fetchone()[0])
        for table in ("updates", "history", "checkpoints")
    }
    sizes["rows"] = int(db.execute("SELECT count(*) FROM updates").fetchone()[0])
    db.close()
    return sizes


def cold_load(path: Path, room: str, replay: str) -> str:
    """Open the log, load the room, replay it: what a server does on first connect."""

    async def load() -> list[bytes]:
        async with SQLiteLog(path, commit_delay=0) as store:
            return (await store.load(room)).updates

    updates = anyio.run(load)
    if replay == "replay":
        doc = doc_from(updates)
    else:
        doc = Doc()
        doc.apply_update(updates[0] if len(updates) == 1 else merge_updates(*updates))
    return str(doc.get("content", type=Text))


def bench_document(
    name: str, updates: list[bytes], expected: str, work: Path, runs: int, merge_all: bool
) -> dict[str, Any]:
    path = work / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = connect(path)
    start = time.time() - len(updates) * 0.2  # as if typed at 5 keys a second, ending now
    batch = 1000
    for i in range(0, len(updates), batch):
        append_updates(
            db,
            [(name, u, start + (i + j) * 0.2, None) for j, u in enumerate(updates[i : i + batch])],
        )
    db.close()
    result: dict[str, Any] = {
        "updates": len(updates),
        "update_bytes": sum(map(len, updates)),
        "text_chars": len(expected),
    }

    def timed(stage: str, strategies: list[str]) -> None:
        for strategy in strategies:
            assert cold_load(path, name, strategy) == expected
            seconds = median_time(functools.partial(cold_load, path, name, strategy), runs)
            result[f"load_{stage}_{strategy}_s"] = round(seconds, 4)
            log(f"  {name}: cold load {stage:<16} {strategy:<9} {seconds * 1000:9.1f} ms")
        result[f"db_bytes_{stage}"], result[f"db_used_bytes_{stage}"] = db_bytes(path)
        result[f"tables_{stage}"] = table_bytes(path)
        log(
            f"  {name}: database {stage:<16} {result[f'db_bytes_{stage}'] / 1e6:9.2f} MB file,"
            f" {result[f'db_used_bytes_{stage}'] / 1e6:.2f} MB used {result[f'tables_{stage}']}"
        )

    timed("uncompacted", ["replay", "merge_all"] if merge_all else ["replay"])
    db = connect(path)
    started = time.perf_counter()
    compact_doc(db, name, retention=7 * 86400)
    result["compact_s"] = round(time.perf_counter() - started, 3)
    log(f"  {name}: compaction {result['compact_s']:.2f} s")
    db.close()
    timed("compacted", ["replay", "merge_all"])
    db = connect(path)
    compact_doc(db, name, retention=0)  # as it is once the retention window has passed
    db.execute("VACUUM")
    db.close()
    timed("history_pruned", ["replay"])
    return result


# -- memory: a real server, one client visiting documents in turn ------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def bench_memory(
    visits: int, work: Path, idle_unload: float, clients_per_doc: int = 3
) -> dict[str, Any]:
    from collab.client import Client

    port = free_port()
    db_path = work / "memory.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    server_log = (work / "memory-server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db_path),
            "--idle-unload",
            str(idle_unload),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("collab serve did not start") from None
                time.sleep(0.05)
        samples: list[tuple[int, float, int]] = []

        async def visit_all() -> None:
            started = time.perf_counter()
            for i in range(visits):
                url = f"ws://127.0.0.1:{port}/visit-{i}"
                async with AsyncExitStack() as stack:
                    client = await stack.enter_async_context(Client(url, ack=True))
                    others = [
                        await stack.enter_async_context(Client(url))
                        for _ in range(clients_per_doc - 1)
                    ]
                    await client.synced()
                    text = client.doc.get("content", type=Text)
                    text += f"document {i}: " + "lorem ipsum dolor sit amet " * 20
                    await client.wait_durable()
                    for other in others:
                        await other.wait_for(
                            lambda o=other: len(o.doc.get("content", type=Text)) > 0
                        )
                if i % max(visits // 20, 1) == 0 or i == visits - 1:
                    samples.append(
                        (i + 1, round(time.perf_counter() - started, 2), rss_kib(proc.pid))
                    )
                    rss = samples[-1][2] / 1024
                    log(f"  memory: {i + 1:6d} documents visited, server RSS {rss:7.1f} MiB")
            # Let the idle rooms unload, and hypercorn's per-connection ping tasks (which
            # sleep one --ping-interval, 20 s, after their connection closed) end; then
            # sample once more.
            await anyio.sleep(max(idle_unload * 2 + 3.5, 25))
            samples.append((visits, round(time.perf_counter() - started, 2), rss_kib(proc.pid)))
            log(f"  memory: after idle unload, server RSS {samples[-1][2] / 1024:7.1f} MiB")

        anyio.run(visit_all)
    finally:
        proc.terminate()
        proc.wait(30)
        server_log.close()
    warm = samples[min(2, len(samples) - 1)]
    peak = max(s[2] for s in samples)
    return {
        "visits": visits,
        "clients_per_doc": clients_per_doc,
        "idle_unload_s": idle_unload,
        "samples": [{"visited": v, "seconds": t, "rss_kib": r} for v, t, r in samples],
        "rss_warm_kib": warm[2],
        "rss_peak_kib": peak,
        "rss_end_kib": samples[-1][2],
        "growth_after_warmup_kib": peak - warm[2],
        "visits_per_s": round(visits / samples[-2][1], 1) if len(samples) > 1 else None,
    }


def machine() -> dict[str, Any]:
    return {**bench_machine(), "sqlite": __import__("sqlite3").sqlite_version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="Timed opens per case (median).")
    parser.add_argument("--quick", action="store_true", help="Small documents, 200 visits.")
    parser.add_argument("--visits", type=int, default=None, help="Documents the client visits.")
    parser.add_argument("--idle-unload", type=float, default=1.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--clients-per-doc", type=int, default=3, help="Connections open on each visited document."
    )
    parser.add_argument("--skip-documents", action="store_true", help="Only the memory test.")
    parser.add_argument(
        "--merge-all-full",
        action="store_true",
        help="Also time merge_updates(*all) on the full trace (~10 min).",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="Where the databases go.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="collab-bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    small, full = (2_000, 20_000) if args.quick else (10_000, None)
    visits = args.visits or (200 if args.quick else 2000)
    started = time.time()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "runs": args.runs,
            "machine": machine(),
            "trace": str(TRACE.name),
        },
        "documents": {},
    }
    try:
        documents = [
            (f"keystrokes-{small}", small),
            ("automerge-paper" if full is None else f"keystrokes-{full}", full),
        ]
        for label, limit in [] if args.skip_documents else documents:
            log(f"{label}: building updates from the trace")
            t0 = time.perf_counter()
            updates, expected = trace_updates(limit)
            log(
                f"  {len(updates)} updates, {sum(map(len, updates)) / 1e6:.1f} MB,"
                f" built in {time.perf_counter() - t0:.1f} s"
            )
            merge_all = limit is not None and limit <= 20_000 or args.merge_all_full
            results["documents"][label] = bench_document(
                label, updates, expected, work, args.runs, merge_all
            )
        if not args.skip_memory:
            log(
                f"memory: {args.clients_per_doc} clients visit {visits} documents in turn"
                f" (--idle-unload {args.idle_unload})"
            )
            results["memory"] = bench_memory(visits, work, args.idle_unload, args.clients_per_doc)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["meta"]["duration_s"] = round(time.time() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.output}")
    print_summary(results)


def print_summary(results: dict[str, Any]) -> None:
    print(
        f"\nstorage benchmark, {results['meta']['date']}, {results['meta']['machine']['cpu']}"
        f" x{results['meta']['machine']['cores']}"
    )
    print(
        f"{'document':<22}{'stage':<16}{'load (replay)':>15}{'load (merge all)':>18}"
        f"{'db used':>12}{'db file':>12}"
    )
    for name, r in results["documents"].items():
        for stage in ("uncompacted", "compacted", "history_pruned"):
            replay = r.get(f"load_{stage}_replay_s")
            merge = r.get(f"load_{stage}_merge_all_s")
            print(
                f"{name:<22}{stage:<16}"
                f"{'' if replay is None else f'{replay * 1000:.1f} ms':>15}"
                f"{'' if merge is None else f'{merge * 1000:.1f} ms':>18}"
                f"{r[f'db_used_bytes_{stage}'] / 1e6:>9.2f} MB"
                f"{r[f'db_bytes_{stage}'] / 1e6:>9.2f} MB"
            )
    memory = results.get("memory")
    if memory:
        print(
            f"memory: {memory['visits']} documents visited in turn: RSS warm"
            f" {memory['rss_warm_kib'] / 1024:.1f} MiB,"
            f" peak {memory['rss_peak_kib'] / 1024:.1f} MiB,"
            f" end {memory['rss_end_kib'] / 1024:.1f} MiB"
        )


if __name__ == "__main__":
    main()
