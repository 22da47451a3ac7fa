"""The tool executor's workspace side: it owns workspaces, so it makes, commits, reads and
deletes them for the other processes (DESIGN §4b).

Two channels:
- Work on the work stream (`agentops.tool.workspace.<op>`, durable, at least once): prepare a
  task's workspace from its source and answer `workspace.ready|failed` to the task's inbox;
  commit a run's changes and answer `workspace.committed`; delete one. Each is idempotent: a
  workspace prepared already answers its base again, a commit with nothing new answers the
  current head, a deletion of nothing does nothing.
- Requests (core NATS, micro endpoints in a queue group, `agentops.workspace.<op>`), for the
  edge: list files, read a file a chunk at a time, export a diff or an archive (written to
  `<data_dir>/exports/<token>` as it is made, then fetched a chunk at a time, so no diff or
  archive is ever one message or held in memory), inspect an upload.

Rules:
- Every git and file operation runs in a thread (`Workspaces` blocks); paths from a request
  go through `resolve_in_workspace` + `open_in_workspace`, so a link out or `..` is a 404.
- A reply is `Agentops-Status: ok` with the body (JSON or bytes), or `error` with an
  `ErrorInfo` JSON body whose code the edge maps to an HTTP status.
- An export is removed once its last chunk is fetched, or `EXPORT_TTL_S` after it was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from nats.js.errors import NotFoundError
from nats.micro.request import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentops.bus.connection import publish_all
from agentops.bus.consumer import Delivery
from agentops.bus.service import Runtime
from agentops.config import load_workspaces
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError
from agentops.protocol.messages import (
    CommitWorkspace,
    DeleteWorkspace,
    PrepareWorkspace,
    WorkMessage,
    WorkspaceCommitted,
    WorkspaceFailed,
    WorkspaceReady,
)
from agentops.tools.errors import ToolError
from agentops.tools.workspace import (
    open_in_workspace,
    real_root,
    resolve_in_workspace,
    workspace_for,
)
from agentops.workspaces.archive_stream import write_archive
from agentops.workspaces.archives import ArchiveLimits, extract
from agentops.workspaces.git import Workspaces
from agentops.workspaces.sources import DEFAULT_ALLOW, WorkspaceError

log = structlog.get_logger(__name__)
PROCESS = "tool-executor"
STATUS = "Agentops-Status"
SIZE = "Agentops-Size"
MAX_CHUNK = 1024 * 1024
EXPORT_TTL_S = 15 * 60.0
MAX_LISTED = 10_000


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesRequest(_Req):
    workspace_id: str


class ReadRequest(_Req):
    workspace_id: str
    path: str = Field(min_length=1, max_length=4096)
    offset: int = Field(default=0, ge=0)
    length: int = Field(default=MAX_CHUNK, ge=1, le=MAX_CHUNK)


class ExportRequest(_Req):
    workspace_id: str
    kind: str = Field(pattern=r"^(diff|tar\.gz|zip)$")
    base: str | None = None
    head: str | None = None


class FetchRequest(_Req):
    token: str = Field(pattern=r"^[0-9a-f]{32}$")
    offset: int = Field(default=0, ge=0)
    length: int = Field(default=MAX_CHUNK, ge=1, le=MAX_CHUNK)


class InspectRequest(_Req):
    upload_id: str


def _ok(body: bytes, **headers: str) -> tuple[bytes, dict[str, str]]:
    return body, {STATUS: "ok", **headers}


def _error(code: str, message: str, details: Any = None) -> tuple[bytes, dict[str, str]]:
    info = ErrorInfo(code=code, message=message, details=details)
    return info.model_dump_json().encode(), {STATUS: "error"}


async def setup_workspaces(rt: Runtime, data_dir: Path) -> None:
    """Serve workspace work and requests in the tool executor."""
    settings = load_workspaces(rt.settings)
    ws = Workspaces(data_dir)
    await asyncio.to_thread(ws.sweep_staging)
    exports = data_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    uploads = await rt.js.object_store(s.UPLOADS_BUCKET)
    counts = {"prepared": 0, "committed": 0, "deleted": 0, "exports": 0}

    async def answer(msg: WorkMessage, reply: WorkMessage) -> None:
        await publish_all(rt.publisher, [(s.task_inbox(msg.task_id, reply.type), reply, reply.id)])

    def header(msg: WorkMessage) -> dict[str, Any]:
        return msg.reply_header(PROCESS, datetime.now(UTC))

    async def prepare(msg: PrepareWorkspace) -> None:
        try:
            base = await _prepared(msg)
        except (WorkspaceError, ToolError, AgentOpsError) as exc:
            error = (
                exc.info()
                if isinstance(exc, AgentOpsError)
                else ErrorInfo(code="workspace_error", message=str(exc))
            )
            await answer(
                msg, WorkspaceFailed(**header(msg), workspace_id=msg.workspace_id, error=error)
            )
            return
        counts["prepared"] += 1
        await answer(msg, WorkspaceReady(**header(msg), workspace_id=msg.workspace_id, base=base))

    async def _prepared(msg: PrepareWorkspace) -> str:
        wid, origin = msg.workspace_id, msg.origin
        if msg.shared:  # a child's or a stage's: what is there now is its base
            return await asyncio.to_thread(snapshot, wid, msg.task_id)
        if await asyncio.to_thread(ws.exists, wid):  # prepared before (a redelivery)
            return await asyncio.to_thread(ws.base, wid)
        max_bytes = settings.max_clone_mb * 1024 * 1024
        if origin is None:
            return await asyncio.to_thread(ws.init, wid)
        if origin.git is not None:
            git = origin.git
            allow = settings.allow or DEFAULT_ALLOW

            def clone() -> str:
                return ws.clone(
                    wid,
                    git.url,
                    git.ref,
                    timeout_s=settings.clone_timeout_s,
                    max_bytes=max_bytes,
                    allow=allow,
                )

            return await asyncio.to_thread(clone)
        if origin.from_task is not None:
            source = origin.from_task
            return await asyncio.to_thread(lambda: ws.copy_from(wid, source, max_bytes=max_bytes))
        assert origin.upload is not None
        with tempfile.TemporaryDirectory(dir=data_dir / "exports") as tmp:
            archive = Path(tmp) / "upload"
            await _download(origin.upload, archive)
            limits = _limits(settings.max_upload_mb)
            return await asyncio.to_thread(lambda: ws.upload(wid, archive, limits))

    def snapshot(wid: str, task_id: str) -> str:
        """Commit what a shared workspace holds (made if missing) and return its HEAD."""
        workspace_for(data_dir, wid)
        with ws.locked(wid):
            if not ws.exists(wid):
                ws.init(wid)
        ws.commit(wid, "agentops", f"agentops: before task {task_id}")
        return ws.head(wid)

    async def _download(upload_id: str, into: Path) -> None:
        try:
            with into.open("wb") as fh:
                await uploads.get(upload_id, writeinto=fh)
        except NotFoundError:
            raise WorkspaceError(
                "unknown_upload", f"upload {upload_id!r} does not exist (or expired)"
            ) from None

    async def commit(msg: CommitWorkspace) -> None:
        def run() -> tuple[str | None, str | None, int]:
            made = None
            wid = msg.workspace_id
            if not ws.workspace(wid).is_dir():  # no file was ever written (or the workspace
                return None, None, 0  # was deleted since): nothing to commit
            try:
                if not ws.exists(wid):  # started empty: made at its first commit
                    with ws.locked(wid):  # (not while a deletion runs)
                        if ws.workspace(wid).is_dir() and not ws.exists(wid):
                            made = ws.init(wid)
                sha = ws.commit(
                    wid, msg.author, msg.message or msg.author, background=msg.background
                )
                with ws.locked(wid):  # a deletion between the two must not leave a work tree
                    if not ws.exists(wid):
                        return None, None, 0
                    return sha or ws.head(wid), made, ws.depth(wid)
            except WorkspaceError as exc:
                if exc.code != "workspace_missing":
                    raise
                return None, None, 0  # deleted meanwhile

        head, base, depth = await asyncio.to_thread(run)
        counts["committed"] += 1
        committed = WorkspaceCommitted(
            **header(msg), workspace_id=msg.workspace_id, run=msg.run, head=head, base=base,
            depth=depth,
        )  # fmt: skip
        await answer(msg, committed)

    async def work(msg: WorkMessage, delivery: Delivery) -> None:
        match msg:
            case PrepareWorkspace():
                await prepare(msg)
            case CommitWorkspace():
                await commit(msg)
            case DeleteWorkspace():
                await asyncio.to_thread(ws.discard, s.check_id(msg.workspace_id, "workspace id"))
                counts["deleted"] += 1
            case _:
                raise PermanentError(f"{msg.type} is not workspace work")
        structlog.contextvars.bind_contextvars(workspace=getattr(msg, "workspace_id", None))

    async def files(req: FilesRequest) -> tuple[bytes, dict[str, str]]:
        listed = await asyncio.to_thread(ws.list_files, s.check_id(req.workspace_id, "id"))
        body = {"files": listed[:MAX_LISTED], "truncated": len(listed) > MAX_LISTED}
        return _ok(json.dumps(body).encode())

    async def read(req: ReadRequest) -> tuple[bytes, dict[str, str]]:
        def chunk() -> tuple[bytes, int]:
            root = ws.workspace(s.check_id(req.workspace_id, "workspace id"))
            if not root.is_dir():
                raise ToolError(f"no workspace {req.workspace_id!r}", code="workspace_missing")
            base = real_root(root)
            path = resolve_in_workspace(root, req.path, base)
            fd = open_in_workspace(root, path, req.path, write=False, base=base)
            with os.fdopen(fd, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(req.offset)
                return fh.read(req.length), size

        data, size = await asyncio.to_thread(chunk)
        return _ok(data, **{SIZE: str(size)})

    async def export(req: ExportRequest) -> tuple[bytes, dict[str, str]]:
        _sweep(exports)
        token = secrets.token_hex(16)
        target = exports / token

        def make() -> int:
            wid = s.check_id(req.workspace_id, "workspace id")
            with target.open("wb") as out:
                if req.kind == "diff":
                    if not ws.exists(wid):
                        return 0
                    base = req.base or ws.base(wid)
                    for part in ws.diff(wid, base, req.head):
                        out.write(part)
                else:
                    root = ws.workspace(wid)
                    if not root.is_dir():
                        raise WorkspaceError("workspace_missing", f"no workspace {wid!r}")
                    write_archive(os.path.realpath(root), req.kind, out.write)  # type: ignore[arg-type]
            return target.stat().st_size

        try:
            size = await asyncio.to_thread(make)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        counts["exports"] += 1
        return _ok(json.dumps({"token": token, "size": size}).encode())

    async def fetch(req: FetchRequest) -> tuple[bytes, dict[str, str]]:
        target = exports / req.token

        def chunk() -> tuple[bytes, int]:
            with target.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(req.offset)
                data = fh.read(req.length)
            if req.offset + len(data) >= size:  # the last chunk: the export is done
                target.unlink(missing_ok=True)
            return data, size

        try:
            data, size = await asyncio.to_thread(chunk)
        except FileNotFoundError:
            return _error("not_found", "no such export (it was fetched already, or expired)")
        return _ok(data, **{SIZE: str(size)})

    async def inspect(req: InspectRequest) -> tuple[bytes, dict[str, str]]:
        """Check an upload by extracting it (then thrown away): the entry that makes it
        unsafe is named now, not after a task was created."""
        with tempfile.TemporaryDirectory(dir=exports) as tmp:
            archive = Path(tmp) / "upload"
            await _download(req.upload_id, archive)
            limits = _limits(settings.max_upload_mb)
            done = await asyncio.to_thread(lambda: extract(archive, Path(tmp) / "files", limits))
        return _ok(json.dumps({"files": done.files, "bytes": done.bytes}).encode())

    endpoints: dict[
        str, tuple[type[_Req], Callable[[Any], Awaitable[tuple[bytes, dict[str, str]]]]]
    ] = {
        "files": (FilesRequest, files),
        "read": (ReadRequest, read),
        "export": (ExportRequest, export),
        "fetch": (FetchRequest, fetch),
        "inspect": (InspectRequest, inspect),
    }
    for name, (model, handler) in endpoints.items():
        rt.endpoints.append(
            (f"workspace_{name}", s.workspace_endpoint(name), _serving(model, handler))
        )
    await rt.add_consumer(
        rt.consumer(s.WORKSPACE_CONSUMER, s.workspace_requests_filter(), work, concurrency=4)
    )
    previous = rt.status_extra

    def status() -> dict[str, Any]:
        return {**(previous() if previous else {}), "workspaces": dict(counts)}

    rt.status_extra = status


def _serving(
    model: type[_Req], handler: Callable[[Any], Awaitable[tuple[bytes, dict[str, str]]]]
) -> Callable[[Request], Awaitable[None]]:
    async def serve(request: Request) -> None:
        try:
            body, headers = await handler(model.model_validate_json(request.data))
        except ValidationError as exc:
            body, headers = _error("bad_request", f"invalid request: {exc.errors()[0]['msg']}")
        except s.InvalidName as exc:
            body, headers = _error("not_found", str(exc))
        except ToolError as exc:  # a path outside, a link out, not a regular file
            body, headers = _error("not_found", exc.message, {"reason": exc.code})
        except AgentOpsError as exc:
            body, headers = _error(exc.code, exc.message, exc.info().details)
        except Exception as exc:  # never leave the edge waiting: say what failed
            log.exception("workspace.request_failed")
            body, headers = _error("internal_error", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            await request.respond(body, headers=headers)

    return serve


def _limits(max_upload_mb: int) -> ArchiveLimits:
    return ArchiveLimits(
        max_entries=100_000, max_total_bytes=max_upload_mb * 1024 * 1024 * 10, max_ratio=200
    )


def _sweep(exports: Path) -> None:
    """Remove exports nobody fetched to the end."""
    now = time.time()
    for old in exports.iterdir():
        with contextlib.suppress(OSError):
            if old.is_file() and now - old.stat().st_mtime > EXPORT_TTL_S:
                old.unlink()
            elif old.is_dir() and now - old.stat().st_mtime > EXPORT_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
