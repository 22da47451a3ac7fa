"""`/openapi.json` and `/docs`: every route described, real answers valid against the document,
served without a token, and a route without a declaration refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from agentops.core.state import ToolResultItem
from agentops.edge.apispec import op_of
from agentops.edge.app import create_app
from agentops.edge.openapi import MissingSpec, build_document
from agentops.protocol.errors import ErrorInfo
from tests.integration import test_edge_api
from tests.integration.test_edge_api import (
    NOW,
    TASK,
    Edge,
    MakeEdge,
    agent_state,
    human_thread,
    task_record,
)

pytestmark = pytest.mark.integration
make_edge = test_edge_api.make_edge  # the edge API tests' fixture: an app on its own server
edge = test_edge_api.edge

DOCS = Path(__file__).resolve().parents[2] / "agentops" / "edge" / "docs"


def offline_app() -> web.Application:
    """The app's routes alone (nothing is connected until it serves)."""
    return create_app(None, None, {})  # type: ignore[arg-type]


def answer_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema of one answer, resolvable against the document's components."""
    content = doc["paths"][path][method]["responses"][str(status)]["content"]
    return {**content["application/json"]["schema"], "components": doc["components"]}


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    schema = answer_schema(doc, path, method, status)
    jsonschema.Draft202012Validator(schema).validate(body)


def test_every_route_of_the_app_is_a_documented_operation() -> None:
    """The document's operations are exactly the app's routes (HEAD, added by aiohttp per
    GET, aside), each with a summary, answers and the error shape for its errors."""
    app = offline_app()
    doc = build_document(app)
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == routes
    assert doc["openapi"] == "3.1.0"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (method, path)
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    schema = resp["content"]["application/json"]["schema"]
                    assert "ErrorBody" in str(schema), (method, path, status)
            named = set(re.findall(r"{([^}]+)}", path))
            assert named == {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}


def test_a_route_without_a_declaration_cannot_be_documented() -> None:
    """Adding a route whose handler has no @operation makes building the document fail,
    naming the route."""
    app = offline_app()

    async def undocumented(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/new-thing", undocumented)
    assert op_of(undocumented) is None
    with pytest.raises(MissingSpec, match="GET /new-thing"):
        build_document(app)


def test_bodies_are_the_models_the_edge_validates_with() -> None:
    """POST /tasks's body schema is CreateTask's own: strict fields, unknown ones refused."""
    doc = build_document(offline_app())
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/CreateTask"}
    create = doc["components"]["schemas"]["CreateTask"]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"agent_type", "description"}
    assert create["properties"]["max_steps"]["anyOf"][0]["maximum"] == 10_000
    limit = next(p for p in doc["paths"]["/tasks"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500


async def test_real_answers_validate_against_the_document(edge: Edge) -> None:
    """Tasks, agents (status, state, thread), health, agent types and errors as the edge
    really answers them fit the document's schemas."""
    doc = await (await edge.client.get("/openapi.json")).json()
    failed = ToolResultItem(
        at=NOW, step=2, call_id="c", name="write_file", ok=False,
        error=ErrorInfo(code="denied", message="no"),
    )  # fmt: skip
    await edge.put_agent(agent_state(status="awaiting_human", thread=(*human_thread(), failed)))
    await edge.put_task(task_record())
    await edge.put_task(task_record("task_t2", "agent_a2", status="completed"))
    reads = {
        ("/tasks", "/tasks"): 200,
        ("/tasks/{task_id}", "/tasks/task_t1"): 200,
        ("/tasks/{task_id}", "/tasks/task_t2"): 200,
        ("/agents", "/agents"): 200,
        ("/agents/{agent_id}/status", "/agents/agent_a1/status"): 200,
        ("/agents/{agent_id}/state", "/agents/agent_a1/state"): 200,
        ("/agents/{agent_id}/thread", "/agents/agent_a1/thread?limit=2&offset=1"): 200,
        ("/agent-types", "/agent-types"): 200,
        ("/workflows", "/workflows"): 200,
        ("/health", "/health"): 503,  # no other process runs in this test
        ("/tasks/{task_id}", "/tasks/task_nope"): 404,
        ("/tasks", "/tasks?limit=0"): 400,
        ("/agents/{agent_id}/status", "/agents/agent_nope/status"): 404,
    }
    for (template, url), status in reads.items():
        resp = await edge.client.get(url)
        assert resp.status == status, url
        check(doc, template, "get", status, await resp.json())
    posts = {
        "/tasks": ({**TASK, "max_steps": 0}, 422),
        "/agents/{agent_id}/pause": (None, 202),  # nobody confirms here
    }
    created = await edge.client.post("/tasks", json=TASK)
    assert created.status == 201
    check(doc, "/tasks", "post", 201, await created.json())
    for template, (body, status) in posts.items():
        resp = await edge.client.post(template.replace("{agent_id}", "agent_a1"), json=body)
        assert resp.status == status, template
        check(doc, template, "post", status, await resp.json())
    bad = await edge.client.post("/tasks", data=b"{nope")
    check(doc, "/tasks", "post", 400, await bad.json())


async def test_document_and_docs_page_need_no_token_and_revalidate(make_edge: MakeEdge) -> None:
    """With a token set, /openapi.json, /docs and its files load without it; the document
    carries an ETag (304 when unchanged) and the page the dashboard's CSP."""
    edge = await make_edge(api_token="s3cret")
    first = await edge.client.get("/openapi.json")
    assert first.status == 200 and first.content_type == "application/json"
    again = await edge.client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    page = await edge.client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    html = await page.text()
    assert "<script>" not in html and "style=" not in html
    for asset in re.findall(r'(?:href|src)="(/docs/[^"]+)"', html):
        assert (await edge.client.get(asset)).status == 200, asset
    assert (await edge.client.get("/docs/nope.js")).status == 404
    assert (await edge.client.get("/tasks")).status == 401
    doc = await first.json()
    public = {p for p, item in doc["paths"].items() if item.get("get", {}).get("security") == []}
    assert {"/openapi.json", "/docs", "/health", "/metrics", "/"} <= public
    assert "/tasks" not in public


def test_docs_page_renders_the_document_as_text_only() -> None:
    """The docs module builds the page with textContent only and fetches nothing but the
    document (no markup from strings, no other origin)."""
    source = (DOCS / "docs.js").read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in source, banned
    assert re.findall(r'fetch\("([^"]+)"', source) == ["/openapi.json"]
    assert not re.search(r"https?://", source)


def test_docs_module_parses(tmp_path: Path) -> None:
    """The docs module is valid JavaScript (checked with node as an ES module, when installed)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    copy = tmp_path / "docs.mjs"
    copy.write_text((DOCS / "docs.js").read_text())
    check = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


async def test_an_id_with_a_trailing_newline_is_not_found_not_unavailable(edge: Edge) -> None:
    """Schemathesis found it: `agent_x\\n` passed the id check (`$` allows a final newline)
    and reached NATS as a subject, answering 503; ids are matched whole now: 404."""
    for url in ("/agents/g%0A/status", "/tasks/t%0A", "/workflows/wf_x%0A"):
        resp = await edge.client.get(url)
        assert resp.status == 404, url
    resp = await edge.client.post("/agents/g%0A/human-response", json={"response": 1})
    assert resp.status == 404
    resp = await edge.client.get("/tasks?limit=5%0A")
    assert resp.status == 400
