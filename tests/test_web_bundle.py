"""The committed web bundle: served right by transport.static, and rebuilt from web/src."""

from __future__ import annotations

import filecmp
import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from collab.transport import static
from collab.transport.static import DIST, StaticFiles, accepts_gzip

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"

Response = tuple[int, dict[str, str], bytes]


async def request(
    app: StaticFiles, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    """One HTTP request through the ASGI app, no server."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    assert start["type"] == "http.response.start"
    assert body["type"] == "http.response.body"
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, body["body"]


@pytest.fixture(scope="module")
def app() -> StaticFiles:
    return StaticFiles(DIST)


def hashed_assets() -> list[str]:
    return sorted(p.name for p in (DIST / "assets").iterdir())


async def test_root_serves_the_picker_and_never_caches_it(app: StaticFiles) -> None:
    status, headers, body = await request(app, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert b'data-testid="open-form"' in body
    assert "default-src 'self'" in headers["content-security-policy"]


@pytest.mark.parametrize(
    "path", ["/d/notes", "/d/team/weekly%20notes", "/d/caf\u00e9/\u65e5\u672c", "/d/"]
)
async def test_any_path_under_d_serves_the_editor(app: StaticFiles, path: str) -> None:
    status, headers, body = await request(app, path)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert b'data-testid="editor"' in body


async def test_pages_reference_only_existing_hashed_assets(app: StaticFiles) -> None:
    for page in ("/", "/d/x"):
        _, _, body = await request(app, page)
        refs = re.findall(rb'(?:src|href)="(/assets/[^"]+)"', body)
        assert len(refs) == 2, refs  # one script, one stylesheet
        for ref in refs:
            status, headers, _ = await request(app, ref.decode())
            assert status == 200, ref
            assert headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_pages_make_no_external_requests() -> None:
    for page in (DIST / "index.html", DIST / "editor.html"):
        html = page.read_text()
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), page
    for asset in (DIST / "assets").glob("*.css"):
        css = asset.read_text()
        assert "@import" not in css and "url(http" not in css and "url(//" not in css


@pytest.mark.parametrize(
    "suffix, content_type",
    [
        (".js", "text/javascript; charset=utf-8"),
        (".css", "text/css; charset=utf-8"),
    ],
)
async def test_assets_have_content_types(app: StaticFiles, suffix: str, content_type: str) -> None:
    names = [n for n in hashed_assets() if n.endswith(suffix)]
    assert names
    for name in names:
        status, headers, body = await request(app, "/assets/" + name)
        assert status == 200
        assert headers["content-type"] == content_type
        assert headers["x-content-type-options"] == "nosniff"
        assert (
            int(headers["content-length"]) == len(body) == (DIST / "assets" / name).stat().st_size
        )


async def test_service_worker_is_served_at_the_root_and_revalidated(app: StaticFiles) -> None:
    status, headers, body = await request(app, "/sw.js")
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert b"%PRECACHE%" not in body
    for name in hashed_assets():
        assert f"/assets/{name}".encode() in body


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("gzip;q=0", False),
        ("*", True),
        ("*;q=0", False),
        ("*;q=0, gzip", True),  # naming gzip outranks the wildcard, in either order
        ("gzip, *;q=0", True),
        ("gzip;q=0, *", False),
        ("deflate, br", False),
        ("gzip;q=x", False),
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


async def test_gzip_when_accepted(app: StaticFiles) -> None:
    name = max(hashed_assets(), key=lambda n: (DIST / "assets" / n).stat().st_size)
    plain_status, plain_headers, plain = await request(app, "/assets/" + name)
    status, headers, packed = await request(
        app, "/assets/" + name, headers={"Accept-Encoding": "gzip, deflate, br"}
    )
    assert plain_status == status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "accept-encoding"
    assert "content-encoding" not in plain_headers
    assert headers["etag"] != plain_headers["etag"]
    assert gzip.decompress(packed) == plain
    _, refused, _ = await request(app, "/assets/" + name, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused


async def test_head_sends_headers_without_body(app: StaticFiles) -> None:
    _, get_headers, get_body = await request(app, "/")
    status, headers, body = await request(app, "/", method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["content-length"] == str(len(get_body)) == get_headers["content-length"]
    status, _, body = await request(app, "/nope", method="HEAD")
    assert (status, body) == (404, b"")


async def test_etag_revalidation_answers_304(app: StaticFiles) -> None:
    _, headers, _ = await request(app, "/d/notes")
    status, again, body = await request(app, "/d/notes", headers={"If-None-Match": headers["etag"]})
    assert status == 304
    assert body == b""
    assert again["etag"] == headers["etag"]
    weak = "W/" + headers["etag"]
    status, _, _ = await request(app, "/d/notes", headers={"If-None-Match": f'"other", {weak}'})
    assert status == 304
    status, _, _ = await request(app, "/d/notes", headers={"If-None-Match": '"other"'})
    assert status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_refused(app: StaticFiles, method: str) -> None:
    status, headers, body = await request(app, "/", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../editor.html",
        "/assets/../../transport/static.py",
        "/assets/%2e%2e/index.html",
        "/assets/",
        "/assets/nope.js",
        "/assets//etc/passwd",
        "/../../pyproject.toml",
        "/index.html/..",
        "/editor.html",
        "/d",
        "/favicon.ico",
        "/etc/passwd",
        "//etc/passwd",
    ],
)
async def test_unknown_paths_and_traversal_are_404(app: StaticFiles, path: str) -> None:
    status, headers, body = await request(app, path)
    assert status == 404
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"not found\n"


async def test_dotfiles_in_the_bundle_are_not_served(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / ".secret-ABCDEFGH.js").write_text("x")
    (tmp_path / "index.html").write_text("<p>hi</p>")
    app = StaticFiles(tmp_path)
    assert (await request(app, "/assets/.secret-ABCDEFGH.js"))[0] == 404
    assert (await request(app, "/"))[0] == 200


async def test_missing_bundle_says_how_to_build_it(tmp_path: Path) -> None:
    app = StaticFiles(tmp_path / "nothing")
    status, _, body = await request(app, "/d/notes")
    assert status == 503
    assert b"npm run build" in body
    assert (await request(app, "/assets/x-ABCDEFGH.js"))[0] == 404


async def test_a_bundle_built_after_the_first_request_is_served(tmp_path: Path) -> None:
    app = StaticFiles(tmp_path / "dist")
    assert (await request(app, "/d/notes"))[0] == 503
    shutil.copytree(DIST, tmp_path / "dist")  # `npm run build` while the server runs
    assert (await request(app, "/d/notes"))[0] == 200


async def test_module_level_handle_serves_the_bundle() -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await static.handle(scope, receive, send)
    assert sent[0]["status"] == 200


def dir_listing(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


@pytest.mark.node
def test_committed_bundle_matches_its_sources(tmp_path: Path) -> None:
    """Rebuild web/src into a temporary folder: it must equal collab/web/dist byte for byte."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to rebuild the web bundle (apt-get install nodejs npm)"
    env = {**os.environ, "npm_config_update_notifier": "false"}
    lock = WEB / "package-lock.json"
    installed = WEB / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=WEB,
            env=env,
            check=True,
            timeout=300,
        )
    out = tmp_path / "dist"
    subprocess.run(["node", "build.mjs", str(out)], cwd=WEB, env=env, check=True, timeout=120)

    fix = "run `cd web && npm ci && npm run build` and commit collab/web/dist"
    built, committed = dir_listing(out), dir_listing(DIST)
    assert built == committed, f"web bundle files differ from web/src: {fix}"
    _, mismatch, errors = filecmp.cmpfiles(out, DIST, built, shallow=False)
    assert not mismatch and not errors, f"web bundle differs from web/src ({mismatch}): {fix}"
