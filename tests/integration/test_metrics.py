"""GET /metrics after real traffic: every documented metric is there and moved."""

from __future__ import annotations

import re
import urllib.request

from pycrdt import Text

from collab.client import Client
from tests.conftest import ROOT, ServerProcess


def scrape(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_traffic_shows_in_the_metrics(server: ServerProcess) -> None:
    async with Client(server.url("m"), ack=True) as a, Client(server.url("m")) as b:
        await a.synced()
        await b.synced()
        a.doc.get("content", type=Text).insert(0, "counted")
        await a.wait_durable()
        await b.wait_for(lambda: str(b.doc.get("content", type=Text)) == "counted")
        samples = scrape(server)
    assert samples['collab_messages_in_total{type="sync"}'] >= 3
    assert samples['collab_bytes_in_total{type="sync"}'] > 20
    assert samples['collab_messages_out_total{type="sync"}'] >= 3
    assert samples["collab_fanout_seconds_count"] >= 1
    assert samples["collab_store_batch_rows_count"] >= 1
    assert samples["collab_commit_seconds_count"] >= 1
    assert samples["collab_connections"] == 2


def test_every_metric_is_documented_in_the_readme() -> None:
    from collab import metrics

    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r'"(collab_[a-z_]+)"', (ROOT / "collab" / "metrics.py").read_text()))
    names |= {f"collab_{kind}_{d}" for kind in ("messages", "bytes") for d in ("in", "out")}
    assert names, metrics.__file__
    missing = sorted(n for n in names if f"`{n}" not in readme)
    assert not missing, f"README.md does not document {missing}"
