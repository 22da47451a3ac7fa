"""`GET /openapi.json` (OpenAPI 3.1, built from the routes' own declarations) and `GET /docs`.

Rules:
- The document is built from the app's route table: each route's handler carries its `Op`
  (`edge/apispec.py`); a route without one is an error at build time, never a silent gap.
  HEAD routes (aiohttp adds one per GET) are not listed.
- Schemas come from the pydantic models the edge validates requests with and describes its
  answers with (`edge/responses.py`), by `model_json_schema`; their `$defs` move to
  `components/schemas` (two different schemas under one name is an error).
- It is built once per app, on first request, and served with an ETag; it holds no data,
  so it needs no token (nor does `/docs`).
- `/docs` is a small page of our own (`edge/docs/`: plain ES module, no CDN, nothing fetched
  but `/openapi.json`) that renders the document, under the dashboard's CSP.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from agentops import __version__
from agentops.edge import dashboard
from agentops.edge.apispec import PATH_PARAMS, Op, Param, Resp, op_of, operation
from agentops.edge.responses import ErrorBody

REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": REF.format(model="ErrorBody")}
DOCS_DIR = "docs"
DOCS_PREFIX = "/docs/"
DOCS_ASSETS = dashboard.load_assets(DOCS_DIR)

# What every route of a kind may answer (apispec's rules).
UNAUTHORIZED = "missing or invalid API token (only when the edge has tokens configured)"
FORBIDDEN = (
    "the token's role is not enough (`details`: `{needed, role}`; viewer < operator < admin)"
)
RATE_LIMITED = "too many failed authentication attempts from this address (`Retry-After`)"
UNAVAILABLE = "NATS, or the process that would answer, is away: retry (check first, for a write)"
INVALID_JSON = "the body is not JSON (`invalid_json`) or cannot be read (`invalid_body`)"
TOO_LARGE = "the body is over the edge's limit (1 MiB)"
UNSUPPORTED_ENCODING = (
    "the body's `Content-Encoding` is not one of identity, gzip (x-gzip), deflate"
)
SLOW_BODY = "no byte of the body for the edge's body timeout (`request_timeout`); closed after"
INVALID_BODY = "the JSON does not fit the schema: `details` is `[{field, message}]`"

INFO = {
    "title": "AgentOps",
    "version": __version__,
    "description": (
        "The control plane's HTTP API. JSON everywhere; every error is "
        '`{"error": {"code", "message", "details"}}` with a fitting status. With '
        "`AGENTOPS_API_TOKEN` set, every route not marked public needs "
        "`Authorization: Bearer <token>`. Commands are confirmed by reading back what the "
        "process that owns the record wrote; not confirmed in time is a 202 (on its way)."
    ),
}


class MissingSpec(RuntimeError):
    """A route whose handler does not declare its operation."""


class Components:
    """The document's `components/schemas`, filled as models are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self._add(name, sub)
        self._add(model.__name__, schema)
        return {"$ref": REF.format(model=model.__name__)}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        known = self.schemas.setdefault(name, schema)
        if known != schema:
            raise ValueError(f"two different schemas are named {name!r}")


