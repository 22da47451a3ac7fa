"""Malformed requests on every route of a real edge: each refusal is the JSON error shape
(`application/json`, `{"error": {code, message, details}}`), none is a 5xx; a body in a
`Content-Encoding` the edge does not decode is 415.

Requests go out as raw bytes over a socket, one connection each, so nothing a client library
would tidy up (a control character in a header, a bad request line) is lost on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import tarfile
import tempfile
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agentops.config_tables import WorkspaceSettings
from agentops.core.workflow import Stage, WorkflowRecord
from agentops.edge.workspaces import STATUS
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo
from agentops.protocol.messages import StageSpec
from agentops.store.kv import workflow_records
from agentops.workspaces.archives import extract
from tests.integration import test_edge_api as api
from tests.integration.test_edge_api import (
    NOW,
    OVERSIZED,
    TASK,
    Edge,
    MakeEdge,
    agent_state,
    human_thread,
    task_record,
)

pytestmark = pytest.mark.integration

TOKEN = b"s3cret"
TASK_JSON = json.dumps(TASK).encode()
WORKFLOW_JSON = json.dumps(
    {"stages": [{"id": "a", "agent_type": "backend_developer", "description": "x"}]}
).encode()
# The routes that read a JSON body, with a body each accepts.
BODY_ROUTES: tuple[tuple[bytes, bytes], ...] = (
    (b"/tasks", TASK_JSON),
    (b"/tasks/task_t1/messages", b'{"message": "more"}'),
    (b"/workflows", WORKFLOW_JSON),
    (b"/workflows/wf_w1/human-response", b'{"response": "yes"}'),
    (b"/agents/agent_a1/human-response", b'{"response": "Postgres"}'),
)


@pytest.fixture
async def make_edge(nc: Client) -> AsyncIterator[MakeEdge]:
    """The edge app against this test's nats-server (as in test_edge_api.py)."""
    async for make in api.make_edge.__wrapped__(nc):  # type: ignore[attr-defined]
        yield make


