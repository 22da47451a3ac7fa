"""The dashboard: a static page and its ES modules, served from package data (`edge/ui/`).

Rules:
- Nothing is built at install time or fetched at run time: the files in `agentops/edge/ui/`
  are the dashboard, read once at import and served from memory.
- The page and its assets hold no data (everything comes from the API with the user's
  token), so they are served without auth (`auth.py` exempts `GET /` and `GET /ui/...`).
- CSP: scripts and styles only from this origin's files (no inline code, no eval),
  connections (fetch, WebSocket) only to this origin, nothing framed, no form posts.
- Each asset carries an ETag (a digest of its bytes) and `Cache-Control: no-cache`: the
  browser revalidates and gets a 304 while the file is unchanged, and sees an upgrade at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from agentops.edge.apispec import Resp, operation

UI_PACKAGE_DIR = "ui"
UI_PREFIX = "/ui/"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(directory: str = UI_PACKAGE_DIR) -> dict[str, Asset]:
    """Every file of `edge/<directory>/` with a known type, by file name."""
    out: dict[str, Asset] = {}
    for entry in resources.files("agentops.edge").joinpath(directory).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        out[entry.name] = Asset(body=body, content_type=CONTENT_TYPES[suffix], etag=etag)
    return out


ASSETS = load_assets()
_TEXT = {"type": "string"}


def serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {**HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


@operation(
    "The dashboard", "dashboard", {200: Resp("the dashboard's page", media={"text/html": _TEXT}),
                                   304: Resp("unchanged since the ETag sent in If-None-Match")},
    public=True, bus=False,
)  # fmt: skip
async def index(request: web.Request) -> web.Response:
    """`GET /`: the dashboard page."""
    return serve(request, ASSETS[INDEX])


def serve_named(request: web.Request, assets: dict[str, Asset]) -> web.Response:
    """The asset `{name}` of the path, or 404."""
    found = assets.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    return serve(request, found)


FILE_ANSWERS = {
    200: Resp("the file (a module, a stylesheet, an icon)", media={"*/*": _TEXT}),
    304: Resp("unchanged since the ETag sent in If-None-Match"),
}


@operation(
    "A file of the dashboard", "dashboard", FILE_ANSWERS, {404: "no such file"},
    public=True, bus=False,
)  # fmt: skip
async def asset(request: web.Request) -> web.Response:
    """`GET /ui/{name}`: one of the page's modules or its stylesheet."""
    return serve_named(request, ASSETS)


def routes() -> list[web.RouteDef]:
    return [web.get("/", index), web.get(UI_PREFIX + "{name}", asset)]
