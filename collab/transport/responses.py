"""The HTTP responses collab sends, built once here for the routes and the static files.

Every response is a starlette ``Response``. Text and JSON answers are never cached
(``no-store``: they describe state that changes); static assets set their own caching.
A HEAD request gets the headers of the GET answer and no body (:func:`without_body`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from collab.names import printable
from collab.transport.types import Message, Receive, Scope, Send

NO_STORE = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


def text(status: int, body: str, headers: Mapping[str, str] | None = None) -> Response:
    """A plain-text answer; a newline is added when the text has none."""
    if not body.endswith("\n"):
        body += "\n"
    return Response(body, status, {**NO_STORE, **(headers or {})}, "text/plain; charset=utf-8")


def json_body(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Response(body, status, {**NO_STORE, **(headers or {})}, "application/json")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON error, ``{"error": message}``: what every ``/api/`` route answers on failure."""
    return json_body(status, {"error": message}, headers)


def unknown_parameters(request: Request, known: tuple[str, ...]) -> Response | None:
    """400 for a query parameter the route does not take (``token`` is everyone's), or
    one given twice: a typo such as ``?roots=`` must not be silently ignored, nor one of
    two values."""
    for key in request.query_params:
        if key not in known and key != "token":
            expected = ", ".join(known) if known else "none"
            return error(
                400, f"unknown query parameter {printable(key)!r} (this route takes: {expected})"
            )
        if len(request.query_params.getlist(key)) > 1:
            return error(400, f"query parameter {printable(key)!r} is given more than once")
    return None


def method_not_allowed(method: str, path: str, allowed: tuple[str, ...]) -> Response:
    allow = ", ".join(allowed)
    return text(405, f"{method} is not allowed on {path}; use {allowed[0]}", {"allow": allow})


def without_body(send: Send) -> Send:
    """Wrap ``send`` so that a HEAD request's answer carries its headers and no body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


async def respond(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response``, without its body when the request is a HEAD."""
    if scope.get("method") == "HEAD":
        send = without_body(send)
    await response(scope, receive, send)


async def bounded_body(request: Request, limit: int, what: str) -> bytes | Response:
    """The request's body, or a 413 as soon as it is known to exceed ``limit`` bytes (by
    its Content-Length, or while it streams in: nothing past the limit is buffered)."""
    declared = request.headers.get("content-length")
    too_big = error(413, f"{what} may be {limit} bytes at most")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return too_big
    return bytes(body)
