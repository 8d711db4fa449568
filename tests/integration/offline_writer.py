"""A client *process* for test_offline_client.py: edits one document through a local file.

python -m tests.integration.offline_writer URL LOCAL edit-offline
    (the server is down) deletes "draft: ", appends " world", prints "edited" and
    waits to be killed
python -m tests.integration.offline_writer URL LOCAL deliver
    waits until the server has everything on disk, prints the text, exits
"""

from __future__ import annotations

import sys

import anyio
from pycrdt import Text

from collab.client import Client


async def main(url: str, local: str, action: str) -> None:
    async with Client(url, ack=True, local=local) as client:
        text = client.doc.get("content", type=Text)
        if action == "edit-offline":
            assert not client.is_synced
            del text[0 : len("draft: ")]  # a delete only...
            text += " world"  # ...and an insertion
            print("edited", str(text), flush=True)
            await anyio.sleep(3600)  # until SIGKILL
        elif action == "deliver":
            await client.wait_durable(timeout=60)
            print(str(text), flush=True)
        else:
            raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
