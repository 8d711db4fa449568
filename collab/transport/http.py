"""The plain HTTP routes: one table of (path, methods, handler), then the static files.

A route's handler takes the :class:`~collab.transport.interface.Server` and the request
and returns a response (``collab.transport.responses``); a new endpoint is one function
and one line in :data:`ROUTES`. Routing is starlette's ``Router``; anything no route
matches is a file of the browser editor (``collab.transport.static``). Websocket upgrades
never come here: they go straight to ``collab.transport.websocket``, whatever their path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from collab import metrics
from collab.errors import StoreError
from collab.transport import responses, static
from collab.transport.interface import Server
from collab.transport.types import ASGIApp, Receive, Scope, Send

#: Longest a document listing waits for queued updates to commit before it answers
#: without them (a locked database would otherwise hold the request open indefinitely).
LIST_FLUSH_TIMEOUT = 2.0

Handler = Callable[[Server, Request], Awaitable[Response]]


async def healthz(server: Server, request: Request) -> Response:
    return responses.text(200, "ok")


async def readyz(server: Server, request: Request) -> Response:
    if server.ready and not server.stopping:
        return responses.text(200, "ready")
    return responses.text(503, "not ready")


async def metrics_page(server: Server, request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, 200, responses.NO_STORE, content_type)


async def stats(server: Server, request: Request) -> Response:
    return responses.json_body(200, metrics.stats())


async def list_docs(server: Server, request: Request) -> Response:
    try:
        limit = int(request.query_params.get("limit", "50"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        return responses.error(400, "limit must be an integer from 1 to 1000")
    try:
        docs = await server.store.list_docs(limit, flush_timeout=LIST_FLUSH_TIMEOUT)
    except StoreError as e:
        return responses.error(503, f"the store cannot be read: {e}")
    return responses.json_body(200, {"docs": [asdict(d) for d in docs]})


async def no_such_route(server: Server, request: Request) -> Response:
    return responses.error(404, f"no API route {request.url.path}")


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: (path, methods, handler). GET implies HEAD.
ROUTES: list[tuple[str, tuple[str, ...], Handler]] = [
    ("/healthz", ("GET",), healthz),
    ("/readyz", ("GET",), readyz),
    ("/metrics", ("GET",), metrics_page),
    ("/api/stats", ("GET",), stats),
    ("/api/docs", ("GET",), list_docs),
    ("/api/{rest:path}", ANY_METHOD, no_such_route),
]


def _endpoint(
    server: Server, methods: tuple[str, ...], handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    allowed = (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods

    async def endpoint(request: Request) -> Response:
        if request.method not in allowed:
            return responses.method_not_allowed(request.method, request.url.path, allowed)
        return await handler(server, request)

    return endpoint


def http_app(server: Server) -> ASGIApp:
    """The ASGI app answering every plain HTTP request to ``server``."""
    router = Router(
        # Every method reaches the endpoint, which answers 405 itself: starlette's own
        # 405 lists the allowed methods in set order, which varies from run to run.
        routes=[
            Route(path, _endpoint(server, methods, handler), methods=ANY_METHOD)
            for path, methods, handler in ROUTES
        ],
        redirect_slashes=False,
        default=static.handle,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette sends a HEAD answer's body; HTTP says it has none.
        if scope["method"] == "HEAD":
            send = responses.without_body(send)
        await router(scope, receive, send)

    return app
