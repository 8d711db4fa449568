"""OT (collab.ot_server) against the CRDT (pycrdt) on the same sessions and editing traces.

Usage, from the repository root::

    .venv/bin/python bench/ot_vs_crdt.py            # everything: about 3 minutes on 2 cores
    .venv/bin/python bench/ot_vs_crdt.py --quick    # a smoke run: small sizes, one run each

Prints three tables and writes them to ``bench/results/ot_vs_crdt.json``:

1. the real editing traces (``bench/traces``, CC BY 4.0, Joseph Gentle's editing-traces):
   ``automerge-paper`` sequentially through one client and the server, and the two-author
   ``clownschool`` and ``friendsforever`` through one client per author;
2. generated sessions of growing length (3 clients, random edits and deliveries);
3. one client offline while the others make more and more edits: the cost of reconnecting.

Times are medians of ``--runs`` runs (default 3); sizes do not vary between runs. Both
systems run in this process, in Python: OT is pure Python, the CRDT is Rust (yrs) behind
pycrdt, so absolute times say more about that than about the algorithms; growth with
session length and offline time is the interesting part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pycrdt  # noqa: E402

from bench.editing_sessions import (  # noqa: E402
    CRDTNetwork,
    Network,
    OTNetwork,
    Reconnect,
    ReplayResult,
    Stats,
    generate_session,
    load_trace,
    offline_session,
    play,
    replay,
    run_session,
)
from bench.machine import machine as bench_machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ot_vs_crdt.json"
SYSTEMS: dict[str, Callable[[int, str], Network]] = {
    "OT": lambda clients, initial: OTNetwork(clients, initial),
    "CRDT": lambda clients, initial: CRDTNetwork(clients, initial),
}


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **bench_machine(),
        "pycrdt": pycrdt.__version__,
        "load_average_1m": os.getloadavg()[0],
    }


def median_run(runs: int, once: Callable[[], tuple[float, Any]]) -> tuple[float, Any]:
    """Run ``once`` ``runs`` times; the median time and the last result."""
    times, result = [], None
    for _ in range(runs):
        seconds, result = once()
        times.append(seconds)
    return statistics.median(times), result


def kb(n: int) -> str:
    return f"{n / 1024:,.0f}" if n >= 10 * 1024 else f"{n / 1024:,.1f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in pairs]
        print("| " + " | ".join(cells) + " |")


def bench_traces(runs: int, quick: bool) -> list[dict[str, Any]]:
    out = []
    for name in ["automerge-paper", "clownschool", "friendsforever"]:
        trace = load_trace(name)
        if quick and not trace.concurrent:
            trace = trace.prefix(20_000)
        for system in ["OT", "CRDT"]:

            def once(trace: Any = trace, system: str = system) -> tuple[float, ReplayResult]:
                result = replay(trace, system)
                return result.stats.seconds, result

            seconds, result = median_run(runs, once)
            reached = all(t == trace.end for t in result.texts) if trace.end else None
            if reached is False:
                raise SystemExit(f"{name} through {system} did not reach endContent")
            out.append(
                {
                    "trace": name,
                    "txns": len(trace.txns),
                    "system": system,
                    "seconds": seconds,
                    "ops_per_second": len(trace.txns) / seconds,
                    "reached_end_content": reached,
                    **_sizes(result.stats),
                }
            )
    return out


def _sizes(stats: Stats) -> dict[str, int]:
    return {
        "messages": stats.messages,
        "wire_bytes": stats.wire_bytes,
        "server_state_bytes": stats.server_state_bytes,
        "server_log_bytes": stats.server_log_bytes,
        "transforms": stats.transforms,
    }


def bench_session_length(runs: int, quick: bool) -> list[dict[str, Any]]:
    out = []
    for edits in [100, 1000] if quick else [100, 1000, 10_000]:
        session = generate_session(1, clients=3, edits=edits, offline_chance=0.02)
        for system, make in SYSTEMS.items():

            def once(session: Any = session, make: Any = make) -> tuple[float, Any]:
                result = run_session(session, make(session.clients, session.initial))
                assert result.converged
                return result.stats.seconds, result

            seconds, result = median_run(runs, once)
            out.append(
                {
                    "edits": edits,
                    "system": system,
                    "seconds": seconds,
                    "ops_per_second": edits / seconds,
                    "text_chars": len(result.server_text),
                    **_sizes(result.stats),
                }
            )
    return out


def bench_offline(runs: int, quick: bool) -> list[dict[str, Any]]:
    """Time and bytes of the reconnect alone: play up to the last step, then time it."""
    out = []
    grid = [(100, 20), (1000, 20)]
    if not quick:
        grid = [(100, 20), (1000, 0), (1000, 20), (1000, 500), (10_000, 20)]
    for missed, offline in grid:
        session = offline_session(1, missed=missed, offline=offline)
        assert isinstance(session.steps[-1], Reconnect)
        for system, make in SYSTEMS.items():

            def once(session: Any = session, make: Any = make) -> tuple[float, Any]:
                network = make(session.clients, session.initial)
                for step in session.steps[:-1]:
                    play(network, step)
                network.measure_server()
                before = dict(_sizes(network.stats))
                started = network.stats.seconds
                play(network, session.steps[-1])
                network.settle()
                seconds = network.stats.seconds - started
                network.measure_server()
                texts = network.texts()
                assert all(t == network.server_text() for t in texts)
                after = _sizes(network.stats)
                return seconds, {k: after[k] - before[k] for k in ("wire_bytes", "transforms")}

            seconds, delta = median_run(runs, once)
            out.append(
                {
                    "missed_edits": missed,
                    "offline_edits": offline,
                    "system": system,
                    "reconnect_seconds": seconds,
                    "reconnect_wire_bytes": delta["wire_bytes"],
                    "reconnect_transforms": delta["transforms"],
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs

    info = machine()
    print(f"OT vs CRDT, {info['date']}, {info['cpu']}, {info['cores']} cores, ", end="")
    print(f"Python {info['python']}, pycrdt {info['pycrdt']}, median of {runs} run(s), ", end="")
    print(f"load average {info['load_average_1m']:.1f} at start")

    traces = bench_traces(runs, args.quick)
    print_table(
        "Editing traces (time to integrate every transaction at the clients and the server)",
        ["trace", "system", "txns", "time s", "ops/s", "wire KB", "state KB", "log KB", "transf."],
        [
            [
                r["trace"],
                r["system"],
                f"{r['txns']:,}",
                f"{r['seconds']:.2f}",
                f"{r['ops_per_second']:,.0f}",
                kb(r["wire_bytes"]),
                kb(r["server_state_bytes"]),
                kb(r["server_log_bytes"]),
                f"{r['transforms']:,}",
            ]
            for r in traces
        ],
    )
    sessions = bench_session_length(runs, args.quick)
    print_table(
        "Generated sessions: 3 clients, random edits and deliveries, 2% offline chance per edit",
        ["edits", "system", "time ms", "ops/s", "wire KB", "state KB", "log KB", "transforms"],
        [
            [
                f"{r['edits']:,}",
                r["system"],
                f"{r['seconds'] * 1000:,.1f}",
                f"{r['ops_per_second']:,.0f}",
                kb(r["wire_bytes"]),
                kb(r["server_state_bytes"]),
                kb(r["server_log_bytes"]),
                f"{r['transforms']:,}",
            ]
            for r in sessions
        ],
    )
    offline = bench_offline(runs, args.quick)
    print_table(
        "Reconnecting after being offline (client 0 offline; the others' edits it missed)",
        ["missed", "system", "offline edits", "reconnect ms", "wire KB", "transforms"],
        [
            [
                f"{r['missed_edits']:,}",
                r["system"],
                f"{r['offline_edits']:,}",
                f"{r['reconnect_seconds'] * 1000:,.1f}",
                kb(r["reconnect_wire_bytes"]),
                f"{r['reconnect_transforms']:,}",
            ]
            for r in offline
        ],
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    payload = {"machine": info, "runs": runs, "quick": args.quick}
    payload |= {"traces": traces, "sessions": sessions, "offline": offline}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
