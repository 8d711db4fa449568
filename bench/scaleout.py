"""Several nodes on one bus (a single-machine simulation): what fan-out costs per node,
and what a restarted node's catch-up costs.

Throughput. ``--nodes`` 1, 2, 3 nodes on one SQLite file and the Redis bus; one document
with six readers spread round-robin over the nodes and two writers on the first node, each
writer typing ``--edits`` single characters in bursts of 10 with a yield between. The
figure is deliveries (one
update applied by one reader) per server CPU-second, summed over every node's process
from /proc, so a node's share of the work of relaying through the bus shows as a lower
figure. The clients, the broker and the nodes share the machine's cores.

Catch-up. A document of ``--updates`` updates is written through node A; node B, which
had it open, is stopped and started again, and a client connects to B: the time from the
connection to the client holding the whole text, and node B's CPU seconds spent from its
start until then (the load from the store plus the state exchange with node A).

    .venv/bin/python bench/scaleout.py --runs 3
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

BUS = "redis://127.0.0.1:6379/0"
READERS = 6
#: The resolution of /proc's CPU times, in seconds.
TICK = 0.01


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks


def nodes_on_bus(tmp: Path, count: int) -> list[ServerProcess]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    return [
        ServerProcess(
            tmp / "collab.db",
            tmp / f"node{i}.log",
            "--bus",
            BUS,
            "--bus-prefix",
            prefix,
            "--log-level",
            "warning",
        )
        for i in range(count)
    ]


def node_cpu(nodes: list[ServerProcess]) -> float:
    return sum(cpu_seconds(n.proc.pid) for n in nodes if n.proc is not None)


async def throughput(count: int, edits: int) -> float:
    """Deliveries per server CPU-second with ``count`` nodes."""
    with tempfile.TemporaryDirectory() as tmp:
        nodes = nodes_on_bus(Path(tmp), count)
        try:
            for node in nodes:
                node.start()
            urls = [node.url("bench") for node in nodes]
            readers = [Client(urls[i % count]) for i in range(READERS)]
            writers = [Client(urls[0]) for _ in range(2)]
            async with anyio.create_task_group() as tg:
                for client in readers + writers:
                    await tg.start(_hold, client)
                for client in readers + writers:
                    await client.synced()
                before = node_cpu(nodes)
                total = 2 * edits

                async def type_into(client: Client, letter: str) -> None:
                    text = client.doc.get("content", type=Text)
                    for i in range(edits):
                        text += letter
                        if i % 10 == 9:
                            await anyio.sleep(0)

                async with anyio.create_task_group() as typing:
                    typing.start_soon(type_into, writers[0], "a")
                    typing.start_soon(type_into, writers[1], "b")
                for reader in readers:
                    text = reader.doc.get("content", type=Text)
                    await reader.wait_for(lambda t=text: len(str(t)) == total, timeout=120)
                # At least one clock tick: /proc counts CPU in 10 ms steps, and a tiny run
                # (the smoke test) may spend less than one.
                spent = max(node_cpu(nodes) - before, TICK)
                tg.cancel_scope.cancel()
            return READERS * total / spent
        finally:
            for node in nodes:
                node.close()


async def _hold(client: Client, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    async with client:
        task_status.started()
        await anyio.sleep_forever()


async def catch_up(updates: int) -> tuple[float, float]:
    """(seconds from connecting to the whole text, node B's CPU seconds to get there)."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b = nodes_on_bus(Path(tmp), 2)
        try:
            a.start()
            b.start()
            async with Client(b.url("bench")) as watcher, Client(a.url("bench"), ack=True) as w:
                await watcher.synced()
                await w.synced()
                text = w.doc.get("content", type=Text)
                for i in range(updates):
                    text += "x"
                    if i % 100 == 99:
                        await anyio.sleep(0)
                await w.wait_durable(timeout=120)
                b.stop()
                b.start()
                assert b.proc is not None
                started_cpu = cpu_seconds(b.proc.pid)
                started = time.perf_counter()
                async with Client(b.url("bench")) as late:
                    late_text = late.doc.get("content", type=Text)
                    await late.wait_for(lambda: len(str(late_text)) == updates, timeout=120)
                    took = time.perf_counter() - started
                return took, cpu_seconds(b.proc.pid) - started_cpu
        finally:
            a.close()
            b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--edits", type=int, default=2000, help="per writer")
    parser.add_argument("--updates", type=int, default=10_000, help="of the catch-up document")
    parser.add_argument("--nodes", default="1,2,3")
    args = parser.parse_args()
    print("single-machine simulation: nodes, Redis and the clients share this machine")
    print(f"deliveries per server CPU-second (all nodes), median of {args.runs} runs")
    counts = [int(n) for n in args.nodes.split(",")]
    runs: dict[int, list[float]] = {count: [] for count in counts}
    for _ in range(args.runs):  # interleaved: a noisy minute hits every count alike
        for count in counts:
            runs[count].append(anyio.run(throughput, count, args.edits))
    for count in counts:
        each = [round(r) for r in runs[count]]
        print(f"  {count} node(s): {statistics.median(runs[count]):,.0f}  (runs: {each})")
    results = [anyio.run(catch_up, args.updates) for _ in range(args.runs)]
    took = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    print(
        f"catch-up of a restarted node, {args.updates} updates: {took * 1000:.0f} ms to the"
        f" whole text, {cpu * 1000:.0f} ms of its CPU (median of {args.runs})"
    )


if __name__ == "__main__":
    main()
