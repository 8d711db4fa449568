"""The attacks of issue 13 run against a real ``collab serve`` under both ASGI servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, running_server


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    yield from running_server(tmp_path, request.param)
