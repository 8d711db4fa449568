"""Where the memory of an idle connection goes: a tracemalloc breakdown per source file.

Runs collab in this process under tracemalloc, with the ASGI server asked for
(``--server``), opens ``--clients`` idle connections from a child process (each sends sync
step 1 and an awareness state, as a browser tab does, then waits), and prints the Python
memory allocated per connection, grouped by the file that allocated it: collab's own,
the ASGI server's, asyncio's. It complements bench/run.py's RSS per idle connection, which
says how much but not whose.

    .venv/bin/python bench/conn_memory.py --server uvicorn --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab import server as collab_server  # noqa: E402
from collab.app import build_app  # noqa: E402
from collab.config import SERVERS, Settings  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_clients(port: int, n: int, rooms: int) -> None:
    """The child process: n idle y-websocket clients over ``rooms`` rooms, until killed."""
    import websockets
    from pycrdt import Awareness, Doc

    from collab.protocol import AwarenessUpdate, SyncStep1, encode

    connections = []

    async def one(i: int) -> None:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/idle-{i % rooms}", compression=None, max_queue=None
        )
        doc: Doc = Doc()
        awareness = Awareness(doc)
        awareness.set_local_state({"user": {"name": f"user {i}", "color": "#30bced"}})
        await ws.send(encode(SyncStep1(doc.get_state())))
        await ws.send(encode(AwarenessUpdate(awareness.encode_awareness_update([doc.client_id]))))
        connections.append(ws)

    for start in range(0, n, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))
    print("connected", flush=True)

    async def drain(ws: websockets.ClientConnection) -> None:
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    await asyncio.gather(*(drain(ws) for ws in connections))


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> None:
    stats = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"Python memory per idle connection: {total / n / 1024:.1f} KiB ({n} connections)")
    groups: dict[str, int] = {}
    for s in stats:
        path = s.traceback[0].filename
        if "/collab/" in path and "site-packages" not in path:
            owner = "collab"
        elif "site-packages" in path:
            owner = path.split("site-packages/")[1].split("/")[0]
        elif "asyncio" in path:
            owner = "asyncio"
        else:
            owner = "other (stdlib, json, ...)"
        groups[owner] = groups.get(owner, 0) + s.size_diff
    print("\nby package:")
    for owner, size in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {size / n:8.0f} B  {owner}")
    print(f"\nby file (top {top}):")
    for s in stats[:top]:
        path = s.traceback[0].filename
        short = path.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        print(f"  {s.size_diff / n:8.0f} B  {s.count_diff / n:5.1f} blocks  {short}")


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    settings = Settings(port=port, db=":memory:", server=args.server, log_level="warning")
    app = build_app(settings)

    async def measure() -> None:
        while not app.ready:
            await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        gc.collect()
        before = tracemalloc.take_snapshot()
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(port), str(args.clients), str(args.rooms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            with anyio.fail_after(120):
                while len(app.peers) < args.clients:
                    await anyio.sleep(0.1)
            await anyio.sleep(args.settle)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            child.kill()
            child.wait()
        report(before, after, args.clients, args.top)
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own graceful stop

    async with anyio.create_task_group() as tg:
        tg.start_soon(measure)
        await collab_server.serve_app(app, settings)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        asyncio.run(open_clients(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the last join")
    parser.add_argument("--top", type=int, default=15, help="files to list")
    args = parser.parse_args()
    tracemalloc.start()
    anyio.run(main, args)
