#!/usr/bin/env python3
"""Benchmark collab against its peers, side by side (issue 4).

Starts each target server on 127.0.0.1, drives it with Yjs clients in Node (bench/driver),
runs every scenario ``--runs`` times, prints a table of medians and writes JSON.

Example::

    bench/setup                                  # once: npm ci, bench/.venv-peers
    .venv/bin/python bench/run.py                # everything, 3 runs (~1 h on 2 cores)
    .venv/bin/python bench/run.py --quick --targets collab,ywebsocket --scenarios throughput

Scenarios of round one: fanout (1; in round two also the room-size sweep, 2 to 256
clients), throughput (2), idle (3), coldload (4), replay (5); the echo-* targets only run
throughput, which is scenario 6 ("the limit"). Round two adds cursors (the cursor storm),
many_rooms and large_docs; docs/benchmarks.md explains each. Only the standard library is
used here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402
from targets import (  # noqa: E402
    BENCH,
    DRIVER_DIR,
    PEERS_PYTHON,
    REPO,
    TARGETS,
    ServerProcess,
    Target,
    dir_bytes,
    kill_all,
    main_python,
    proc_sample,
)

SCENARIOS = (
    "fanout",
    "throughput",
    "idle",
    "coldload",
    "replay",
    "cursors",
    "many_rooms",
    "large_docs",
)
DEFAULT_TRACE = REPO / "bench" / "traces" / "automerge-paper.json.gz"

FULL: dict[str, Any] = {
    "fanout_clients": [2, 8, 32, 64, 128, 256],
    "fanout_interval_ms": 10,
    "fanout_duration_ms": 5_000,
    "tp_rooms": 20,
    "tp_clients_per_room": 5,
    "tp_window": 8,
    "tp_duration_ms": 10_000,
    "idle_clients": 1000,
    "idle_rooms": 100,
    "idle_concurrency": 100,
    "cold_small_ops": 10_000,
    "cold_big_ops": None,  # the whole trace
    "replay_ops": None,
    "replay_window": 32,
    "replay_time_limit_s": 300,
    "build_time_limit_s": 900,
    # A store counts as done once its files have not changed for this long ...
    "settle_quiet_ms": 1500,
    # ... waiting at most this long after a replay, and after building a cold-load document.
    "replay_settle_timeout_s": 30,
    "build_settle_timeout_s": 120,
    "idle_settle_ms": 1500,
    "cursor_clients": 64,
    "cursor_typists": 4,
    "cursor_move_hz": 10,
    "cursor_type_hz": 10,
    "cursor_duration_ms": 10_000,
    "many_rooms": 1000,
    "many_clients_per_room": 2,
    "many_type_hz": 2,
    "many_duration_ms": 10_000,
    "large_doc_bytes": 1024 * 1024,
    "large_copies": 100,
}
QUICK: dict[str, Any] = {
    **FULL,
    "fanout_clients": [2, 4],
    "fanout_duration_ms": 1000,
    "tp_rooms": 2,
    "tp_clients_per_room": 3,
    "tp_duration_ms": 1000,
    "idle_clients": 20,
    "idle_rooms": 4,
    "cold_small_ops": 300,
    "cold_big_ops": 2000,
    "replay_ops": 2000,
    "replay_time_limit_s": 60,
    "build_time_limit_s": 60,
    "settle_quiet_ms": 400,
    "replay_settle_timeout_s": 10,
    "build_settle_timeout_s": 20,
    "idle_settle_ms": 300,
    "cursor_clients": 6,
    "cursor_typists": 2,
    "cursor_duration_ms": 1000,
    "many_rooms": 10,
    "many_duration_ms": 1000,
    "large_doc_bytes": 64 * 1024,
    "large_copies": 3,
}


#: Round two's scenarios: the driver's settings from the sizes, and the driver's time limit.
ROUND_TWO: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], float]]] = {
    "cursors": lambda s: (
        {
            "clients": s["cursor_clients"],
            "typists": s["cursor_typists"],
            "move_hz": s["cursor_move_hz"],
            "type_hz": s["cursor_type_hz"],
            "duration_ms": s["cursor_duration_ms"],
        },
        s["cursor_duration_ms"] / 1000 + 120,
    ),
    "many_rooms": lambda s: (
        {
            "rooms": s["many_rooms"],
            "clients_per_room": s["many_clients_per_room"],
            "type_hz": s["many_type_hz"],
            "duration_ms": s["many_duration_ms"],
        },
        s["many_duration_ms"] / 1000 + 180,
    ),
    "large_docs": lambda s: (
        {"doc_bytes": s["large_doc_bytes"], "copies": s["large_copies"]},
        600,
    ),
}


class Bench:
    def __init__(self, args: argparse.Namespace, targets: list[Target], sizes: dict[str, Any]):
        self.args = args
        self.targets = targets
        self.sizes = sizes
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.work = Path(args.work_dir or BENCH / ".work" / stamp)
        self.results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
        self.trace = str(args.trace)
        self.trace_ops = _trace_len(args.trace)

    # -- plumbing -------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def server(self, target: Target, data: Path) -> ServerProcess:
        return ServerProcess(target, data, self.work / "logs" / f"{target.name}.log")

    def drive(self, server: ServerProcess, cfg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Run the Node driver once; its JSON result (with an error entry if it failed)."""
        cfg = {
            "url": server.url,
            "protocol": server.target.protocol,
            "token": server.target.token,
            "server_pid": server.pid,
            "clk_tck": os.sysconf("SC_CLK_TCK"),
            "hard_timeout_ms": int(timeout_s * 1000),
            **cfg,
        }
        try:
            p = subprocess.run(
                ["node", str(DRIVER_DIR / "driver.mjs"), json.dumps(cfg)],
                cwd=DRIVER_DIR,
                capture_output=True,
                timeout=timeout_s + 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"errors": [f"driver did not finish within {timeout_s + 60:.0f} s"]}
        log = self.work / "logs" / "driver.log"
        with open(log, "ab") as f:
            f.write(f"--- {server.target.name} {cfg['scenario']}\n".encode() + p.stderr)
        lines = p.stdout.decode(errors="replace").strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = p.stderr.decode(errors="replace")[-2000:]
            return {"errors": [f"driver exited {p.returncode} without a result: {tail}"]}
        if server.proc is not None and server.proc.poll() is not None:
            result["errors"].append(
                f"server exited with {server.proc.returncode} during the scenario:\n"
                + server.log_tail(10)
            )
        for err in result.get("errors", []):
            self.log(f"  ERROR {server.target.name} {cfg['scenario']}: {err[:300]}")
        return result

    def add(self, target: Target, key: str, result: dict[str, Any]) -> None:
        self.results[target.name].setdefault(key, {"runs": []})["runs"].append(result)

    # -- scenarios ------------------------------------------------------------------------

    def run_scenario(self, target: Target, scenario: str, run: int) -> None:
        s = self.sizes
        data = self.work / target.name / f"{scenario}-r{run}"
        server = self.server(target, data).start()
        before = proc_sample(server.pid)
        common = {"room_prefix": f"r{run}-"}
        try:
            if scenario == "fanout":
                for n in s["fanout_clients"]:
                    self.log(f"{target.name}: fanout {n} clients (run {run})")
                    r = self.drive(
                        server,
                        {
                            **common,
                            "scenario": "fanout",
                            "clients": n,
                            "interval_ms": s["fanout_interval_ms"],
                            "duration_ms": s["fanout_duration_ms"],
                        },
                        timeout_s=s["fanout_duration_ms"] / 1000 + 120,
                    )
                    self.add(target, f"fanout-{n}", r)
                return
            self.log(f"{target.name}: {scenario} (run {run})")
            if scenario == "throughput":
                r = self.drive(
                    server,
                    {
                        **common,
                        "scenario": "throughput",
                        "rooms": s["tp_rooms"],
                        "clients_per_room": s["tp_clients_per_room"],
                        "window": s["tp_window"],
                        "duration_ms": s["tp_duration_ms"],
                    },
                    timeout_s=s["tp_duration_ms"] / 1000 + 120,
                )
                stats = server.stats()
                if stats is not None:
                    r["server_stats"] = stats
            elif scenario == "idle":
                r = self.drive(
                    server,
                    {
                        **common,
                        "scenario": "idle",
                        "clients": s["idle_clients"],
                        "rooms": s["idle_rooms"],
                        "concurrency": s["idle_concurrency"],
                        "settle_ms": s["idle_settle_ms"],
                    },
                    timeout_s=180,
                )
            elif scenario in ROUND_TWO:
                cfg, timeout_s = ROUND_TWO[scenario](s)
                r = self.drive(
                    server,
                    {**common, "scenario": scenario, "trace": self.trace, **cfg},
                    timeout_s=timeout_s,
                )
            elif scenario == "replay":
                ops = s["replay_ops"] or self.trace_ops
                r = self.drive(
                    server,
                    {
                        **common,
                        "scenario": "replay",
                        "trace": self.trace,
                        "ops": ops,
                        "window": s["replay_window"],
                        "time_limit_ms": s["replay_time_limit_s"] * 1000,
                        "data_dir": str(data) if target.persistent else None,
                        "settle_quiet_ms": s["settle_quiet_ms"],
                        "settle_timeout_ms": s["replay_settle_timeout_s"] * 1000,
                    },
                    timeout_s=s["replay_time_limit_s"] + s["replay_settle_timeout_s"] + 180,
                )
            else:
                raise ValueError(scenario)
            after = proc_sample(server.pid)
            r["server_cpu_s_scenario"] = round(after["cpu_s"] - before["cpu_s"], 3)
            r["server_rss_kib_before"] = before["rss_kib"]
            r["server_rss_kib_after"] = after["rss_kib"]
            r["server_ready_s"] = round(server.ready_s, 3)
            r["server_stop_s"] = round(server.stop(), 3)
            if scenario == "replay" and target.persistent:
                r["stored_bytes"] = dir_bytes(data)
            self.add(target, scenario, r)
        finally:
            server.stop()
            if not self.args.keep_data:
                shutil.rmtree(data, ignore_errors=True)

    def run_coldload(self, target: Target) -> None:
        """Build two documents through the server, then time fresh loads after restarts."""
        s = self.sizes
        data = self.work / target.name / "coldload"
        docs = [
            {"room": "cold-10k", "ops": min(s["cold_small_ops"], self.trace_ops)},
            {"room": "cold-paper", "ops": s["cold_big_ops"] or self.trace_ops},
        ]
        out: dict[str, Any] = {"docs": docs}
        self.log(f"{target.name}: coldload build ({docs[0]['ops']} + {docs[1]['ops']} ops)")
        server = self.server(target, data).start()
        try:
            build = self.drive(
                server,
                {
                    "scenario": "coldload_build",
                    "trace": self.trace,
                    "docs": docs,
                    "window": 64,
                    "data_dir": str(data),
                    "time_limit_ms": s["build_time_limit_s"] * 1000,
                    "settle_quiet_ms": s["settle_quiet_ms"],
                    "settle_timeout_ms": s["build_settle_timeout_s"] * 1000,
                },
                timeout_s=2 * (s["build_time_limit_s"] + s["build_settle_timeout_s"]) + 300,
            )
        finally:
            build_stop = server.stop()
        build["server_stop_s"] = round(build_stop, 3)
        build["stored_bytes"] = dir_bytes(data)
        out["build"] = build
        # Time only the documents the target managed to store; say why for the others.
        built = build.get("docs") or {}
        for doc in docs:
            b = built.get(doc["room"], {})
            if not b.get("complete") or not b.get("settled"):
                doc["na"] = "not built: " + (
                    "the replay did not finish"
                    if not b.get("complete")
                    else f"the store was still writing {b.get('store_settle_s')} s after the end"
                )
        docs = [d for d in docs if "na" not in d]
        if not docs:
            self.results[target.name]["coldload"] = out
            return
        try:
            out["before"] = {
                "runs": [self._coldload_measure(target, data, docs) for _ in range(self.args.runs)]
            }
            if target.compact is None:
                out["after"] = {"na": "no offline compaction for this target"}
            else:
                out["after"] = self._compact_and_measure(target, data, docs)
        finally:
            if not self.args.keep_data:
                shutil.rmtree(data, ignore_errors=True)
        self.results[target.name]["coldload"] = out

    def _coldload_measure(
        self, target: Target, data: Path, docs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        server = self.server(target, data).start()
        try:
            r = self.drive(
                server,
                {
                    "scenario": "coldload_measure",
                    "trace": self.trace,
                    "docs": docs,
                    "load_timeout_ms": 120_000,
                },
                timeout_s=400,
            )
            r["server_ready_s"] = round(server.ready_s, 3)
        finally:
            server.stop()
        return r

    def _compact_and_measure(
        self, target: Target, data: Path, docs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert target.compact is not None
        cmd = target.compact(data)
        self.log(f"{target.name}: compacting: {' '.join(cmd)}")
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=target.cwd, capture_output=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return {"na": "compaction did not finish within 900 s"}
        if p.returncode != 0:
            why = (p.stderr or p.stdout).decode(errors="replace").strip().splitlines()
            self.log(f"{target.name}: compaction unavailable: {why[-1] if why else p.returncode}")
            return {"na": f"compaction command failed ({p.returncode}): {why[-1] if why else ''}"}
        compact_s = time.monotonic() - t0
        return {
            "compact_s": round(compact_s, 3),
            "stored_bytes": dir_bytes(data),
            "runs": [self._coldload_measure(target, data, docs) for _ in range(self.args.runs)],
        }

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> None:
        # Runs are the outer loop, so that a noisy minute on a shared machine lands on one run
        # of every target rather than on all runs of one. Cold load is one block per target
        # (build once, restart `runs` times, compact, restart `runs` times).
        for run in range(1, self.args.runs + 1):
            for target in self.targets:
                for scenario in self.args.scenarios:
                    if scenario not in target.scenarios:
                        continue
                    if scenario == "coldload":
                        if target.persistent and run == 1:
                            self.run_coldload(target)
                        continue
                    try:
                        self.run_scenario(target, scenario, run)
                    except RuntimeError as exc:  # a server that would not start
                        self.log(f"ERROR {target.name} {scenario}: {exc}")
                        self.add(target, scenario, {"errors": [str(exc)]})


# -- aggregation ------------------------------------------------------------------------------


def median_of(runs: list[Any]) -> Any:
    """Element-wise median of a list of equally shaped JSON values (numbers median, rest first)."""
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    first = runs[0]
    if isinstance(first, bool) or first is None:
        return first if all(r == first for r in runs) else runs
    if isinstance(first, int | float):
        nums = [r for r in runs if isinstance(r, int | float) and not isinstance(r, bool)]
        m = statistics.median(nums)
        return round(m, 3) if isinstance(m, float) else m
    if isinstance(first, dict):
        return {
            k: median_of([r.get(k) for r in runs if isinstance(r, dict)])
            for k in first
            if k not in ("errors", "runs", "server_stats")
        }
    return first


def aggregate(results: dict[str, dict[str, Any]]) -> None:
    for per_target in results.values():
        for key, entry in per_target.items():
            if key == "coldload":
                for phase in ("before", "after"):
                    if "runs" in entry.get(phase, {}):
                        entry[phase]["median"] = median_of(entry[phase]["runs"])
                        entry[phase]["first"] = entry[phase]["runs"][0]
            elif "runs" in entry:
                # A run that aborted has no figures; the others still make a median.
                entry["median"] = median_of([r for r in entry["runs"] if not r.get("aborted")])


def all_errors(results: dict[str, dict[str, Any]], key: str = "errors") -> list[str]:
    """Every entry of every `key` list (errors, or warnings) in the results, with its place."""
    out = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for e in node.get(key, []) or []:
                out.append(f"{where}: {e}")
            for k, v in node.items():
                if k != key and k != "median" and k != "first":
                    walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(results, "")
    return out


def error_runs(node: Any) -> int:
    """How many driver runs under `node` reported at least one error."""
    if isinstance(node, dict):
        own = 1 if node.get("errors") else 0
        return own + sum(error_runs(v) for k, v in node.items() if k not in ("median", "first"))
    if isinstance(node, list):
        return sum(error_runs(v) for v in node)
    return 0


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)
        else:
            return None
    return d


def summarize(
    results: dict[str, dict[str, Any]], sizes: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The headline figures per target (what the table and the plot show)."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        tp = _get(r, "throughput", "median") or {}
        idle = _get(r, "idle", "median") or {}
        rep = _get(r, "replay", "median") or {}
        cold = r.get("coldload", {})
        s: dict[str, Any] = {
            "deliveries_per_cpu_s": tp.get("deliveries_per_server_cpu_s"),
            "deliveries_per_s": tp.get("deliveries_per_s"),
            "throughput_server_cpu_pct": tp.get("server_cpu_pct"),
            "throughput_p99_ms": _get(tp, "latency_ms", "p99"),
            "throughput_driver_cpu_pct": tp.get("driver_cpu_pct"),
            "throughput_other_cpu_pct": tp.get("other_cpu_pct"),
            "rss_per_idle_conn_kib": idle.get("rss_per_conn_kib"),
            "connect_1000_s": idle.get("connect_all_s"),
            "replay_s": rep.get("total_s"),
            "replay_complete": rep.get("complete"),
            "replay_ops_per_s": rep.get("ops_per_s"),
            "replay_server_cpu_s": rep.get("server_cpu_s"),
            "replay_stored_bytes": rep.get("stored_bytes"),
            "replay_store_settled": rep.get("store_settled"),
            "commit_p99_ms": _get(tp, "server_stats", "commit_latency_ms", "p99"),
        }
        commit = [
            _get(run, "server_stats", "commit_latency_ms", "p99")
            for run in _get(r, "throughput", "runs") or []
        ]
        commit = [c for c in commit if isinstance(c, int | float)]
        if commit:
            s["commit_p99_ms"] = statistics.median(commit)
        for n in sizes["fanout_clients"]:
            fan = _get(r, f"fanout-{n}", "median") or {}
            lat = fan.get("latency_ms") or {}
            s[f"fanout_{n}_p50_ms"] = lat.get("p50")
            s[f"fanout_{n}_p99_ms"] = lat.get("p99")
            s[f"fanout_{n}_max_ms"] = lat.get("max")
            s[f"fanout_{n}_deliveries_per_cpu_s"] = fan.get("deliveries_per_server_cpu_s")
        cur = _get(r, "cursors", "median") or {}
        s["cursor_awareness_per_cpu_s"] = cur.get("awareness_deliveries_per_server_cpu_s")
        s["cursor_awareness_p99_ms"] = _get(cur, "awareness_latency_ms", "p99")
        s["cursor_text_p99_ms"] = _get(cur, "text_latency_ms", "p99")
        s["cursor_frames_per_client_s"] = cur.get("frames_in_per_client_per_s")
        s["cursor_server_cpu_pct"] = cur.get("server_cpu_pct")
        many = _get(r, "many_rooms", "median") or {}
        s["many_server_cpu_pct"] = many.get("server_cpu_pct")
        s["many_p99_ms"] = _get(many, "latency_ms", "p99")
        s["many_rss_mib"] = (
            round(many["server_rss_kib"] / 1024, 1) if many.get("server_rss_kib") else None
        )
        large = _get(r, "large_docs", "median") or {}
        s["large_paper_rss_mib"] = _mib(large.get("rss_paper_kib"))
        s["large_paper_load_ms"] = large.get("paper_load_ms")
        s["large_copies_rss_mib"] = _mib(large.get("rss_copies_kib"))
        s["large_copy_load_p50_ms"] = _get(large, "copy_load_ms", "p50")
        s["large_copy_load_p99_ms"] = _get(large, "copy_load_ms", "p99")
        for doc in cold.get("docs", []):
            if "na" in doc:
                s[f"cold_{'10k' if doc['room'] == 'cold-10k' else 'paper'}_na"] = doc["na"]
        for phase in ("before", "after"):
            for room, short in (("cold-10k", "10k"), ("cold-paper", "paper")):
                s[f"cold_{short}_{phase}_ms"] = _get(cold, phase, "median", "docs", room, "load_ms")
                s[f"cold_{short}_{phase}_first_ms"] = _get(
                    cold, phase, "first", "docs", room, "load_ms"
                )
        s["errors"] = error_runs(r)
        s["warnings"] = len(all_errors({name: r}, "warnings"))
        s["missed"] = sum(
            (run.get("missed") or 0)
            for entry in r.values()
            if isinstance(entry, dict)
            for run in entry.get("runs", [])
            if isinstance(run, dict)
        )
        out[name] = s
    return out


def _mib(kib: Any) -> float | None:
    return round(kib / 1024, 1) if isinstance(kib, int | float) else None


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The comparisons the issue's targets are stated in (None where a side is missing)."""

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = _get(summary, a, key), _get(summary, b, key)
        return (
            round(x / y, 2)
            if isinstance(x, int | float) and isinstance(y, int | float) and y
            else None
        )

    return {
        "collab_vs_hocuspocus_sqlite_deliveries_per_cpu_s": ratio(
            "collab", "hocuspocus-sqlite", "deliveries_per_cpu_s"
        ),
        "collab_vs_pycrdt_websocket_sqlite_deliveries_per_cpu_s": ratio(
            "collab", "pycrdt-websocket-sqlite", "deliveries_per_cpu_s"
        ),
        "collab_vs_ywebsocket_fanout_64_p99": ratio("collab", "ywebsocket", "fanout_64_p99_ms"),
        "collab_vs_hocuspocus_sqlite_cursor_awareness_per_cpu_s": ratio(
            "collab", "hocuspocus-sqlite", "cursor_awareness_per_cpu_s"
        ),
        "collab_vs_hocuspocus_sqlite_many_rooms_cpu": ratio(
            "collab", "hocuspocus-sqlite", "many_server_cpu_pct"
        ),
        "collab_vs_hocuspocus_sqlite_many_rooms_rss": ratio(
            "collab", "hocuspocus-sqlite", "many_rss_mib"
        ),
        "collab_secure_vs_collab_deliveries_per_cpu_s": ratio(
            "collab-secure", "collab", "deliveries_per_cpu_s"
        ),
        "collab_vs_baseline_uvicorn_deliveries_per_cpu_s": ratio(
            "collab", "collab-baseline-uvicorn", "deliveries_per_cpu_s"
        ),
        "collab_hypercorn_vs_baseline_deliveries_per_cpu_s": ratio(
            "collab-hypercorn", "collab-baseline", "deliveries_per_cpu_s"
        ),
        "collab_vs_echo_hypercorn_deliveries_per_cpu_s": ratio(
            "collab", "echo-hypercorn", "deliveries_per_cpu_s"
        ),
        "echo_uvicorn_vs_hypercorn_deliveries_per_cpu_s": ratio(
            "echo-uvicorn", "echo-hypercorn", "deliveries_per_cpu_s"
        ),
        "echo_uvicorn_vs_hypercorn_deliveries_per_s": ratio(
            "echo-uvicorn", "echo-hypercorn", "deliveries_per_s"
        ),
    }


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def table(summary: dict[str, dict[str, Any]], sizes: dict[str, Any]) -> str:
    """The headline table as Markdown (readable as plain text too)."""
    # round one's figure: 64 clients (the sweep's other sizes are in scale_table)
    big = 64 if 64 in sizes["fanout_clients"] else max(sizes["fanout_clients"])
    cols = [
        ("target", None),
        ("deliveries / server CPU-s", lambda s: _fmt(s["deliveries_per_cpu_s"])),
        ("deliveries / s", lambda s: _fmt(s["deliveries_per_s"])),
        ("server CPU % (tp)", lambda s: _fmt(s["throughput_server_cpu_pct"], 0)),
        (
            f"fan-out p50 / p99, {big} clients (ms)",
            lambda s: (
                f"{_fmt(s[f'fanout_{big}_p50_ms'], 2)} / {_fmt(s[f'fanout_{big}_p99_ms'], 2)}"
            ),
        ),
        ("RSS per idle conn (KiB)", lambda s: _fmt(s["rss_per_idle_conn_kib"])),
        ("1,000 conns (s)", lambda s: _fmt(s["connect_1000_s"], 3)),
        ("cold load 10k (ms)", lambda s: _cold(s, "10k")),
        ("cold load paper (ms)", lambda s: _cold(s, "paper")),
        (
            "replay paper (s)",
            lambda s: (
                _fmt(s["replay_s"])
                + ("" if s["replay_complete"] in (True, None) else " (timed out)")
            ),
        ),
        ("replay server CPU (s)", lambda s: _fmt(s["replay_server_cpu_s"])),
        (
            "stored (MiB)",
            lambda s: (
                _fmt(s["replay_stored_bytes"] / 2**20 if s["replay_stored_bytes"] else None, 2)
                + (" (still writing)" if s["replay_store_settled"] is False else "")
            ),
        ),
        ("update→commit p99 (ms)", lambda s: _fmt(s["commit_p99_ms"])),
        (
            "driver / others' CPU % (tp)",
            lambda s: " / ".join(
                _fmt(s[k], 0) for k in ("throughput_driver_cpu_pct", "throughput_other_cpu_pct")
            ),
        ),
        ("missed / runs with errors", lambda s: f"{s['missed']} / {s['errors']}"),
    ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for name, s in summary.items():
        label = TARGETS[name].label if name in TARGETS else name
        lines.append("| " + " | ".join([label] + [f(s) for _, f in cols[1:]]) + " |")
    return "\n".join(lines)


def scale_table(summary: dict[str, dict[str, Any]], sizes: dict[str, Any]) -> str:
    """Round two's scenarios: the room-size sweep, the cursor storm, many rooms, large docs."""
    cols: list[tuple[str, Any]] = [("target", None)]
    for n in sizes["fanout_clients"]:
        cols.append(
            (
                f"{n} clients: p99 ms / deliveries per CPU-s",
                lambda s, n=n: (
                    f"{_fmt(s[f'fanout_{n}_p99_ms'], 2)} / "
                    f"{_fmt(s[f'fanout_{n}_deliveries_per_cpu_s'])}"
                ),
            )
        )
    cols += [
        ("cursors: awareness / CPU-s", lambda s: _fmt(s["cursor_awareness_per_cpu_s"])),
        (
            "cursors: p99 awareness / text (ms)",
            lambda s: (
                f"{_fmt(s['cursor_awareness_p99_ms'], 1)} / {_fmt(s['cursor_text_p99_ms'], 1)}"
            ),
        ),
        ("cursors: frames / client-s", lambda s: _fmt(s["cursor_frames_per_client_s"])),
        (
            "many rooms: CPU % / p99 ms / RSS MiB",
            lambda s: " / ".join(
                (
                    _fmt(s["many_server_cpu_pct"], 0),
                    _fmt(s["many_p99_ms"], 1),
                    _fmt(s["many_rss_mib"], 0),
                )
            ),
        ),
        (
            "paper doc: RSS MiB / load ms",
            lambda s: f"{_fmt(s['large_paper_rss_mib'])} / {_fmt(s['large_paper_load_ms'])}",
        ),
        (
            f"{sizes['large_copies']} × {sizes['large_doc_bytes'] // 1024} KiB docs:"
            " RSS MiB / load p50 ms",
            lambda s: f"{_fmt(s['large_copies_rss_mib'])} / {_fmt(s['large_copy_load_p50_ms'])}",
        ),
    ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for name, s in summary.items():
        label = TARGETS[name].label if name in TARGETS else name
        lines.append("| " + " | ".join([label] + [f(s) for _, f in cols[1:]]) + " |")
    return "\n".join(lines)


def _cold(s: dict[str, Any], short: str) -> str:
    before = s[f"cold_{short}_before_ms"]
    after = s[f"cold_{short}_after_ms"]
    if s.get(f"cold_{short}_na"):
        return "not stored in time"
    if before is None and after is None:
        return "—"
    text = _fmt(before)
    if after is not None:
        text += f" → {_fmt(after)} compacted"
    return text


# -- metadata -----------------------------------------------------------------------------


def _trace_len(path: Path) -> int:
    with gzip.open(path) as f:
        data = json.load(f)
    return sum(len(t["patches"]) for t in data["txns"])


def _version(cmd: list[str]) -> str | None:
    try:
        return (
            subprocess.run(
                cmd, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


def _npm_version(pkg_dir: Path) -> str | None:
    try:
        return str(json.loads((pkg_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def versions() -> dict[str, Any]:
    peers = BENCH / "peers" / "node_modules"
    driver = DRIVER_DIR / "node_modules"
    py_peers = None
    if PEERS_PYTHON.exists():
        py_peers = _version(
            [
                str(PEERS_PYTHON),
                "-c",
                "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in"
                " ['pycrdt-websocket', 'pycrdt', 'pycrdt-store', 'hypercorn', 'uvicorn',"
                " 'uvloop', 'granian']}))",
            ]
        )
    return {
        "collab": _version([main_python(), "-m", "collab", "--version"]),
        "collab_python": _json(
            _version(
                [
                    main_python(),
                    "-c",
                    "import importlib.metadata as m, json, sys; print(json.dumps("
                    "{'python': sys.version.split()[0], 'pycrdt': m.version('pycrdt'), "
                    "'hypercorn': m.version('hypercorn')}))",
                ]
            )
        ),
        "node": _version(["node", "--version"]),
        "@hocuspocus/server": _npm_version(peers / "@hocuspocus" / "server"),
        "@hocuspocus/extension-sqlite": _npm_version(peers / "@hocuspocus" / "extension-sqlite"),
        "@y/websocket-server": _npm_version(peers / "@y" / "websocket-server"),
        "y-leveldb": _npm_version(peers / "@y" / "websocket-server" / "node_modules" / "y-leveldb"),
        "peers_yjs": _npm_version(peers / "yjs"),
        "driver_yjs": _npm_version(driver / "yjs"),
        "driver_ws": _npm_version(driver / "ws"),
        "peers_python": _json(py_peers),
    }


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--targets",
        default=",".join(t for t in TARGETS if not t.startswith("collab-baseline")),
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: all)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)}, limit (= throughput on echo-*)",
    )
    p.add_argument(
        "--runs", type=int, default=3, help="runs of each scenario; the table shows medians"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds per scenario), for smoke tests"
    )
    p.add_argument(
        "--trace", type=Path, default=DEFAULT_TRACE, help="sequential editing trace (.json.gz)"
    )
    p.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="scratch space (default bench/.work/<time>)"
    )
    p.add_argument("--keep-data", action="store_true", help="keep databases and logs of the run")
    p.add_argument(
        "--replay-time-limit",
        type=float,
        default=None,
        help="seconds before a replay stops and reports what it did",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override one size, e.g. --set fanout_clients=[64] --set tp_duration_ms=5000",
    )
    args = p.parse_args(argv)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown targets: {', '.join(unknown)}")
    args.targets = names
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if "limit" in scen:
        scen = [s for s in scen if s != "limit"]
        if "throughput" not in scen:
            scen.append("throughput")
            # "limit" alone means the echo targets
            if args.targets == list(TARGETS):
                args.targets = [n for n in TARGETS if n.startswith("echo-")]
    bad = [s for s in scen if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenarios: {', '.join(bad)}")
    args.scenarios = [s for s in SCENARIOS if s in scen]
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = [TARGETS[n] for n in args.targets]
    problems = [f"{t.name}: missing {m}" for t in targets for m in t.missing()]
    if not (DRIVER_DIR / "node_modules").exists():
        problems.append(f"driver: missing {DRIVER_DIR / 'node_modules'}")
    if not args.trace.exists():
        problems.append(f"trace: missing {args.trace}")
    if problems:
        print(
            "bench/run.py: not installed yet; run bench/setup first:\n  " + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 2
    sizes = dict(QUICK if args.quick else FULL)
    if args.replay_time_limit is not None:
        sizes["replay_time_limit_s"] = args.replay_time_limit
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in sizes:
            print(f"bench/run.py: --set {key}: unknown; one of {', '.join(sizes)}", file=sys.stderr)
            return 2
        sizes[key] = json.loads(value)

    bench = Bench(args, targets, sizes)
    bench.work.mkdir(parents=True, exist_ok=True)
    (bench.work / "logs").mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    bench.log(
        f"targets: {', '.join(args.targets)}; scenarios: {', '.join(args.scenarios)}; "
        f"runs: {args.runs}{' (quick)' if args.quick else ''}; scratch: {bench.work}"
    )
    interrupted = False
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        bench.log("interrupted: stopping servers, writing what was measured")
    finally:
        kill_all()
    aggregate(bench.results)
    summary = summarize(bench.results, sizes)
    errors = all_errors(bench.results)
    warnings = all_errors(bench.results, "warnings")
    doc = {
        "meta": {
            "date": date,
            "duration_s": round(time.monotonic() - started, 1),
            "command": " ".join(
                [
                    "python",
                    os.path.relpath(__file__, REPO),
                    *(argv if argv is not None else sys.argv[1:]),
                ]
            ),
            "runs": args.runs,
            "quick": args.quick,
            "interrupted": interrupted,
            "targets": {
                t.name: {
                    "label": t.label,
                    "persistent": t.persistent,
                    "protocol": t.protocol,
                    "notes": t.notes,
                }
                for t in targets
            },
            "scenarios": args.scenarios,
            "sizes": sizes,
            "trace": {"path": os.path.relpath(args.trace, REPO), "ops": bench.trace_ops},
            "machine": machine(),
            "versions": versions(),
            "load_avg_end": os.getloadavg(),
        },
        "summary": summary,
        "ratios": ratios(summary),
        "results": bench.results,
        "errors": errors,
        "warnings": warnings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(args.out)
    if not args.keep_data:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(table(summary, sizes))
    print("\n" + scale_table(summary, sizes))
    known = {k: v for k, v in doc["ratios"].items() if v is not None}
    if known:
        print("\n" + "\n".join(f"{k}: {v}" for k, v in known.items()))
    print(f"\n{args.runs} run(s), medians; {doc['meta']['duration_s']:.0f} s; wrote {args.out}")
    if warnings:
        print(f"\n{len(warnings)} warning(s) (findings, not failures):", file=sys.stderr)
        for w in warnings[:40]:
            print("  " + w[:300], file=sys.stderr)
    if errors:
        print(f"\n{len(errors)} ERROR(S):", file=sys.stderr)
        for e in errors[:40]:
            print("  " + e[:500], file=sys.stderr)
        return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
