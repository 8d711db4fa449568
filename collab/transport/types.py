"""ASGI type aliases, in one place (as starlette/types.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The ASGI scope extension under which ``collab serve``'s uvicorn protocol offers the
#: websocket endpoint ``write_frame(payload) -> bool``: the payload framed and written to
#: the socket at once, or False when it must go through ``send`` (collab.uvicorn_protocol).
WRITE_FRAME_EXTENSION = "collab.write_frame"
WriteFrame = Callable[[bytes], bool]
