"""What liveness detection costs: server CPU with idle connections at two ping intervals.

Starts ``collab serve`` with ``--ping-interval`` A, then B (interleaved, ``--runs`` each),
opens ``--clients`` idle connections from a child process (the websockets library, which
answers every ping), and measures the server's CPU time over ``--seconds``. Prints CPU%
per 1,000 idle connections for each interval, medians, and their ratio.

    .venv/bin/python bench/liveness.py --clients 1000 --seconds 20 --intervals 3,20
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENTS = r"""
import asyncio, sys
from websockets.asyncio.client import connect
async def main(url, n):
    conns = [await connect(url + f"/idle{i % 50}", max_queue=None) for i in range(n)]
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(interval: float, clients: int, seconds: float, server: str) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collab",
                "serve",
                "--port",
                str(port),
                "--db",
                f"{tmp}/c.db",
                "--ping-interval",
                str(interval),
                "--server",
                server,
                "--log-level",
                "warning",
            ],
            cwd=REPO,
        )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            child = subprocess.Popen(
                [sys.executable, "-c", CLIENTS, f"ws://127.0.0.1:{port}", str(clients)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
                time.sleep(1)
                before = cpu_seconds(proc.pid)
                time.sleep(seconds)
                used = cpu_seconds(proc.pid) - before
            finally:
                child.kill()
                child.wait()
        finally:
            proc.terminate()
            proc.wait(30)
    return 100 * used / seconds * 1000 / clients


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--intervals", default="3,20")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", default="hypercorn")
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",")]
    results: dict[float, list[float]] = {i: [] for i in intervals}
    for run in range(args.runs):
        for interval in intervals:
            pct = measure(interval, args.clients, args.seconds, args.server)
            results[interval].append(pct)
            print(f"run {run + 1}: ping every {interval:g} s: {pct:.2f}% CPU per 1,000 idle")
    print(f"\n{args.server}, {args.clients} idle connections, medians of {args.runs}:")
    for interval, values in results.items():
        print(f"  ping every {interval:g} s: {statistics.median(values):.2f}% of a core per 1,000")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
