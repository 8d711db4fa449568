"""The plain HTTP routes: one table of (path, methods, handler), then the static files.

A route's handler takes the :class:`~collab.transport.interface.Server` and the request
and returns a response (``collab.transport.responses``); a new endpoint is one function
and one line in :data:`ROUTES`. Routing is starlette's ``Router``; anything no route
matches is a file of the browser editor (``collab.transport.static``). Websocket upgrades
never come here: they go straight to ``collab.transport.websocket``, whatever their path.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import anyio
from prometheus_client import REGISTRY
from pycrdt import get_state
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from collab import admin, metrics
from collab.access import is_loopback
from collab.auth import Access, Grants
from collab.errors import (
    CloseCode,
    CollabError,
    DocumentNotFoundError,
    RemoteProtocolError,
    StoreError,
)
from collab.history import parse_time, sessions
from collab.hooks import Identity, Refused
from collab.names import BadNameError, name_from_bytes, printable
from collab.protocol import SyncUpdate, decode_state_vector
from collab.storage.base import DOC_ORDERS, HistoryUnavailableError, parse_cursor
from collab.transport import openapi, responses, sse, static
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


def _metrics_refusal(server: Server, request: Request) -> Response | None:
    """Process details are for the operator: a bearer token, or a loopback client."""
    token = server.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return responses.text(401, "send Authorization: Bearer <the --metrics-token>")
    client = request.client.host if request.client else ""
    if is_loopback(client):
        return None
    return responses.text(403, "metrics are served to loopback only; set --metrics-token")


async def metrics_page(server: Server, request: Request) -> Response:
    refusal = _metrics_refusal(server, request)
    if refusal is not None:
        return refusal
    body, content_type = metrics.render()
    return Response(body, 200, responses.NO_STORE, content_type)


async def stats(server: Server, request: Request) -> Response:
    refusal = _metrics_refusal(server, request)
    if refusal is not None:
        return refusal
    return responses.json_body(200, metrics.stats())


def identify(server: Server, request: Request, document: str | None) -> Identity:
    """The caller's identity by the websockets' rule (:class:`collab.access.TokenAuth`).

    :raises Refused: 4401 maps to HTTP 401, 4403 to 403.
    """
    query = {key: request.query_params.getlist(key) for key in request.query_params}
    headers = {key.lower(): value for key, value in request.headers.items()}
    return server.token_auth.identify(document, query, (), headers)


def refused(e: Refused) -> Response:
    return responses.error(403 if e.close_code == CloseCode.FORBIDDEN else 401, str(e))


def query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter: ASCII digits only (``1_000`` and ``١٠`` are not).

    :raises ValueError: it is not such an integer within ``low..high``.
    """
    text = request.query_params.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise ValueError(text)
    value = int(text)
    if not low <= value <= high:
        raise ValueError(text)
    return value


async def list_docs(server: Server, request: Request) -> Response:
    """``GET /api/docs``: a page of documents with their sizes, in ``order``; ``next`` is
    the ``after`` of the following page (None on the last)."""
    refusal = responses.unknown_parameters(request, ("limit", "after", "order"))
    if refusal is not None:
        return refusal
    try:
        limit = query_int(request, "limit", 50, 1, 1000)
    except ValueError:
        return responses.error(400, "limit must be an integer from 1 to 1000 (ASCII digits)")
    order = request.query_params.get("order", "updated_at")
    if order not in DOC_ORDERS:
        return responses.error(400, f"order must be one of {', '.join(DOC_ORDERS)}")
    after = request.query_params.get("after")
    if after is not None and after != "":
        try:
            parse_cursor(order, after)
        except ValueError:
            return responses.error(
                400, "after must be the 'next' of the previous page, listed in the same order"
            )
    try:
        identity = identify(server, request, None)
    except Refused as e:
        return refused(e)
    grants = identity.claims.get("grants")
    try:
        # One more than asked for, to tell whether another page follows.
        docs = await server.store.list_docs(
            limit + 1,
            order=order,
            after=after or None,
            flush_timeout=LIST_FLUSH_TIMEOUT,
        )
    except StoreError as e:
        return responses.error(503, f"the store cannot be read: {e}")
    page, more = docs[:limit], len(docs) > limit
    next_after = page[-1].cursor(order) if more else None
    if isinstance(grants, Grants):
        # Only what the caller may read; the cursor still moves past the rest.
        page = [d for d in page if grants.may_list(d.name)]
    return responses.json_body(200, {"docs": [asdict(d) for d in page], "next": next_after})


