"""Code in, results out (DESIGN §4b): uploads, and a task's files, diff and archive.

Rules:
- The tool executor owns workspaces; the edge asks it over NATS (`agentops.workspace.<op>`,
  `services/workspaces.py`) and moves bytes a chunk at a time (at most 1 MiB a request), so
  neither a large file, a diff nor an archive is ever one message or one buffer here: each
  chunk is written to the HTTP response as it arrives.
- An upload is streamed to a temporary file, decoded from its Content-Encoding as any body
  (`schemas.body_chunks`; over `[workspaces] max_upload_mb` decoded: 413), stored
  in the `agentops_uploads` object store, then inspected by the executor, which extracts it
  and names the entry that makes it unsafe (422, and the upload is deleted). Kept 24 h.
- A file is served with a sandboxing CSP and `nosniff`, so a page an agent wrote cannot run
  as the API's origin.
- The executor not answering is 503 `unavailable` (it is restarting, or not running).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats.errors
from aiohttp import web
from nats.js.errors import NotFoundError

from agentops.core.state import TaskRecord
from agentops.edge import responses as r
from agentops.edge.apispec import INVALID_QUERY, Param, Resp, json_resp, operation
from agentops.edge.context import BUS, CONFIG, Bus
from agentops.edge.data import get_task
from agentops.edge.errors import ApiError, bad_request, checked_id
from agentops.edge.schemas import body_chunks
from agentops.protocol import subjects as s
from agentops.protocol.messages import TERMINAL

STATUS = "Agentops-Status"
SIZE = "Agentops-Size"
CHUNK = 1024 * 1024
ASK_TIMEOUT_S = 30.0
EXPORT_TIMEOUT_S = 300.0
UPLOAD_TTL = timedelta(hours=24)
FILE_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
# Error codes of the executor and the HTTP status they are for the client.
_STATUS_OF = {
    "not_found": 404,
    "workspace_missing": 404,
    "unknown_upload": 404,
    "bad_request": 400,
    "invalid_workspace_id": 404,
}
ARCHIVE_CODES = frozenset(
    {
        "not_an_archive", "absolute_path", "path_traversal", "link_outside", "special_file",
        "encrypted_entry", "too_many_entries", "too_large", "compression_ratio",
        "invalid_entry", "corrupt_archive",
    }
)  # fmt: skip


async def ask(bus: Bus, op: str, request: dict[str, Any], timeout: float = ASK_TIMEOUT_S) -> Any:
    """One workspace request to the tool executor: (body, headers), or an `ApiError`."""
    try:
        reply = await bus.nc.request(
            s.workspace_endpoint(op), json.dumps(request).encode(), timeout=timeout
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise ApiError(
            503, "unavailable", "the tool executor did not answer (is it running?); retry"
        ) from None
    headers = reply.headers or {}
    if headers.get(STATUS) != "error":
        return reply.data, headers
    error = json.loads(reply.data)
    code = str(error.get("code", "error"))
    status = _STATUS_OF.get(code, 422 if code in ARCHIVE_CODES else 500)
    if status == 500:
        status, code = 503, "unavailable"
    raise ApiError(status, code, str(error.get("message", "")), error.get("details"))


async def _task(request: web.Request) -> tuple[Bus, TaskRecord, str]:
    bus = request.app[BUS]
    record = await get_task(bus, checked_id(request.match_info["task_id"], "task"))
    return bus, record, record.workspace_id or record.task_id


_BYTES = {"type": "string", "format": "binary"}
NO_EXECUTOR = "the tool executor did not answer (is it running?)"


@operation(
    "A task's files", "workspaces",
    {200: json_resp(r.FileList, "the workspace's regular files, sorted by path")},
    {404: "no such task"},
)  # fmt: skip
async def list_files(request: web.Request) -> web.Response:
    """`GET /tasks/{id}/files`: `{files: [{path, size, modified}], truncated}`."""
    bus, record, workspace = await _task(request)
    try:
        body, _ = await ask(bus, "files", {"workspace_id": workspace})
    except ApiError as exc:
        if exc.code != "workspace_missing":
            raise
        return web.json_response({"task_id": record.task_id, "files": [], "truncated": False})
    return web.json_response({"task_id": record.task_id, **json.loads(body)})


@operation(
    "One file's bytes", "workspaces",
    {200: Resp("the file, its type guessed from its name", media={"*/*": _BYTES})},
    {400: "a path the workspace refuses", 404: "no such task, file or workspace (or a path "
     "outside it, or through a link out)"},
)  # fmt: skip
async def get_file(request: web.Request) -> web.StreamResponse:
    """`GET /tasks/{id}/files/{path}`: the file's bytes, a chunk at a time."""
    bus, _, workspace = await _task(request)
    path = request.match_info["path"]
    first, headers = await ask(bus, "read", _read(workspace, path, 0))
    size = int(headers.get(SIZE, len(first)))
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    name = Path(path).name.replace('"', "")
    disposition = "inline" if kind.startswith("text/") else "attachment"
    response = web.StreamResponse(
        headers={
            **FILE_HEADERS,
            "Content-Type": kind,
            "Content-Length": str(size),
            "Content-Disposition": f'{disposition}; filename="{name}"',
        }
    )
    await response.prepare(request)
    await response.write(first)
    offset = len(first)
    while offset < size:
        data, _ = await ask(bus, "read", _read(workspace, path, offset))
        if not data:
            break
        await response.write(data)
        offset += len(data)
    await response.write_eof()
    return response


