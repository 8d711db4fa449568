"""The whole scale-out topology without Docker: Debian's nginx (deploy/nginx.conf) in
front of three ``collab serve`` nodes on one PostgreSQL database and the Redis bus.

A node is killed with SIGKILL while clients type through nginx: they reconnect through
nginx to another node, and the final text holds every edit acknowledged (type-100 ack)
before the kill, once, and every edit made at all (the offline-first client resends
what was never acknowledged, by sync step 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pycrdt import Text

from collab.client import Client, ConnectionState
from tests.buses import shared_bus, unique_prefix
from tests.conftest import ServerProcess
from tests.nginx import Nginx
from tests.postgres import fresh_database

DOC = "scale/plan"


class Topology:
    def __init__(self, workdir: Path, db_url: str) -> None:
        prefix = unique_prefix()
        self.nodes = [
            ServerProcess(
                db_url,  # type: ignore[arg-type]  # ServerProcess takes a URL as its db
                workdir / f"node{i}.log",
                "--bus",
                shared_bus("redis"),
                "--bus-prefix",
                prefix,
                "--bus-heartbeat",
                "0.5",
                "--trusted-proxy",
                "127.0.0.1",
            )
            for i in range(3)
        ]
        self.proxy = Nginx(workdir / "nginx", [node.port for node in self.nodes])
        self.db_url = db_url

    def holder(self, name: str) -> int:
        """The node that has ``name`` open through nginx's choice (its room holds peers)."""
        for i, node in enumerate(self.nodes):
            if node.proc is None or node.proc.poll() is not None:
                continue
            with urllib.request.urlopen(f"{node.http_url}/api/status", timeout=5) as r:
                rooms = {
                    room["name"]: room["connections"] for room in json.loads(r.read())["rooms"]
                }
            if rooms.get(name, 0) >= 2:
                return i
        raise AssertionError(f"no node holds both clients of {name!r}")

    def logs(self) -> str:
        parts = [f"--- node {i} ---\n{node.log()[-4000:]}" for i, node in enumerate(self.nodes)]
        return "\n".join(parts) + f"\n--- nginx ---\n{self.proxy.log()}"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with fresh_database() as db_url:
        topo = Topology(tmp_path, db_url)
        try:
            for node in topo.nodes:
                node.start()
            topo.proxy.start()
            yield topo
        finally:
            topo.proxy.close()
            for node in topo.nodes:
                node.close()
            print(topo.logs())


async def test_kill_9_of_a_node_loses_no_acknowledged_edit(topology: Topology) -> None:
    url = f"{topology.proxy.ws_url}/{DOC}"
    acked: dict[str, list[str]] = {"ada": [], "bob": []}
    typed: dict[str, list[str]] = {"ada": [], "bob": []}
    killed = anyio.Event()
    async with Client(url, ack=True) as ada, Client(url, ack=True) as bob:
        await ada.synced()
        await bob.synced()
        victim = topology.holder(DOC)
        # A third client straight on another node: the bus carries the edits to it.
        other = topology.nodes[(victim + 1) % 3]
        async with Client(other.url(DOC), ack=True) as cy:
            await cy.synced()

            async def type_words(name: str, client: Client) -> None:
                text = client.doc.get("content", type=Text)
                for i in range(40):
                    word = f"{name}{i} "
                    text += word
                    typed[name].append(word)
                    if not killed.is_set():
                        try:
                            await client.wait_durable(timeout=0.5)
                        except TimeoutError:
                            continue
                        if not killed.is_set():
                            acked[name].append(word)  # acknowledged before the kill
                    await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(type_words, "ada", ada)
                tg.start_soon(type_words, "bob", bob)
                with anyio.fail_after(30):
                    while min(len(acked["ada"]), len(acked["bob"])) < 10:
                        await anyio.sleep(0.02)
                killed.set()
                topology.nodes[victim].kill()
            # Both reconnect through nginx (to a node the hash ring picks next) and resync.
            for client in (ada, bob):
                with anyio.fail_after(30):
                    while not (client.state is ConnectionState.CONNECTED and client.is_synced):
                        await anyio.sleep(0.05)
                await client.wait_durable(timeout=30)
            everything = [w for words in typed.values() for w in words]
            for client in (ada, bob, cy):
                text = client.doc.get("content", type=Text)
                await client.wait_for(lambda t=text: all(w in str(t) for w in everything), 30)
            assert ada.connections >= 2 and bob.connections >= 2  # they did move
    # What the surviving nodes serve through nginx, and what PostgreSQL holds.
    segment = urllib.request.quote(DOC, safe="")
    with urllib.request.urlopen(f"{topology.proxy.http_url}/api/docs/{segment}", timeout=10) as r:
        served = json.loads(r.read())["content"]
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab",
            "docs",
            "export",
            "--db",
            topology.db_url,
            DOC,
            "--format",
            "text",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for name in acked:
        assert len(acked[name]) >= 10
        for word in acked[name]:
            assert exported.count(word) == 1, (word, exported)
        for word in typed[name]:
            assert served.count(word) == 1, (word, served)