STATUS_DIR = Path(__file__).resolve().parent / "status"
#: The status page loads its own script and talks to its own origin, nothing else.
STATUS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def status_page(server: Server, request: Request) -> Response:
    """The operator's page (HTML): served to whoever may read the metrics."""
    refusal = _status_refusal(server, request)
    if refusal is not None:
        return refusal
    body = (STATUS_DIR / "status.html").read_bytes()
    headers = {**responses.NO_STORE, "content-security-policy": STATUS_POLICY}
    return Response(body, 200, headers, "text/html; charset=utf-8")


async def status_script(server: Server, request: Request) -> Response:
    body = (STATUS_DIR / "status.js").read_bytes()
    return Response(body, 200, responses.NO_STORE, "text/javascript; charset=utf-8")


def _status_refusal(server: Server, request: Request) -> Response | None:
    """The metrics' rule; the page itself may carry the token as ``?token=`` (a browser
    cannot set a header on a navigation), and passes it on to /api/status as a header."""
    token = request.query_params.get("token")
    if token is not None and server.settings.metrics_token is not None:
        if hmac.compare_digest(token.encode(), server.settings.metrics_token.encode()):
            return None
    return _metrics_refusal(server, request)


async def status_data(server: Server, request: Request) -> Response:
    refusal = _metrics_refusal(server, request)
    if refusal is not None:
        return responses.error(refusal.status_code, "not allowed: see --metrics-token")
    rooms = sorted(
        (
            {"name": name, "connections": len(room.peers)}
            for name, room in server.rooms.rooms.items()
        ),
        key=lambda r: (-int(str(r["connections"])), str(r["name"])),
    )
    return responses.json_body(
        200,
        {
            "time": time.time(),
            "connections": len(server.peers),
            "rooms": rooms[:1000],
            "updates": REGISTRY.get_sample_value("collab_updates_total") or 0,
            "commit_latency_ms": metrics.stats()["commit_latency_ms"],
        },
    )


def _document_target(
    server: Server, request: Request, routes: tuple[str, ...]
) -> tuple[str, str, Identity] | Response:
    """``/api/docs/{name}[/{route}]``: the document name (one percent-encoded segment,
    decoded and checked as a websocket's is), the route ("" for none) and the caller's
    identity; or the error response (404 for another route, 400 for a bad name, 401 or
    403 by the token rule)."""
    raw = bytes(request.scope.get("raw_path") or request.url.path.encode()).partition(b"?")[0]
    segment, _, route = raw[len(b"/api/docs/") :].partition(b"/")
    if route.decode("latin-1") not in routes:
        return responses.error(404, f"no API route {request.url.path}")
    try:
        name = name_from_bytes(unquote_to_bytes(segment))
    except BadNameError as e:
        return responses.error(400, str(e))
    try:
        identity = identify(server, request, name)
    except Refused as e:
        return refused(e)
    return name, route.decode("latin-1"), identity


def _write_target(server: Server, request: Request, route: str) -> tuple[str, Identity] | Response:
    """:func:`_document_target` for a route that changes the document and takes no query
    parameters: the name and identity, or 400, 401, 403 (read access only) or 404."""
    target = _document_target(server, request, (route,))
    if isinstance(target, Response):
        return target
    name, _, identity = target
    refusal = responses.unknown_parameters(request, ())
    if refusal is not None:
        return refusal
    if identity.access < Access.WRITE:
        return responses.error(403, "the token gives read access only")
    return name, identity


async def document(server: Server, request: Request) -> Response:
    """``GET /api/docs/{name}`` and ``GET /api/docs/{name}/state-vector``.

    The name is one percent-encoded path segment (``notes%2F2026%2Fplan``), decoded and
    checked as a websocket's is. The document now, or as it was at ``?at=TIME`` (what
    ``collab docs export --at`` takes): a Yjs update with ``Accept:
    application/octet-stream``, else JSON of its roots (``?root=content``,
    ``?root=meta:map``, types detected when not given). The ETag is a hash of the
    document's encoding; ``If-None-Match`` with it gets 304.
    """
    target = _document_target(server, request, ("", "state-vector"))
    if isinstance(target, Response):
        return target
    name, what, _ = target
    refusal = responses.unknown_parameters(request, ("root", "at") if what == "" else ("at",))
    if refusal is not None:
        return refusal
    at_text = request.query_params.get("at")
    try:
        at = None if at_text is None else parse_time(at_text)
    except ValueError as e:
        return responses.error(400, f"at: {e}")
    room = server.rooms.rooms.get(name)
    if room is not None and at is None:
        update = room.doc.get_update()
    else:
        try:
            update = await admin.export_update(server.store, name, at)
        except DocumentNotFoundError:
            return responses.error(404, f"no document named {printable(name)!r}")
        except HistoryUnavailableError as e:
            return responses.error(410, str(e))
        except StoreError as e:
            return responses.error(503, f"the store cannot be read: {e}")
    etag = '"' + hashlib.sha256(update).hexdigest()[:32] + '"'
    headers = {"etag": etag}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(b"", 304, {**responses.NO_STORE, **headers})
    if what == "state-vector":
        state_vector = get_state(update)
        if "application/json" in request.headers.get("accept", ""):
            return responses.json_body(200, decode_state_vector(state_vector), headers)
        return Response(state_vector, 200, {**responses.NO_STORE, **headers}, BINARY)
    if BINARY in request.headers.get("accept", ""):
        return Response(update, 200, {**responses.NO_STORE, **headers}, BINARY)
    try:
        content = admin.content_of(update, request.query_params.getlist("root"))
    except (ValueError, CollabError) as e:
        return responses.error(400, str(e))
    return responses.json_body(200, content, headers)


