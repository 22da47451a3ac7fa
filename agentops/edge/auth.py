"""Bearer-token authentication for the edge (`AGENTOPS_API_TOKEN`).

Rules:
- No token configured: everything is open (the local default).
- Token configured: every request needs `Authorization: Bearer <token>`, except `GET /health`
  and `GET /metrics` (probes and scrapers), the dashboard, `GET /` and its static files
  under `GET /ui/`, and the API's description, `GET /openapi.json`, `GET /docs` and its
  files under `GET /docs/` (they hold no data).
  The WebSocket may pass `?token=` instead, since browsers cannot set headers on a WebSocket
  handshake.
- Tokens are compared in constant time; a missing or wrong token is 401 with
  `WWW-Authenticate: Bearer`, and the reason never says which part was wrong.
"""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from agentops.edge.context import CONFIG
from agentops.edge.errors import ApiError

EXEMPT: frozenset[tuple[str, str]] = frozenset(
    (method, path)
    for method in ("GET", "HEAD")
    for path in ("/", "/health", "/metrics", "/openapi.json", "/docs")
)
WS_PATH = "/ws"
PUBLIC_PREFIXES = ("/ui/", "/docs/")  # the dashboard's and the API docs' static files


def _exempt(request: web.Request) -> bool:
    if (request.method, request.path) in EXEMPT:
        return True
    return request.method in ("GET", "HEAD") and request.path.startswith(PUBLIC_PREFIXES)


def _presented(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path == WS_PATH:
        return request.query.get("token") or None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONFIG].api_token
    if token and not _exempt(request):
        presented = _presented(request)
        # Bytes that are not UTF-8 arrive as lone surrogates; they cannot match a token.
        sent = None if presented is None else presented.encode("utf-8", "surrogatepass")
        if sent is None or not hmac.compare_digest(sent, token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API token (send Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)
