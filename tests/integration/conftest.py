"""The integration tests run against both ASGI servers ``collab serve --server`` offers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, running_server


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A running collab server with a fresh database, under each ASGI server in turn."""
    yield from running_server(tmp_path, request.param)