BINARY = "application/octet-stream"
#: Longest a POSTed update waits to be on disk before the answer is 503.
DURABLE_TIMEOUT = 10.0


@dataclass(eq=False)
class HTTPWriter:
    """A POST request as a room sees a peer: it sends one update and hears nothing back."""

    identity: Identity
    label: str
    address: str
    wants_ack: bool = False

    def send_nowait(self, frame: bytes) -> None:
        pass

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        pass


async def post_update(server: Server, request: Request) -> Response:
    """``POST /api/docs/{name}/updates``: a binary Yjs update, validated and applied as a
    websocket's is, relayed at once, and answered once it is on disk (200 with the new
    state vector); an invalid one gets 400 with the reason and changes nothing."""
    target = _write_target(server, request, "updates")
    if isinstance(target, Response):
        return target
    name, identity = target
    body = await responses.bounded_body(request, server.settings.max_message_size, "an update")
    if isinstance(body, Response):
        return body
    if not body:
        return responses.error(400, "the body must be a binary Yjs update")
    try:
        room = await server.rooms.open(name)
    except StoreError as e:
        return responses.error(503, f"the document cannot be loaded: {e}")
    client = request.client
    writer = HTTPWriter(
        identity, f"HTTP {client.host if client else '?'}", client.host if client else "?"
    )
    try:
        room.receive(writer, SyncUpdate(body))
    except RemoteProtocolError as e:
        return responses.error(400, str(e))
    room.flush()  # stored and relayed now, not at the next loop turn
    try:
        with anyio.fail_after(DURABLE_TIMEOUT):
            await server.store.flush()
    except TimeoutError:
        return responses.error(503, "the update is accepted but not yet on disk; retry")
    state_vector = room.doc.get_state()
    if "application/json" in request.headers.get("accept", ""):
        return responses.json_body(200, decode_state_vector(state_vector))
    return Response(state_vector, 200, responses.NO_STORE, BINARY)


async def delete_document(server: Server, request: Request) -> Response:
    """``DELETE /api/docs/{name}``: what ``collab docs delete`` does. Its connections are
    closed with 4409 at once; clients that still hold its history are refused with 4409
    when they come back, so the deleted text never returns."""
    target = _write_target(server, request, "")
    if isinstance(target, Response):
        return target
    name, identity = target
    try:
        epoch = await admin.delete(server.store, name)
    except DocumentNotFoundError as e:
        return responses.error(404, str(e))
    except StoreError as e:
        return responses.error(503, f"the store cannot be written: {e}")
    await server.rooms.poll_versions()  # retire the open room now, not at the next poll
    return responses.json_body(200, {"name": name, "epoch": epoch})


async def history(server: Server, request: Request) -> Response:
    """``GET /api/docs/{name}/history``: what ``collab docs history`` lists. Any time from
    ``readable_from`` on (None: since the start) can be read with ``?at=``."""
    target = _document_target(server, request, ("history",))
    if isinstance(target, Response):
        return target
    name, _, _ = target
    refusal = responses.unknown_parameters(request, ("gap",))
    if refusal is not None:
        return refusal
    try:
        gap = query_int(request, "gap", 300, 0, 10**8)
    except ValueError:
        return responses.error(400, "gap must be a whole number of seconds (ASCII digits)")
    try:
        read = await server.store.history(name)
    except DocumentNotFoundError as e:
        return responses.error(404, str(e))
    except StoreError as e:
        return responses.error(503, f"the store cannot be read: {e}")

    def part(row: tuple[float, int, int] | None) -> dict[str, float | int] | None:
        return None if row is None else {"at": row[0], "bytes": row[1], "updates": row[2]}

    return responses.json_body(
        200,
        {
            "name": name,
            "readable_from": read.history_from,
            "checkpoint": part(read.base),
            "sessions": [
                {"from": s.start, "to": s.end, "updates": s.updates, "bytes": s.bytes}
                for s in sessions(read.raw, gap)
            ],
            "compacted": part(read.compacted),
        },
    )


