"""Document names (one spelling per document, no invisible characters) and the HTTP
edges: ASCII-only numbers, and who may read /metrics."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab.client import Client
from collab.errors import CloseCode
from tests.conftest import ServerProcess, running_server


def http_get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def test_nfc_and_nfd_spellings_are_one_document(server: ServerProcess) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    async with Client(server.url(nfc), ack=True) as writer:
        await writer.synced()
        writer.doc.get("content", type=Text).insert(0, "one document")
        await writer.wait_durable()
    async with Client(server.url(nfd)) as reader:
        await reader.synced()
        assert str(reader.doc.get("content", type=Text)) == "one document"


@pytest.mark.parametrize(
    "name", ["evil\u202etxt.exe", "zero\u200bwidth", "c1\u0085control", "tab\tname"]
)
async def test_names_with_invisible_or_control_characters_are_refused(
    server: ServerProcess, name: str
) -> None:
    url = f"{server.ws_url}/{urllib.parse.quote(name)}"
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.BAD_DOCUMENT_NAME
    assert f"U+{ord(next(c for c in name if not c.isalnum())):04X}" in closed.value.rcvd.reason


@pytest.mark.parametrize("limit", ["1_000", "\u0661\u0660", "+5", " 5", "5.0", "-1", "0"])
def test_limit_takes_ascii_digits_only(server: ServerProcess, limit: str) -> None:
    url = f"{server.http_url}/api/docs?limit={urllib.parse.quote(limit)}"
    assert http_get(url) == 400
    assert http_get(f"{server.http_url}/api/docs?limit=10") == 200


@pytest.fixture
def with_metrics_token(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, "hypercorn", "--metrics-token", "m" * 24)


def test_metrics_need_the_metrics_token_when_one_is_set(
    with_metrics_token: ServerProcess,
) -> None:
    url = f"{with_metrics_token.http_url}/metrics"
    assert http_get(url) == 401
    assert http_get(url, {"Authorization": "Bearer wrong"}) == 401
    assert http_get(url, {"Authorization": "Bearer " + "m" * 24}) == 200
    assert http_get(f"{with_metrics_token.http_url}/api/stats") == 401


def test_metrics_answer_loopback_clients_without_a_token(server: ServerProcess) -> None:
    assert http_get(f"{server.http_url}/metrics") == 200


def non_loopback_address() -> str:
    """An address of this machine that is not loopback, to be a remote client from."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a route
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this machine has no non-loopback address"
    return address


@pytest.fixture
def on_every_interface(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, "hypercorn", "--host", "0.0.0.0", "--anonymous", "write")


def test_metrics_refuse_a_remote_client_without_the_token(
    on_every_interface: ServerProcess,
) -> None:
    remote = f"http://{non_loopback_address()}:{on_every_interface.port}"
    assert http_get(f"{remote}/healthz") == 200
    assert http_get(f"{remote}/metrics") == 403
    assert http_get(f"{remote}/api/stats") == 403
    assert http_get(f"{remote}/status") == 403
    assert http_get(f"{remote}/api/status") == 403
