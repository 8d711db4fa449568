"""Serve the browser editor, the built bundle in ``collab/web/dist``, over plain HTTP.

Routes (the ASGI app sends here every plain HTTP request that is not ``/api/*`` or a health
endpoint; every websocket upgrade, at any path, is a document connection and never comes here):

=====================  ====================================================================
``/``                  the document picker (``index.html``)
``/d/<name>``          the editor for document ``<name>`` (``editor.html``; the page reads the
                       name from its own URL and connects to ``ws://HOST/<name>``)
``/assets/<file>``     the bundle's scripts and styles, content-hashed names
``/sw.js``             the service worker that lets an open document reload while offline
=====================  ====================================================================

Only the files found in the bundle at first use are served, looked up by exact name, so no
request path ever reaches the file system. Pages and ``sw.js`` are revalidated on every load
(``no-cache`` plus an ETag); hashed assets may be cached forever.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.responses import Response

from collab.transport import responses
from collab.transport.types import Receive, Scope, Send

#: Where ``web/build.mjs`` writes the bundle (shipped as package data of ``collab``).
DIST = Path(__file__).resolve().parent.parent / "web" / "dist"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}

#: esbuild's ``[name]-[hash]``: eight base-32 characters before the extension.
HASHED_NAME = re.compile(r"-[A-Z0-9]{8}\.[a-z0-9]+$")

CACHE_FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

#: The pages load only their own scripts and styles and talk only to their own origin (for
#: websockets too: CSP 3 lets 'self' match ws:/wss: on the same host). CodeMirror sets
#: inline styles, hence 'unsafe-inline' for styles only.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: Bodies smaller than this are not worth compressing.
GZIP_MIN_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Representation:
    body: bytes
    etag: str
    encoding: str | None  #: ``Content-Encoding``, or None for identity


@dataclass(frozen=True, slots=True)
class Asset:
    content_type: str
    cache_control: str
    identity: Representation
    gzipped: Representation | None
    is_page: bool

    def choose(self, accept_encoding: str) -> Representation:
        if self.gzipped is not None and accepts_gzip(accept_encoding):
            return self.gzipped
        return self.identity


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an ``Accept-Encoding`` value allows gzip (RFC 9110, Section 12.5.3).

    A ``gzip`` entry decides; without one, ``*`` does.
    """
    weights: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        try:
            weights[coding] = float(q[2:]) > 0 if q.startswith("q=") else True
        except ValueError:
            weights[coding] = False
    return weights.get("gzip", weights.get("*", False))


def load_asset(path: Path, url_path: str) -> Asset:
    """Read one bundle file into memory with everything its responses need."""
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    hashed = url_path.startswith("/assets/") and HASHED_NAME.search(url_path) is not None
    gzipped = None
    compressible = content_type.startswith(("text/", "application/json", "image/svg"))
    if compressible and len(body) >= GZIP_MIN_SIZE:
        # mtime=0 keeps the compressed bytes (and so the ETag's meaning) stable across restarts.
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        if len(packed) < len(body):
            gzipped = Representation(packed, f'"{digest}-gzip"', "gzip")
    return Asset(
        content_type=content_type,
        cache_control=CACHE_FOREVER if hashed else REVALIDATE,
        identity=Representation(body, f'"{digest}"', None),
        gzipped=gzipped,
        is_page=path.suffix == ".html",
    )


def load_bundle(root: Path) -> dict[str, Asset]:
    """Map URL paths (``/index.html``, ``/assets/x-HASH.js``, ...) to the bundle's files."""
    assets: dict[str, Asset] = {}
    if not root.is_dir():
        return assets
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        url_path = "/" + path.relative_to(root).as_posix()
        assets[url_path] = load_asset(path, url_path)
    return assets


def route(path: str) -> str | None:
    """The bundle file that answers a request path, or None for 404."""
    if path == "/":
        return "/index.html"
    if path.startswith("/d/"):
        return "/editor.html"
    if path == "/sw.js":
        return "/sw.js"
    if path.startswith("/assets/") and "/" not in path[len("/assets/") :]:
        return path
    return None


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of an ``If-None-Match`` list with our ETag (RFC 9110, Section 13.1.2)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class StaticFiles:
    """An ASGI app serving the bundle in ``root``, read into memory at first use."""

    def __init__(self, root: Path = DIST) -> None:
        self.root = root
        self._assets: dict[str, Asset] | None = None

    async def assets(self) -> dict[str, Asset]:
        if self._assets is not None:
            return self._assets
        assets = await anyio.to_thread.run_sync(load_bundle, self.root)
        if assets:  # a bundle not built yet is looked for again on the next request
            self._assets = assets
        return assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", "static files answer plain HTTP requests only"
        response = await self.response(scope)
        await responses.respond(response, scope, receive, send)

    async def response(self, scope: Scope) -> Response:
        """The answer to one request for a file of the bundle."""
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return responses.text(405, "method not allowed", {"allow": "GET, HEAD"})
        name = route(scope["path"])
        assets = await self.assets()
        asset = assets.get(name) if name is not None else None
        if asset is None:
            if name in ("/index.html", "/editor.html") and not assets:
                return responses.text(
                    503, "collab's web bundle is missing: run `cd web && npm ci && npm run build`"
                )
            return responses.text(404, "not found")

        request_headers = dict(scope.get("headers") or [])
        accept_encoding = request_headers.get(b"accept-encoding", b"").decode("latin-1")
        chosen = asset.choose(accept_encoding)
        headers = {
            "cache-control": asset.cache_control,
            "etag": chosen.etag,
            "x-content-type-options": "nosniff",
        }
        if asset.gzipped is not None:
            headers["vary"] = "accept-encoding"
        if asset.is_page:
            headers["content-security-policy"] = PAGE_POLICY
            headers["referrer-policy"] = "no-referrer"

        if_none_match = request_headers.get(b"if-none-match")
        if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), chosen.etag):
            return Response(b"", 304, headers)

        headers["content-type"] = asset.content_type
        if chosen.encoding is not None:
            headers["content-encoding"] = chosen.encoding
        return Response(chosen.body, 200, headers)


_default = StaticFiles()


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one plain HTTP request from the bundled web editor (see the module docstring)."""
    await _default(scope, receive, send)
