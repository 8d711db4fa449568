"""The README's Python example runs as written, pasted into a file, against a server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from tests.conftest import ROOT, ServerProcess
from tests.integration.test_offline_client import stored_text

EXAMPLE_URL = "ws://127.0.0.1:1234"


def python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("From Python, `collab.client.Client`") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README.md lost its Python example"
    return match.group(1)


async def test_the_readme_python_example_runs_as_a_script(
    server: ServerProcess, tmp_path: Path
) -> None:
    example = python_example()
    assert EXAMPLE_URL in example
    script = tmp_path / "example.py"
    script.write_text(example.replace(EXAMPLE_URL, server.ws_url))  # only the port differs
    result = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,  # where a user would paste it, not the repository
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's collab
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    assert result.returncode == 0, result.stderr
    assert stored_text(server, "notes/2026/plan") == "hello from Python\n"
    assert (tmp_path / "plan.ydoc.db").is_file()  # its local file, where it ran
