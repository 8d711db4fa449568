"""The HTTP API against its own OpenAPI description: schemathesis generates requests from
``/api/openapi.json`` (valid and invalid ones) and sends them to a running server; every
answer must be a declared status, never a 5xx, with a body that matches the schema."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pycrdt import Doc, Map, Text

from collab.transport import openapi
from tests.conftest import ServerProcess

schema = schemathesis.openapi.from_dict(openapi.description())
# Valid requests and invalid ones (wrong types, out-of-range numbers, missing bodies).
schema.config.generation.update(modes=list(schemathesis.GenerationMode))
# The change feed never ends by itself: its first events are checked, then it is dropped.
schema.config.max_stream_events = 2


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("openapi")
    process = ServerProcess(tmp / "data" / "collab.db", tmp / "server.log")
    process.start()
    try:
        _seed(process)
        yield process
    finally:
        process.close()
        print(f"--- collab serve log ---\n{process.log()[-20000:]}")


def _seed(server: ServerProcess) -> None:
    """Documents for the generated requests to find: "0" is the first name hypothesis
    tries (its simplest string), so the 200 answers are checked too, not only 404s."""
    for name in ("0", "a", "notes/plan"):
        doc: Doc = Doc()
        doc.get("content", type=Text).insert(0, f"text of {name}")
        doc.get("meta", type=Map)["title"] = name
        request = urllib.request.Request(
            f"{server.http_url}/api/docs/{urllib.request.quote(name, safe='')}/updates",
            data=doc.get_update(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_the_served_description_is_the_one_tested(api_server: ServerProcess) -> None:
    with urllib.request.urlopen(f"{api_server.http_url}/api/openapi.json", timeout=5) as r:
        assert r.headers["content-type"] == "application/json"
        assert json.loads(r.read()) == json.loads(json.dumps(openapi.description()))


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_keeps_to_its_description(
    case: schemathesis.Case, api_server: ServerProcess
) -> None:
    # Every other check runs (no 5xx, declared statuses and content types, bodies that match
    # the schema, 405 with Allow, schema-invalid input refused). Not "schema-valid input is
    # accepted": a body must be a Yjs update, a name free of control characters, ``at`` a
    # time and ``after`` a cursor of this server, none of which a schema can say, so a
    # string the schema allows may rightly get 400.
    case.call_and_validate(
        base_url=api_server.http_url,
        timeout=15,
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
    if case.method == "DELETE":
        _seed(api_server)  # for the operations tested after this one