@pytest.fixture
async def edge(make_edge: MakeEdge) -> AsyncIterator[Edge]:
    """An edge with a token, short connection bounds, a task, an agent and a workflow
    awaiting a human, and a stand-in for the tool executor's upload check (the real one)."""
    edge = await make_edge(
        api_token=TOKEN.decode(), auth_max_failures=10_000, idle_timeout_s=2.0, body_timeout_s=0.5
    )
    await edge.put_task(task_record())
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    stage = Stage(spec=StageSpec(id="a", agent_type="backend_developer", description="x"))
    gated = WorkflowRecord(
        workflow_id="wf_w1", status="awaiting_human", stages=(stage,), workspace_id="wf_w1",
        gate="a", created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    await workflow_records(edge.buckets).save(gated.workflow_id, gated, 0)
    inspector = await inspect_uploads(edge)
    yield edge
    await inspector.unsubscribe()


async def inspect_uploads(edge: Edge) -> Subscription:
    """Answer the edge's `inspect` requests as the tool executor does: extract the upload."""
    store = await edge.js.object_store(s.UPLOADS_BUCKET)

    async def inspect(msg: Msg) -> None:
        upload_id = json.loads(msg.data)["upload_id"]
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "upload"
            with archive.open("wb") as fh:
                await store.get(upload_id, writeinto=fh)
            try:
                done = await asyncio.to_thread(extract, archive, Path(tmp) / "files")
            except AgentOpsError as exc:
                info = ErrorInfo(code=exc.code, message=exc.message, details=exc.info().details)
                await reply(msg, info.model_dump_json().encode(), "error")
                return
        await reply(msg, json.dumps({"files": done.files, "bytes": done.bytes}).encode(), "ok")

    async def reply(msg: Msg, body: bytes, status: str) -> None:
        await edge.nc.publish(msg.reply, body, headers={STATUS: status})

    return await edge.nc.subscribe(s.workspace_endpoint("inspect"), cb=inspect)


# ---- sending raw requests ----


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    raw: bytes
    half_close: bool = False  # the client stops sending (EOF) after `raw`
    expect: int | None = None  # the one right status, if only one is


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the connection closed without an answer
    content_type: str
    body: bytes


def http(
    method: bytes,
    target: bytes,
    body: bytes = b"",
    headers: Iterable[bytes] = (),
    *,
    auth: bool = True,
    content_type: bytes | None = b"application/json",
    length: int | None = None,
) -> bytes:
    """A request as bytes: Host, the bearer token, Content-Type and Content-Length (of `body`
    unless `length` says otherwise) and `Connection: close`, then `headers` and `body`."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: edge"]
    if auth:
        lines.append(b"Authorization: Bearer " + TOKEN)
    if body and content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    lines += headers
    if not any(h.lower().startswith(b"transfer-encoding:") for h in headers):
        lines.append(b"Content-Length: %d" % (len(body) if length is None else length))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send(port: int, case: Case) -> Answer:
    """Send `case` on a connection of its own; the final answer (1xx skipped), or none."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(case.raw)
            if case.half_close:
                writer.write_eof()
            await writer.drain()

    writing = asyncio.create_task(write())
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, ConnectionError):
                return Answer(None, "", b"")
            except TimeoutError:
                return Answer(None, "", b"no answer in 10 s")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            if status >= 200:
                break
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        else:
            body = await asyncio.wait_for(reader.read(), 10)
        return Answer(status, headers.get("content-type", ""), body)
    finally:
        writing.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def offence(case: Case, answer: Answer) -> str | None:
    """What is wrong with this answer to a malformed request, if anything."""
    if answer.status is None:
        return answer.body.decode() or "closed without an answer"
    if case.expect is not None and answer.status != case.expect:
        return f"{answer.status}, not {case.expect}: {answer.body[:80]!r}"
    if answer.status < 400:
        return None
    media = answer.content_type.split(";")[0].strip().lower()
    if media != "application/json":
        return f"{answer.status} {answer.content_type or 'no Content-Type'}: {answer.body[:60]!r}"
    try:
        error = json.loads(answer.body)["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"{answer.status} not the error shape: {answer.body[:60]!r}"
    if answer.status >= 500:
        return f"{answer.status} {error['code']}"
    return None


# ---- the malformed requests, by class ----


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def tar_gz(names: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in names.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bad_json() -> Iterable[Case]:
    bodies = {
        "syntax": b"{not json",
        "empty": b"",
        "NaN": b'{"a": NaN}',
        "nesting": b"[" * 5000 + b"]" * 5000,
        "not UTF-8": b"\xff\xfe\x00{",
        "trailing data": b'{"a": 1} {"b": 2}',
    }
    for route, _ in BODY_ROUTES:
        for name, body in bodies.items():
            yield Case("bad JSON", f"{name} to {route.decode()}", http(b"POST", route, body))
    lone = TASK_JSON[:-1] + b', "context": {"k": "\\udfff"}}'
    yield Case("bad JSON", "a lone surrogate", http(b"POST", b"/tasks", lone))
    yield Case("bad JSON", "JSON cut short", http(b"POST", b"/tasks", TASK_JSON[:20]))


def wrong_types() -> Iterable[Case]:
    generic = {"array": b"[1, 2]", "string": b'"text"', "null": b"null", "number": b"42"}
    for route, _ in BODY_ROUTES:
        for name, body in generic.items():
            yield Case("JSON of the wrong type", f"{name} to {route.decode()}",
                       http(b"POST", route, body))  # fmt: skip
    fields: dict[str, tuple[bytes, dict[str, Any]]] = {
        "max_steps as a string": (b"/tasks", {**TASK, "max_steps": "5"}),
        "max_steps true": (b"/tasks", {**TASK, "max_steps": True}),
        "budget_usd negative": (b"/tasks", {**TASK, "budget_usd": -1}),
        "context a list": (b"/tasks", {**TASK, "context": [1]}),
        "an unknown field": (b"/tasks", {**TASK, "colour": "red"}),
        "two workspace sources": (
            b"/tasks", {**TASK, "workspace": {"git": {"url": "https://x/y"}, "upload": "u"}}
        ),
        "description too long": (b"/tasks", {**TASK, "description": "x" * 100_001}),
        "stages empty": (b"/workflows", {"stages": []}),
        "a stage id with a newline": (
            b"/workflows", {"stages": [{"id": "a\n", "agent_type": "x", "description": "y"}]}
        ),
        "message blank": (b"/tasks/task_t1/messages", {"message": "   "}),
        "response missing": (b"/agents/agent_a1/human-response", {"request_id": "x"}),
        "request_id a number": (b"/agents/agent_a1/human-response",
                                {"response": 1, "request_id": 5}),
    }  # fmt: skip
    for name, (route, doc) in fields.items():
        yield Case("JSON of the wrong type", name, http(b"POST", route, json.dumps(doc).encode()))


def content_types() -> Iterable[Case]:
    form = b"agent_type=backend_developer&description=x"
    multipart = (
        b'--XX\r\nContent-Disposition: form-data; name="agent_type"\r\n\r\nbackend_developer\r\n'
        b"--XX--\r\n"
    )
    sent = {
        "a form": (b"application/x-www-form-urlencoded", form),
        "multipart form data": (b"multipart/form-data; boundary=XX", multipart),
        "XML": (b"application/xml", b"<task><agent_type>x</agent_type></task>"),
        "no Content-Type, not JSON": (None, b"agent_type: x"),
        "latin-1 JSON": (b"application/json; charset=latin-1",
                         b'{"agent_type": "backend_developer", "description": "caf\xe9"}'),
        "a bad Content-Type, not JSON": (b";;;/;;", b"<<>>"),
        "a non-ASCII Content-Type": (b"application/j\xc3\xa9son", b"{oops"),
        "text to messages": (b"text/plain", b"please continue"),
    }  # fmt: skip
    for name, (kind, body) in sent.items():
        route = b"/tasks/task_t1/messages" if name == "text to messages" else b"/tasks"
        yield Case("wrong Content-Type", name, http(b"POST", route, body, content_type=kind))


def oversize() -> Iterable[Case]:
    big = OVERSIZED.encode()
    for route, _ in BODY_ROUTES:
        yield Case("oversize body", f"over 1 MiB to {route.decode()}", http(b"POST", route, big))
    yield Case("oversize body", "an upload declared over the limit",
               http(b"POST", b"/uploads", b"x" * 10, content_type=b"application/gzip",
                    length=1 << 40), half_close=True)  # fmt: skip
    yield Case("oversize body", "a Content-Length past 2^64",
               http(b"POST", b"/tasks", b"{}", length=10**30))  # fmt: skip


def queries() -> Iterable[Case]:
    targets = [
        b"/tasks?status=sleeping", b"/tasks?limit=0", b"/tasks?limit=501", b"/tasks?limit=ten",
        b"/tasks?offset=-1", b"/tasks?limit=5%0A", b"/tasks?agent_type=bad%20type",
        b"/tasks?limit=%zz", b"/tasks?limit=%00", b"/tasks?offset=1e3",
        b"/agents?status=asleep", b"/agents?limit=99999", b"/agents?offset=%C3%A9",
        b"/workflows?status=x", b"/workflows?limit=-5",
        b"/tasks/task_t1/archive?format=rar", b"/agents/agent_a1/thread?limit=0",
        b"/agents/agent_a1/thread?offset=x",
        b"/ws?since=-1", b"/ws?since=abc", b"/ws?task_id=task_t1%0A", b"/ws?agent_id=%C3%A9",
    ]  # fmt: skip
    for target in targets:
        yield Case("bad query", target.decode(), http(b"GET", target))


def path_ids() -> Iterable[Case]:
    ids = {
        "a trailing newline": b"task_t1%0A",
        "unicode, escaped": b"t%C3%A9",
        "unicode, raw bytes": b"t\xc3\xa9",
        "very long": b"a" * 5000,
        "a NUL": b"a%00b",
        "a space": b"a%20b",
        "dots": b"%2e%2e",
        "an escaped slash": b"a%2Fb",
    }
    routes = [
        (b"GET", b"/tasks/%s"), (b"POST", b"/tasks/%s/cancel"), (b"DELETE", b"/tasks/%s"),
        (b"GET", b"/agents/%s/status"), (b"GET", b"/agents/%s/state"),
        (b"GET", b"/agents/%s/thread"), (b"POST", b"/agents/%s/pause"),
        (b"POST", b"/agents/%s/resume"), (b"GET", b"/workflows/%s"),
        (b"POST", b"/workflows/%s/cancel"), (b"GET", b"/tasks/%s/files"),
        (b"GET", b"/tasks/%s/diff"), (b"GET", b"/tasks/%s/archive"),
    ]  # fmt: skip
    for i, (method, route) in enumerate(routes):  # each route with two of the bad ids
        for name in list(ids)[i % len(ids)], list(ids)[(i + 3) % len(ids)]:
            target = route % ids[name]
            yield Case("bad id in the path", f"{method.decode()} {route.decode()}: {name}",
                       http(method, target))  # fmt: skip
    for name, target in {
        "a file through ..": b"/tasks/nope/files/../../../etc/passwd",
        "a file of a bad id": b"/tasks/task_t1%0A/files/a.txt",
        "a missing dashboard file": b"/ui/nope%0A.js",
    }.items():
        yield Case("bad id in the path", name, http(b"GET", target))


def bad_headers() -> Iterable[Case]:
    keys = {
        "a control character": b"abc\x01def",
        "DEL": b"abc\x7f",
        "an escape sequence": b"\x1b[31mred",
        "too long": b"k" * 300,
        "empty": b"",
        "latin-1 bytes": b"caf\xe9",
    }
    for name, key in keys.items():
        yield Case("bad header", f"Idempotency-Key with {name}",
                   http(b"POST", b"/tasks", TASK_JSON, [b"Idempotency-Key: " + key]))  # fmt: skip
    auths = {
        "missing": None,
        "Basic": b"Basic dXNlcjpwYXNz",
        "Bearer without a token": b"Bearer",
        "a wrong token": b"Bearer wrong",
        "a token with a NUL": b"Bearer s3cret\x00",
        "a token with a newline escape": b"Bearer s3cret\\n",
        "an unknown scheme": b"Digest username=x",
    }
    for name, value in auths.items():
        headers = [] if value is None else [b"Authorization: " + value]
        yield Case("bad header", f"Authorization {name}",
                   http(b"GET", b"/tasks", headers=headers, auth=False))  # fmt: skip
    upgrade = [b"Upgrade: websocket", b"Connection: Upgrade"]
    for name, headers in {
        "a WebSocket without an upgrade": [],
        "a WebSocket upgrade without a key": [*upgrade, b"Sec-WebSocket-Version: 13"],
        "a WebSocket of version 99": [*upgrade, b"Sec-WebSocket-Version: 99",
                                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZQ=="],
        "a WebSocket with a bad bearer protocol": [b"Sec-WebSocket-Protocol: bearer.wrong"],
    }.items():  # fmt: skip
        yield Case("bad header", name, http(b"GET", b"/ws", headers=headers, auth=False))
    yield Case("bad header", "Expect: something else",
               http(b"POST", b"/tasks", TASK_JSON, [b"Expect: 200-ok"]))  # fmt: skip
    yield Case("bad header", "Expect: 100-continue, then a bad body",
               http(b"POST", b"/tasks", b"{bad", [b"Expect: 100-continue"]))  # fmt: skip


def wrong_methods() -> Iterable[Case]:
    sent = [
        (b"PUT", b"/tasks"), (b"PATCH", b"/tasks/task_t1"), (b"DELETE", b"/health"),
        (b"POST", b"/health"), (b"GET", b"/uploads"), (b"PUT", b"/agents/agent_a1/pause"),
        (b"DELETE", b"/ws"), (b"POST", b"/openapi.json"), (b"TRACE", b"/tasks"),
        (b"OPTIONS", b"/tasks"), (b"PROPFIND", b"/tasks"), (b"FOO", b"/tasks"),
        (b"get", b"/tasks"), (b"GET", b"/tasks/task_t1/cancel"),
    ]  # fmt: skip
    for method, target in sent:
        yield Case("wrong method", f"{method.decode()} {target.decode()}", http(method, target))


def truncated() -> Iterable[Case]:
    chunked = [b"Transfer-Encoding: chunked"]
    upload = tar_gz({"a.txt": b"hello"})
    yield Case("truncated body", "Content-Length past what was sent, then EOF",
               http(b"POST", b"/tasks", TASK_JSON[:20], length=100), half_close=True,
               expect=400)  # fmt: skip
    yield Case("truncated body", "Content-Length past what was sent, then nothing",
               http(b"POST", b"/tasks", TASK_JSON[:20], length=100), expect=408)  # fmt: skip
    yield Case("truncated body", "a chunked body without its last chunk, then EOF",
               http(b"POST", b"/tasks", b"10\r\n" + TASK_JSON[:16] + b"\r\n", chunked),
               half_close=True, expect=400)  # fmt: skip
    yield Case("truncated body", "a chunk shorter than its size, then EOF",
               http(b"POST", b"/tasks", b"ff\r\n" + TASK_JSON[:16], chunked), half_close=True,
               expect=400)  # fmt: skip
    yield Case("truncated body", "a chunk size that is no number",
               http(b"POST", b"/tasks", b"zz\r\nabc\r\n0\r\n\r\n", chunked))  # fmt: skip
    yield Case("truncated body", "gzip cut short",
               http(b"POST", b"/tasks", gz(TASK_JSON)[:15], [b"Content-Encoding: gzip"]),
               expect=400)  # fmt: skip
    yield Case("truncated body", "deflate cut short",
               http(b"POST", b"/tasks", zlib.compress(TASK_JSON)[:10],
                    [b"Content-Encoding: deflate"]), expect=400)  # fmt: skip
    yield Case("truncated body", "a Content-Length shorter than the body",
               http(b"POST", b"/tasks", TASK_JSON, length=10))  # fmt: skip
    yield Case("truncated body", "an upload cut short, then EOF",
               http(b"POST", b"/uploads", upload[:30], content_type=b"application/gzip",
                    length=2000), half_close=True, expect=400)  # fmt: skip
    yield Case("truncated body", "an upload cut short, then nothing",
               http(b"POST", b"/uploads", upload[:30], content_type=b"application/gzip",
                    length=2000), expect=408)  # fmt: skip


def bad_uploads() -> Iterable[Case]:
    archive = tar_gz({"a.txt": b"hello"})
    form = (
        b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.tar.gz"\r\n'
        b"Content-Type: application/gzip\r\n\r\n" + archive + b"\r\n--XX--\r\n"
    )
    sent = {
        "a multipart form": (b"multipart/form-data; boundary=XX", form, []),
        "a multipart form without its end": (b"multipart/form-data; boundary=XX", form[:80], []),
        "empty": (b"application/gzip", b"", []),
        "text": (b"text/plain", b"not an archive at all", []),
        "a tar.gz cut short": (b"application/gzip", archive[:40], []),
        "a zip that is only a header": (b"application/zip", b"PK\x03\x04garbage", []),
        "a path out": (b"application/gzip", tar_gz({"../../evil": b"x"}), []),
        "JSON": (b"application/json", TASK_JSON, []),
        "gzip-encoded but not gzip": (b"application/gzip", archive[10:],
                                      [b"Content-Encoding: gzip"]),
        "deflate-encoded but not deflate": (b"application/gzip", b"\xff" * 50,
                                            [b"Content-Encoding: deflate"]),
        "br-encoded": (b"application/gzip", archive, [b"Content-Encoding: br"]),
    }  # fmt: skip
    for name, (kind, body, headers) in sent.items():
        yield Case("bad upload", name,
                   http(b"POST", b"/uploads", body, headers, content_type=kind))  # fmt: skip


UNKNOWN_ENCODINGS: dict[str, bytes] = {
    "zstd": b"zstd",
    "br": b"br",
    "compress": b"compress",
    "a list": b"gzip, zstd",
    "identity then gzip": b"identity, gzip",
    "made up": b"x-squash",
    "with a parameter": b"gzip;q=1",
    "non-ASCII": b"gz\xc3\xadp",
}


def unknown_encodings() -> Iterable[Case]:
    for name, value in UNKNOWN_ENCODINGS.items():
        yield Case("unknown Content-Encoding", f"{name} to /tasks",
                   http(b"POST", b"/tasks", TASK_JSON, [b"Content-Encoding: " + value]),
                   expect=415)  # fmt: skip
    for route, body in BODY_ROUTES[1:]:
        yield Case("unknown Content-Encoding", f"br to {route.decode()}",
                   http(b"POST", route, body, [b"Content-Encoding: br"]), expect=415)  # fmt: skip
    yield Case("unknown Content-Encoding", "zstd to /uploads",
               http(b"POST", b"/uploads", tar_gz({"a.txt": b"hi"}), [b"Content-Encoding: zstd"],
                    content_type=b"application/gzip"), expect=415)  # fmt: skip
    for first, second in (b"gzip", b"zstd"), (b"zstd", b"gzip"):
        yield Case("unknown Content-Encoding", f"two lines: {first.decode()}, {second.decode()}",
                   http(b"POST", b"/tasks", gz(TASK_JSON), [b"Content-Encoding: " + first,
                                                            b"Content-Encoding: " + second]),
                   expect=415)  # fmt: skip


def http_garbage() -> Iterable[Case]:
    host = b"Host: edge\r\n"
    sent = {
        "a request line of one word": b"GARBAGE\r\n\r\n",
        "a method alone": b"GET\r\n\r\n",
        "HTTP/0.9": b"GET /tasks\r\n\r\n",
        "HTTP/9.9": b"GET /tasks HTTP/9.9\r\n" + host + b"\r\n",
        "a header line without a colon": b"GET /tasks HTTP/1.1\r\n" + host + b"Bad Header\r\n\r\n",
        "a space before the colon": b"GET /tasks HTTP/1.1\r\n" + host + b"X-A : b\r\n\r\n",
        "a NUL in a header name": b"GET /tasks HTTP/1.1\r\n" + host + b"X-\x00: b\r\n\r\n",
        "a folded header line": b"GET /tasks HTTP/1.1\r\n" + host + b"X-A: b\r\n c\r\n\r\n",
        "a header line of 10 KB": b"GET /tasks HTTP/1.1\r\n" + host + b"X-A: " + b"b" * 10_000
        + b"\r\n\r\n",
        "300 headers": b"GET /tasks HTTP/1.1\r\n" + host
        + b"".join(b"X-%d: b\r\n" % i for i in range(300)) + b"\r\n",
        "a URI of 9,000 bytes": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + host + b"\r\n",
        "a TLS handshake": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        "the HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "both Content-Length and chunked": b"POST /tasks HTTP/1.1\r\n" + host
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two Content-Lengths": b"POST /tasks HTTP/1.1\r\n" + host
        + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "a Content-Length that is no number": b"POST /tasks HTTP/1.1\r\n" + host
        + b"Content-Length: ten\r\n\r\n",
        "a negative Content-Length": b"POST /tasks HTTP/1.1\r\n" + host
        + b"Content-Length: -1\r\n\r\n",
        "Transfer-Encoding not ending in chunked": b"POST /tasks HTTP/1.1\r\n" + host
        + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "a request target without a slash": b"GET health HTTP/1.1\r\n" + host + b"\r\n",
        "an asterisk target": b"GET * HTTP/1.1\r\n" + host + b"\r\n",
        "bare LF line ends": b"GET /tasks HTTP/1.1\n" + host.replace(b"\r", b"") + b"X\n\n",
        "a CR in the request target": b"GET /hea\rlth HTTP/1.1\r\n" + host + b"\r\n",
    }  # fmt: skip
    for name, raw in sent.items():
        yield Case("HTTP-level garbage", name, raw)


def malformed() -> list[Case]:
    return [
        *bad_json(), *wrong_types(), *content_types(), *oversize(), *queries(), *path_ids(),
        *bad_headers(), *wrong_methods(), *truncated(), *bad_uploads(), *unknown_encodings(),
        *http_garbage(),
    ]  # fmt: skip


async def test_every_malformed_request_is_answered_in_the_json_error_shape(edge: Edge) -> None:
    """Every malformed request is answered: a 4xx in the JSON error shape, or accepted; no 5xx."""
    port = edge.client.port
    assert port is not None
    cases = malformed()
    assert len({(c.kind, c.name) for c in cases}) == len(cases) >= 104
    offenders: list[str] = []
    seen: Counter[tuple[str, str]] = Counter()
    for case in cases:
        answer = await send(port, case)
        wrong = offence(case, answer)
        seen[case.kind, "sent"] += 1
        if wrong is not None:
            seen[case.kind, "wrong"] += 1
            offenders.append(f"{case.kind}: {case.name}: {wrong}")
        elif answer.status is not None and answer.status < 400:
            seen[case.kind, f"{answer.status}"] += 1
    kinds = list(dict.fromkeys(c.kind for c in cases))
    print(f"\n{len(cases)} malformed requests, {len(offenders)} answered wrongly")
    for kind in kinds:
        accepted = {k[1]: n for k, n in seen.items() if k[0] == kind and k[1].isdigit()}
        print(f"  {kind:26} {seen[kind, 'sent']:3} sent, {seen[kind, 'wrong']:3} wrong"
              + (f", accepted {accepted}" if accepted else ""))  # fmt: skip
    for line in offenders:
        print("  offender:", line)
    assert offenders == []


async def test_bodies_in_the_codings_the_edge_decodes_are_accepted(edge: Edge) -> None:
    """identity, gzip, x-gzip, deflate (or raw) and "" are decoded; any other coding is 415."""
    port = edge.client.port
    assert port is not None
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    sent = {
        b"": TASK_JSON,
        b"identity": TASK_JSON,
        b"IDENTITY": TASK_JSON,
        b"gzip": gz(TASK_JSON),
        b"GZip": gz(TASK_JSON),
        b"x-gzip": gz(TASK_JSON),
        b"deflate": zlib.compress(TASK_JSON),
        b"Deflate": raw_deflate.compress(TASK_JSON) + raw_deflate.flush(),
    }
    for coding, body in sent.items():
        sent_as = [b"Content-Encoding: " + coding]
        case = Case("ok", coding.decode(), http(b"POST", b"/tasks", body, sent_as))
        answer = await send(port, case)
        assert answer.status == 201, (coding, answer)
    archive = tar_gz({"a.txt": b"hello"})
    for coding, body in {b"identity": archive, b"gzip": gz(archive)}.items():
        case = Case("ok", "upload", http(b"POST", b"/uploads", body,
                                         [b"Content-Encoding: " + coding],
                                         content_type=b"application/gzip"))  # fmt: skip
        answer = await send(port, case)
        assert answer.status == 201, (coding, answer)
        assert json.loads(answer.body)["size"] == len(archive)
    members = gz(TASK_JSON[:30]) + gz(TASK_JSON[30:])  # as `cat a.gz b.gz` makes
    sent_as = [b"Content-Encoding: gzip"]
    case = Case("ok", "two gzip members", http(b"POST", b"/tasks", members, sent_as))
    assert (await send(port, case)).status == 201
    before = (await edge.js.stream_info(s.WORK_STREAM)).state.messages
    for value in UNKNOWN_ENCODINGS.values():
        case = Case("no", "", http(b"POST", b"/tasks", TASK_JSON, [b"Content-Encoding: " + value]))
        answer = await send(port, case)
        assert answer.status == 415 and offence(case, answer) is None, (value, answer)
        assert json.loads(answer.body)["error"]["code"] == "unsupported_media_type"
    assert (await edge.js.stream_info(s.WORK_STREAM)).state.messages == before


async def test_a_body_is_capped_decoded(make_edge: MakeEdge) -> None:
    """A gzip body or upload that decodes past its cap (a bomb) is 413, decoding stopped there."""
    edge = await make_edge(api_token=TOKEN.decode(), workspaces=WorkspaceSettings(max_upload_mb=1))
    port = edge.client.port
    assert port is not None
    bomb = gz(b'{"description": "' + b"x" * (8 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    case = Case("bomb", "", http(b"POST", b"/tasks", bomb, [b"Content-Encoding: gzip"]))
    answer = await send(port, case)
    assert answer.status == 413 and offence(case, answer) is None, answer
    upload = gz(b"\0" * (2 * 1024 * 1024))
    case = Case("bomb", "", http(b"POST", b"/uploads", upload, [b"Content-Encoding: gzip"],
                                 content_type=b"application/x-tar"))  # fmt: skip
    answer = await send(port, case)
    assert answer.status == 413 and offence(case, answer) is None, answer
    assert b"max_upload_mb" in answer.body


async def test_a_client_that_stops_sending_gets_its_answer_then_the_connection_closes(
    make_edge: MakeEdge,
) -> None:
    """EOF after a request is answered, then closed; EOF with nothing unanswered closes at once."""
    edge = await make_edge(idle_timeout_s=60.0)
    port = edge.client.port
    assert port is not None
    keep_alive = b"GET /agent-types HTTP/1.1\r\nHost: edge\r\n\r\n"
    answer = await send(port, Case("eof", "whole", keep_alive, half_close=True))
    assert answer.status == 200
    for sent in (b"", keep_alive):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(sent)
            if sent:  # answered (kept alive), and only then EOF
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 ")
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 10)  # EOF long before 60 s
            assert sent or rest == b""
        finally:
            writer.close()
