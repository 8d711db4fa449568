"""Fan-out latency through the bus vs within one node (a single-machine simulation).

Starts two ``collab serve`` nodes on one SQLite file and one bus, a writer connected to
node A, one reader on node A and one on node B. The writer inserts a marker, waits until
both readers have it, and repeats (``--edits`` times, one at a time, so nothing queues);
each reader's delay is from the insert to the moment its client applied it. Prints, per
bus, the median of each run's median and p99, for the reader on the same node and the one
across the bus. Everything runs on this machine over loopback: the bus hop is a loopback
round trip through the broker, not a network.

    .venv/bin/python bench/bus.py --buses redis,nats --runs 3 --edits 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from pycrdt import Text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab.client import Client  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

URLS = {"redis": "redis://127.0.0.1:6379/0", "nats": "nats://127.0.0.1:4222"}


async def measure(url: str, edits: int) -> tuple[list[float], list[float]]:
    """Delays (seconds) to the reader on the writer's node, and to the one across."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        nodes = [
            ServerProcess(
                Path(tmp) / "collab.db",
                Path(tmp) / f"node{i}.log",
                "--bus",
                url,
                "--bus-prefix",
                prefix,
                "--log-level",
                "warning",
            )
            for i in range(2)
        ]
        try:
            for node in nodes:
                node.start()
            room = nodes[0].url("bench"), nodes[1].url("bench")
            async with (
                Client(room[0]) as writer,
                Client(room[0]) as near,
                Client(room[1]) as far,
            ):
                for client in (writer, near, far):
                    await client.synced()
                text = writer.doc.get("content", type=Text)
                near_text = near.doc.get("content", type=Text)
                far_text = far.doc.get("content", type=Text)
                delays: dict[str, list[float]] = {"near": [], "far": []}
                for i in range(edits):
                    marker = f"<{i}>"
                    arrived: dict[str, float] = {}

                    async def watch(
                        name: str,
                        client: Client,
                        reader: Text,
                        marker: str = marker,
                        arrived: dict[str, float] = arrived,
                    ) -> None:
                        await client.wait_for(lambda: marker in str(reader), timeout=10)
                        arrived[name] = time.perf_counter()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(watch, "near", near, near_text)
                        tg.start_soon(watch, "far", far, far_text)
                        await anyio.sleep(0)  # both watching before the edit
                        started = time.perf_counter()
                        text += marker
                    for name in delays:
                        delays[name].append(arrived[name] - started)
            return delays["near"], delays["far"]
        finally:
            for node in nodes:
                node.close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buses", default="redis,nats", help="comma-separated: redis, nats")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--edits", type=int, default=200)
    args = parser.parse_args()
    print("fan-out delay, single-machine simulation (loopback; nodes, broker and clients")
    print(f"share this machine); median over {args.runs} runs of {args.edits} edits each")
    print(f"{'bus':<6} {'reader':<16} {'median ms':>10} {'p99 ms':>8}")
    for bus in args.buses.split(","):
        runs = [anyio.run(measure, URLS[bus], args.edits) for _ in range(args.runs)]
        for label, index in (("same node", 0), ("across the bus", 1)):
            medians = [statistics.median(run[index]) for run in runs]
            tails = [p99(run[index]) for run in runs]
            print(
                f"{bus:<6} {label:<16} {statistics.median(medians) * 1000:>10.2f}"
                f" {statistics.median(tails) * 1000:>8.2f}"
            )


if __name__ == "__main__":
    main()
