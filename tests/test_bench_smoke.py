"""Smoke runs of the benchmark suite (bench/run.py) at tiny sizes, so that it cannot rot.

Speed is not asserted here: only that every scenario runs against collab (and the echo app),
that the driver saw no errors and missed no update, and that the JSON has the expected keys.
Needs only bench/driver's node_modules (installed here if missing), not the peer servers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
TRACE = REPO / "bench" / "traces" / "automerge-paper.json.gz"


@pytest.fixture(scope="module")
def driver_installed() -> None:
    lock = BENCH / "driver" / "package-lock.json"
    installed = BENCH / "driver" / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install bench/driver"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=BENCH / "driver",
            check=True,
            timeout=300,
        )
    assert TRACE.exists(), f"the editing traces are missing: {TRACE}"


def run_bench(tmp_path: Path, targets: str, scenario: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--runs", "1"]
    cmd += ["--targets", targets, "--scenarios", scenario]
    cmd += ["--out", str(out), "--work-dir", str(tmp_path / "work")]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=100)
    assert p.returncode == 0, f"bench/run.py failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["errors"] == []
    assert {"meta", "summary", "results", "errors", "warnings"} <= result.keys()
    assert {"date", "command", "machine", "versions", "sizes"} <= result["meta"].keys()
    return result


def only_run(result: dict[str, Any], target: str, key: str) -> dict[str, Any]:
    entry = result["results"][target][key]
    assert len(entry["runs"]) == 1
    run: dict[str, Any] = entry["runs"][0]
    assert run["errors"] == []
    assert entry["median"] is not None
    return run


def test_fanout_delivers_every_insert(tmp_path: Path, driver_installed: None) -> None:
    result = run_bench(tmp_path, "collab", "fanout")
    for n in result["meta"]["sizes"]["fanout_clients"]:
        run = only_run(result, "collab", f"fanout-{n}")
        assert run["missed"] == 0
        assert run["deliveries"] == run["inserts"] * (n - 1) > 0
        assert {"p50", "p99", "max"} <= run["latency_ms"].keys()
    assert result["summary"]["collab"]["fanout_4_p99_ms"] is not None


def test_throughput_runs_against_collab_under_both_servers_and_the_echo_app(
    tmp_path: Path, driver_installed: None
) -> None:
    result = run_bench(tmp_path, "collab,collab-hypercorn,echo-hypercorn", "throughput")
    for target in ("collab", "collab-hypercorn", "echo-hypercorn"):
        run = only_run(result, target, "throughput")
        assert run["missed"] == 0
        assert run["deliveries"] > 0
        assert run["deliveries_per_server_cpu_s"] is not None
        assert result["summary"][target]["deliveries_per_cpu_s"] is not None


def test_idle_connections_report_rss_and_connect_time(
    tmp_path: Path, driver_installed: None
) -> None:
    result = run_bench(tmp_path, "collab", "idle")
    run = only_run(result, "collab", "idle")
    assert run["clients"] == result["meta"]["sizes"]["idle_clients"]
    assert run["connect_all_s"] > 0
    assert run["rss_after_kib"] > 0


def test_cold_load_reads_back_what_was_stored(tmp_path: Path, driver_installed: None) -> None:
    result = run_bench(tmp_path, "collab", "coldload")
    cold = result["results"]["collab"]["coldload"]
    assert all("na" not in doc for doc in cold["docs"])
    for doc in cold["before"]["median"]["docs"].values():
        assert doc["ok"] is True
        assert doc["load_ms"] is not None
    # After compaction: measured once `collab docs compact` exists, else a reason.
    after = cold["after"]
    assert "na" in after or all(d["ok"] for d in after["median"]["docs"].values())


def test_trace_replay_ends_at_the_trace_text(tmp_path: Path, driver_installed: None) -> None:
    result = run_bench(tmp_path, "collab", "replay")
    run = only_run(result, "collab", "replay")
    assert run["complete"] is True
    assert run["ops_done"] == run["ops"]
    assert run["stored_bytes"] > 0


def test_the_cursor_storm_delivers_every_move_and_every_insert(
    tmp_path: Path, driver_installed: None
) -> None:
    result = run_bench(tmp_path, "collab", "cursors")
    run = only_run(result, "collab", "cursors")
    sizes = result["meta"]["sizes"]
    assert run["clients"] == sizes["cursor_clients"]
    assert run["moves"] > 0
    # every move reached every peer, itself or superseded by a later one
    assert run["awareness_deliveries"] == run["moves"] * (run["clients"] - 1)
    assert run["missed"] == 0 and run["text_deliveries"] > 0
    assert result["summary"]["collab"]["cursor_awareness_per_cpu_s"] is not None


def test_many_rooms_deliver_every_insert(tmp_path: Path, driver_installed: None) -> None:
    result = run_bench(tmp_path, "collab", "many_rooms")
    run = only_run(result, "collab", "many_rooms")
    assert run["rooms"] == result["meta"]["sizes"]["many_rooms"]
    assert run["missed"] == 0
    assert run["deliveries"] == run["expected_deliveries"] > 0
    assert result["summary"]["collab"]["many_rss_mib"] > 0


def test_large_documents_load_whole(tmp_path: Path, driver_installed: None) -> None:
    result = run_bench(tmp_path, "collab", "large_docs")
    run = only_run(result, "collab", "large_docs")
    sizes = result["meta"]["sizes"]
    assert run["copies"] == sizes["large_copies"]
    assert run["doc_bytes"] >= sizes["large_doc_bytes"]
    assert run["paper_load_ms"] is not None  # the driver checks the text it loaded
    assert run["copy_load_ms"]["n"] == sizes["large_copies"]


def test_the_secure_target_serves_clients_with_tokens(
    tmp_path: Path, driver_installed: None
) -> None:
    result = run_bench(tmp_path, "collab-secure", "throughput")
    run = only_run(result, "collab-secure", "throughput")
    assert run["missed"] == 0 and run["deliveries"] > 0