async def openapi_description(server: Server, request: Request) -> Response:
    return responses.json_body(200, openapi.description())


async def events(server: Server, request: Request) -> Response:
    """``GET /api/docs/{name}/events``: the change feed (``collab.transport.sse``)."""
    target = _document_target(server, request, ("events",))
    if isinstance(target, Response):
        return target
    name, _, identity = target
    return await sse.events(server, request, name, identity)


async def post_awareness(server: Server, request: Request) -> Response:
    """``POST /api/docs/{name}/awareness?session=``: presence for an event stream."""
    target = _document_target(server, request, ("awareness",))
    if isinstance(target, Response):
        return target
    name, _, identity = target
    return await sse.post_awareness(server, request, name, identity)


#: ``/api/docs/{name}/{route}``: route -> {method: handler}. One table rather than one
#: starlette route each: starlette matches the decoded path, where a name ending in
#: ``%2Fupdates`` would look like the updates route; this reads the raw path.
DOCUMENT_ROUTES: dict[str, dict[str, Handler]] = {
    "": {"GET": document, "DELETE": delete_document},
    "state-vector": {"GET": document},
    "history": {"GET": history},
    "updates": {"POST": post_update},
    "events": {"GET": events},
    "awareness": {"POST": post_awareness},
}


async def document_route(server: Server, request: Request) -> Response:
    raw = bytes(request.scope.get("raw_path") or request.url.path.encode()).partition(b"?")[0]
    route = raw[len(b"/api/docs/") :].partition(b"/")[2].decode("latin-1")
    methods = DOCUMENT_ROUTES.get(route)
    if methods is None:
        return responses.error(404, f"no API route {printable(request.url.path)}")
    method = "GET" if request.method == "HEAD" else request.method
    handler = methods.get(method)
    if handler is None:
        allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
        return responses.error(
            405,
            f"{request.method} is not allowed here; use {' or '.join(methods)}",
            {"allow": ", ".join(allowed)},
        )
    return await handler(server, request)


async def no_such_route(server: Server, request: Request) -> Response:
    return responses.error(404, f"no API route {request.url.path}")


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: (path, methods, handler). GET implies HEAD.
ROUTES: list[tuple[str, tuple[str, ...], Handler]] = [
    ("/healthz", ("GET",), healthz),
    ("/readyz", ("GET",), readyz),
    ("/metrics", ("GET",), metrics_page),
    ("/api/stats", ("GET",), stats),
    ("/api/status", ("GET",), status_data),
    ("/status", ("GET",), status_page),
    ("/status.js", ("GET",), status_script),
    ("/api/openapi.json", ("GET",), openapi_description),
    ("/api/docs", ("GET",), list_docs),
    ("/api/docs/{rest:path}", ANY_METHOD, document_route),
    ("/api/{rest:path}", ANY_METHOD, no_such_route),
]


def _endpoint(
    server: Server, methods: tuple[str, ...], handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    allowed = (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods

    async def endpoint(request: Request) -> Response:
        if request.method not in allowed:
            if request.url.path.startswith("/api/"):
                return responses.error(
                    405,
                    f"{request.method} is not allowed here; use {' or '.join(methods)}",
                    {"allow": ", ".join(allowed)},
                )
            return responses.method_not_allowed(request.method, request.url.path, allowed)
        return await handler(server, request)

    return endpoint


async def _not_routed(scope: Scope, receive: Receive, send: Send) -> None:
    # Under /api/ a path no route pattern matches (one holding a newline, say) is still an
    # API path and gets a JSON error; anything else is a file of the editor.
    if scope["path"].startswith("/api/"):
        await responses.respond(
            responses.error(404, f"no API route {printable(scope['path'])}"), scope, receive, send
        )
        return
    await static.handle(scope, receive, send)


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
        default=_not_routed,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette sends a HEAD answer's body; HTTP says it has none.
        if scope["method"] == "HEAD":
            send = responses.without_body(send)
        host = dict(scope.get("headers") or []).get(b"host")
        if not server.origins.host_allowed(host.decode("latin-1") if host else None):
            # DNS rebinding: a page of another site, its name pointed at this server
            metrics.REFUSED.labels(reason="host").inc()
            await responses.text(403, "this server does not answer to that Host name")(
                scope, receive, send
            )
            return
        path = scope["path"]
        if "\n" in path or "\r" in path:
            # Starlette's path patterns stop at a line break; the document routes read the
            # name from the raw path and refuse such a name with 400 themselves.
            scope = {**scope, "path": path.replace("\n", " ").replace("\r", " ")}
        await router(scope, receive, send)

    return app
