"""A smoke run of bench/scaleout.py at a tiny size (it needs the Redis bus), so that it
cannot rot. Nothing about speed is asserted: only that it ran and printed its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.buses import shared_bus

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scaleout.py"


def test_the_scale_out_bench_prints_throughput_per_node_count_and_catch_up() -> None:
    shared_bus("redis")  # skipped without Redis, failed under CI=true
    args = ["--runs", "1", "--edits", "50", "--updates", "200", "--nodes", "1,2"]
    result = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    figures = re.findall(r"^  (\d) node\(s\): ([\d,]+)", result.stdout, re.M)
    assert [n for n, _ in figures] == ["1", "2"]
    assert all(int(value.replace(",", "")) > 0 for _, value in figures)
    assert re.search(r"catch-up of a restarted node, 200 updates: \d+ ms", result.stdout)