def _param(p: Param) -> dict[str, Any]:
    out = {"name": p.name, "in": p.location, "description": p.description, "schema": p.schema}
    return out | ({"required": True} if p.required else {})


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for name in re.findall(r"{([^}:]+)", path):
        schema, description = PATH_PARAMS[name]
        out.append(
            {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
        )  # fmt: skip
    return out


def _content(resp: Resp, components: Components) -> dict[str, Any]:
    if resp.model is not None:
        schema = components.ref(resp.model)
        if resp.also_error:
            schema = {"anyOf": [schema, ERROR_REF]}
        return {"application/json": {"schema": schema}}
    return {media: {"schema": schema} for media, schema in resp.media.items()}


def _responses(op: Op, components: Components) -> dict[str, Any]:
    errors = dict(op.errors)
    if not op.public:
        errors.setdefault(401, UNAUTHORIZED)
        errors.setdefault(403, FORBIDDEN)
        errors.setdefault(429, RATE_LIMITED)
    if op.body is not None:
        errors.setdefault(400, INVALID_JSON)
        errors.setdefault(413, TOO_LARGE)
        errors.setdefault(422, INVALID_BODY)
    if op.body is not None or op.raw_body is not None:
        errors.setdefault(415, UNSUPPORTED_ENCODING)
        errors.setdefault(408, SLOW_BODY)
    if op.bus:
        errors.setdefault(503, UNAVAILABLE)
    out: dict[str, Any] = {}
    for status, resp in op.responses.items():
        entry: dict[str, Any] = {"description": resp.description}
        content = _content(resp, components)
        if content:
            entry["content"] = content
        if resp.headers:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in resp.headers.items()
            }
        out[str(status)] = entry
    components.ref(ErrorBody)
    for status, when in sorted(errors.items()):
        if str(status) in out:  # a success shape that may also be an error (health's 503)
            continue
        out[str(status)] = {
            "description": when,
            "content": {"application/json": {"schema": ERROR_REF}},
        }
    return out


def _operation(op: Op, method: str, path: str, components: Components) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    params = _path_params(path) + [_param(p) for p in op.params]
    if params:
        out["parameters"] = params
    if op.body is not None:
        schema = components.ref(op.body)
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    elif op.raw_body is not None:
        content = {media: {"schema": schema} for media, schema in op.raw_body.items()}
        out["requestBody"] = {"required": True, "content": content}
    out["responses"] = _responses(op, components)
    if op.public:
        out["security"] = []
    return out


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of `app` (MissingSpec names one without)."""
    components = Components()
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        path = route.resource.canonical
        op = op_of(route.handler)
        if op is None:
            raise MissingSpec(f"{route.method} {path}: its handler has no @operation")
        paths.setdefault(path, {})[route.method.lower()] = _operation(
            op, route.method, path, components
        )
        if op.tag not in tags:
            tags.append(op.tag)
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


DOCUMENT = web.AppKey("openapi_document", dict)  # {"body": bytes, "etag": str} once built


def _document(app: web.Application) -> dict[str, Any]:
    cached: dict[str, Any] = app[DOCUMENT]
    if not cached:
        body = json.dumps(build_document(app), separators=(",", ":")).encode()
        cached.update(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return cached


def setup(app: web.Application) -> None:
    app[DOCUMENT] = {}


_OPENAPI = {"application/json": {"type": "object", "description": "an OpenAPI 3.1 document"}}
_HTML = {"text/html": {"type": "string"}}


@operation(
    "This document", "meta",
    {200: Resp("the OpenAPI 3.1 document of this API", media=_OPENAPI),
     304: Resp("unchanged since the ETag sent in If-None-Match")},
    public=True, bus=False,
)  # fmt: skip
async def openapi_json(request: web.Request) -> web.Response:
    """Built once from the routes' declarations; revalidate with its ETag."""
    doc = _document(request.app)
    headers = {"ETag": doc["etag"], "Cache-Control": "no-cache"}
    if doc["etag"] in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc["body"], content_type="application/json", headers=headers)


@operation(
    "API documentation page", "meta", {200: Resp("a page that renders /openapi.json", media=_HTML)},
    public=True, bus=False,
)  # fmt: skip
async def docs_page(request: web.Request) -> web.Response:
    """The API documentation, rendered in the browser from `/openapi.json`."""
    return dashboard.serve(request, DOCS_ASSETS["index.html"])


@operation(
    "A file of the documentation page", "meta", dashboard.FILE_ANSWERS, {404: "no such file"},
    public=True, bus=False,
)  # fmt: skip
async def docs_asset(request: web.Request) -> web.Response:
    """The documentation page's script and stylesheet."""
    return dashboard.serve_named(request, DOCS_ASSETS)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/openapi.json", openapi_json),
        web.get("/docs", docs_page),
        web.get(DOCS_PREFIX + "{name}", docs_asset),
    ]
