"""deploy/nginx.conf with Debian's real nginx: it passes ``nginx -t``, and in front of
three ``collab serve`` processes it routes every request about one document (websocket
and HTTP API alike) to one node, which sees the client's own address."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Text

from collab.client import Client
from tests.conftest import ServerProcess
from tests.nginx import SHIPPED, Nginx, check, main_config, render


def test_the_shipped_configuration_passes_nginx_t(tmp_path: Path) -> None:
    conf = main_config(tmp_path / "ok", render(SHIPPED.read_text(), [1235, 1236], 8080))
    result = check(conf)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    broken = main_config(tmp_path / "broken", SHIPPED.read_text().replace("hash ", "hsah "))
    assert check(broken).returncode != 0  # the check can fail


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Nginx, list[ServerProcess]]]:
    db = tmp_path / "shared.db"  # one SQLite file: enough for routing, not for fan-out
    nodes = [
        ServerProcess(db, tmp_path / f"node{i}.log", "--trusted-proxy", "127.0.0.1")
        for i in range(3)
    ]
    proxy = Nginx(tmp_path / "nginx", [node.port for node in nodes])
    try:
        for node in nodes:
            node.start()
        proxy.start()
        yield proxy, nodes
    finally:
        proxy.close()
        for node in nodes:
            node.close()
        for i, node in enumerate(nodes):
            print(f"--- node {i} ---\n{node.log()[-3000:]}")
        print(f"--- nginx ---\n{proxy.log()}")


def open_rooms(node: ServerProcess) -> list[str]:
    with urllib.request.urlopen(f"{node.http_url}/api/status", timeout=5) as response:
        return [room["name"] for room in json.loads(response.read())["rooms"]]


async def test_one_documents_requests_all_reach_one_node(
    cluster: tuple[Nginx, list[ServerProcess]],
) -> None:
    proxy, nodes = cluster
    names = [f"notes/{i}" for i in range(12)]
    for name in names:
        async with Client(f"{proxy.ws_url}/{name}", ack=True) as client:
            await client.synced()
            client.doc.get("content", type=Text).insert(0, f"text of {name}")
            await client.wait_durable()
        # The same document over the HTTP API, name percent-encoded: the same node.
        segment = urllib.request.quote(name, safe="")
        with urllib.request.urlopen(f"{proxy.http_url}/api/docs/{segment}", timeout=5) as r:
            assert json.loads(r.read()) == {"content": f"text of {name}"}
    holders = {
        name: [i for i, node in enumerate(nodes) if name in open_rooms(node)] for name in names
    }
    assert all(len(found) == 1 for found in holders.values()), holders
    assert len({found[0] for found in holders.values()}) > 1  # and documents are spread out