def _read(workspace: str, path: str, offset: int) -> dict[str, Any]:
    return {"workspace_id": workspace, "path": path, "offset": offset, "length": CHUNK}


@operation(
    "The task's work as a unified diff", "workspaces",
    {200: Resp("from the task's base", media={"text/x-diff": {"type": "string"}})},
    {404: "no such task or workspace"},
)  # fmt: skip
async def get_diff(request: web.Request) -> web.StreamResponse:
    """`GET /tasks/{id}/diff`: the unified diff of the task's work, `base..head` once the
    task ended and was committed, `base..`the work tree while it runs."""
    bus, record, workspace = await _task(request)
    head = record.head if record.status in TERMINAL else None
    spec = {"workspace_id": workspace, "kind": "diff", "base": record.base, "head": head}
    return await _export(request, bus, spec, "text/x-diff; charset=utf-8", None)


@operation(
    "The workspace as an archive", "workspaces",
    {200: Resp("the workspace without .git, streamed",
               media={"application/gzip": _BYTES, "application/zip": _BYTES})},
    {400: INVALID_QUERY, 404: "no such task or workspace"},
    params=(Param("format", {"type": "string", "enum": ["tar.gz", "zip"], "default": "tar.gz"},
                  "the archive's format"),),
)  # fmt: skip
async def get_archive(request: web.Request) -> web.StreamResponse:
    """`GET /tasks/{id}/archive?format=tar.gz|zip`: the workspace without `.git`."""
    bus, record, workspace = await _task(request)
    fmt = request.query.get("format", "tar.gz")
    if fmt not in ("tar.gz", "zip"):
        raise bad_request(
            "invalid query parameter 'format': must be tar.gz or zip",
            [{"field": "format", "message": "must be tar.gz or zip"}],
            code="invalid_query",
        )
    kind = "application/gzip" if fmt == "tar.gz" else "application/zip"
    spec = {"workspace_id": workspace, "kind": fmt}
    return await _export(request, bus, spec, kind, f"{record.task_id}.{fmt}")


async def _export(
    request: web.Request, bus: Bus, spec: dict[str, Any], kind: str, filename: str | None
) -> web.StreamResponse:
    body, _ = await ask(bus, "export", spec, timeout=EXPORT_TIMEOUT_S)
    made = json.loads(body)
    headers = {"Content-Type": kind, "Content-Length": str(made["size"])}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    async for chunk in _fetched(bus, made["token"], made["size"]):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _fetched(bus: Bus, token: str, size: int) -> AsyncIterator[bytes]:
    offset = 0
    while offset < size:
        data, _ = await ask(bus, "fetch", {"token": token, "offset": offset, "length": CHUNK})
        if not data:
            return
        yield data
        offset += len(data)


@operation(
    "Upload an archive to start a workspace from", "workspaces",
    {201: json_resp(r.UploadCreated, "stored and checked; kept 24 h")},
    {400: "an empty body (`empty_upload`) or one that cannot be read (`invalid_body`)",
     413: "over `[workspaces] max_upload_mb`",
     422: "not an archive, or an unsafe entry (named in the message)"},
    raw_body={"application/octet-stream": _BYTES, "application/gzip": _BYTES,
              "application/zip": _BYTES},
)  # fmt: skip
async def upload(request: web.Request) -> web.Response:
    """`POST /uploads` (a `.tar.gz` or `.zip` body) → 201 `{upload_id, size, files,
    expires_at}`; the archive is checked now, so a bad entry is a 422 naming it."""
    bus = request.app[BUS]
    limit = request.app[CONFIG].workspaces.max_upload_mb * 1024 * 1024
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    upload_id = f"upload_{uuid.uuid4().hex[:20]}"
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for chunk in body_chunks(request, limit, lambda: _too_large(limit)):
            size += len(chunk)
            spool.write(chunk)
        if size == 0:
            raise bad_request(
                "the upload is empty: send a .tar.gz or .zip body", code="empty_upload"
            )
        spool.seek(0)
        store = await bus.js.object_store(s.UPLOADS_BUCKET)
        await store.put(upload_id, spool)
    try:
        body, _ = await ask(bus, "inspect", {"upload_id": upload_id}, timeout=EXPORT_TIMEOUT_S)
    except ApiError:
        with contextlib.suppress(NotFoundError):
            await store.delete(upload_id)
        raise
    inspected = json.loads(body)
    expires = datetime.now(UTC) + UPLOAD_TTL
    out = {
        "upload_id": upload_id,
        "size": size,
        "files": inspected["files"],
        "expires_at": expires.isoformat(timespec="seconds"),
    }
    return web.json_response(out, status=201)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"uploads are limited to {limit // (1024 * 1024)} MB "
        "([workspaces] max_upload_mb)",
    )  # fmt: skip


async def upload_exists(bus: Bus, upload_id: str) -> bool:
    try:
        await (await bus.js.object_store(s.UPLOADS_BUCKET)).get_info(upload_id)
    except NotFoundError:
        return False
    return True
