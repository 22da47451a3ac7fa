"""Task routes: submit, list, read, cancel, delete. Handlers decode → load → check → publish → poll.

Rules:
- The edge never creates or changes a task record: it publishes `SubmitTask` / `CancelTask` to
  the task's inbox and reads back what the orchestrator wrote, for a bounded time.
- Message ids are derived from the task (`<task_id>.submit`, `<task_id>.cancel_request`), so
  a retried request is dropped by JetStream dedup instead of acting twice. Dedup is per stream,
  not per subject, so these ids must differ from every id another process publishes on the
  work stream (the orchestrator's CancelAgent is `<task_id>.cancel`).
- `Idempotency-Key`: the first request atomically creates sha256(key) → {task_id, agent_id,
  body_sha256} in the idempotency bucket (KV `create`); a retry with the same key and the same
  body gets the same ids (and re-publishes the same submit, a no-op if the first one landed);
  the same key with another body is 422 `idempotency_key_reused`.
- A `context.mock` script is validated here with the mock provider's own model, so a bad
  script is a 422 now rather than a failed task later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, get_args

import nats.errors
from aiohttp import web
from nats.errors import NoRespondersError
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import BaseModel, ConfigDict, ValidationError

from agentops.bus.connection import publish
from agentops.core.state import TaskRecord
from agentops.edge import responses as r
from agentops.edge.apispec import (
    INVALID_QUERY,
    OFFSET,
    Param,
    choice,
    id_param,
    json_resp,
    limit,
    operation,
)
from agentops.edge.auth import actor
from agentops.edge.context import BUS, CONFIG, Bus, EdgeConfig
from agentops.edge.data import find_agent, find_task, get_task, wait_for
from agentops.edge.errors import (
    UNCONFIRMED,
    ApiError,
    bad_request,
    checked_id,
    conflict,
    field_errors,
    not_found,
)
from agentops.edge.index import INDEXES
from agentops.edge.pending import AgentClaim, write_claim
from agentops.edge.schemas import (
    CreateTask,
    PostMessage,
    WorkspaceSpec,
    parse_model,
    query_choice,
    query_id,
    query_int,
    read_json,
)
from agentops.edge.views import task_view
from agentops.edge.workspaces import upload_exists
from agentops.protocol import subjects as s
from agentops.protocol.errors import RetryableError
from agentops.protocol.messages import (
    TERMINAL,
    CancelTask,
    DeleteTask,
    GitSource,
    SubmitTask,
    TaskMessage,
    TaskStatus,
    WorkspaceSource,
)
from agentops.workspaces.sources import DEFAULT_ALLOW, WorkspaceError, check_source

SOURCE = "edge"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255


class IdempotencyClaim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str
    agent_id: str
    body_sha256: str


def new_ids() -> tuple[str, str]:
    return f"task_{uuid.uuid4().hex[:20]}", f"agent_{uuid.uuid4().hex[:20]}"


def body_digest(data: Any) -> str:
    """Canonical JSON, so a retry that only reorders keys or spacing counts as the same body."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_mock(context: dict[str, Any]) -> None:
    if "mock" not in context:
        return
    try:
        from agentops.llm.mock import MockScript  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the mock provider is not in this build: nothing to check against
        return
    try:
        MockScript.model_validate(context["mock"])
    except ValidationError as exc:
        raise ApiError(
            422,
            "validation_error",
            "invalid mock script in context.mock",
            field_errors(exc, ("context", "mock")),
        ) from None


async def claim_ids(bus: Bus, key: str, digest: str) -> tuple[str, str, bool]:
    """(task_id, agent_id, replayed) for this Idempotency-Key."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise bad_request(
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
            code="invalid_idempotency_key",
        )
    kv_key = hashlib.sha256(key.encode()).hexdigest()
    task_id, agent_id = new_ids()
    claim = IdempotencyClaim(task_id=task_id, agent_id=agent_id, body_sha256=digest)
    try:
        await bus.idempotency.create(kv_key, claim.model_dump_json().encode())
        return task_id, agent_id, False
    except KeyWrongLastSequenceError:
        pass
    entry = await bus.idempotency.get(kv_key)
    existing = IdempotencyClaim.model_validate_json(entry.value or b"")
    if existing.body_sha256 != digest:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"this {IDEMPOTENCY_HEADER} was used for a different request body",
            {"task_id": existing.task_id},
        )
    return existing.task_id, existing.agent_id, True


async def check_workspace(
    bus: Bus, config: EdgeConfig, spec: WorkspaceSpec | None
) -> WorkspaceSource | None:
    """The workspace source as the orchestrator gets it, after what can be checked now: a
    source the operator does not allow (`[workspaces] allow`, https only by default) is a
    422, an unknown upload or task a 404, a task still running a 409. What only a clone can
    tell (a repository or ref that does not exist) fails the task, reason workspace_error."""
    if spec is None:
        return None
    field = ("workspace",)
    if spec.git is not None:
        try:
            check_source(spec.git.url, config.workspaces.allow or DEFAULT_ALLOW)
        except WorkspaceError as exc:
            raise ApiError(
                422, exc.code, exc.message,
                [{"field": "workspace.git.url", "message": exc.message}],
            ) from None  # fmt: skip
        return WorkspaceSource(git=GitSource(url=spec.git.url, ref=spec.git.ref))
    if spec.upload is not None:
        if not _valid(spec.upload) or not await upload_exists(bus, spec.upload):
            raise ApiError(
                404, "unknown_upload", f"upload {spec.upload!r} does not exist (or expired)",
                {"field": ".".join((*field, "upload"))},
            )  # fmt: skip
        return WorkspaceSource(upload=spec.upload)
    assert spec.from_task is not None
    if not _valid(spec.from_task):
        raise not_found("task", spec.from_task)
    source = await find_task(bus, spec.from_task)
    if source is None:
        raise not_found("task", spec.from_task)
    if source.status not in TERMINAL or source.head is None:
        raise conflict(
            f"task {spec.from_task} has not finished and committed its work yet; "
            "start from it once it has",
            {"status": source.status},
        )
    return WorkspaceSource(from_task=source.workspace_id or source.task_id)


def _valid(ident: str) -> bool:
    try:
        s.check_id(ident)
    except s.InvalidName:
        return False
    return True


@operation(
    "Send a task a message (a follow-up run, or steering)", "tasks",
    {200: json_resp(r.MessageAccepted, "the finished task runs again"),
     202: json_resp(r.MessageAccepted, "on its way: `message_queued` for a running or paused "
                    "task (read before its next LLM call), `resume_queued` for a finished one")},
    {404: "no such task", 409: "the task is being deleted, or has not started yet",
     422: "the body does not fit, or `context.mock` is no valid mock script"},
    body=PostMessage,
)  # fmt: skip
async def post_message(request: web.Request) -> web.Response:
    """`POST /tasks/{id}/messages {"message", "context"?}`: a finished task runs again with its
    whole thread and workspace (200 once it is running again); a running or paused one gets
    the message before its next LLM call (202, on its way)."""
    bus, config = request.app[BUS], request.app[CONFIG]
    body = parse_model(PostMessage, await read_json(request))
    record = await get_task(bus, checked_id(request.match_info["task_id"], "task"))
    if record.deleting:
        raise conflict(f"task {record.task_id} is being deleted", {"status": "deleting"})
    if not record.started:
        raise conflict(
            f"task {record.task_id} has not started yet (its workspace is being prepared)",
            {"status": record.status},
        )
    context = body.context or {}
    check_mock(context)
    msg = TaskMessage(
        id=f"{record.task_id}.msg.{uuid.uuid4().hex}",
        source=SOURCE,
        task_id=record.task_id,
        agent_id=record.agent_id,
        ts=datetime.now(UTC),
        message=body.message,
        context=context,
    )
    await publish(bus.js, s.task_inbox(record.task_id, msg.type), msg, msg.id)
    if record.status not in TERMINAL:
        queued = {"task_id": record.task_id, "status": "message_queued", "run": record.run}
        return web.json_response(queued, status=202)
    later = await wait_for(
        lambda: find_task(bus, record.task_id), lambda r: r.run > record.run, config.submit_wait_s
    )
    resumed = later is not None and later.run > record.run
    out = {
        "task_id": record.task_id,
        "agent_id": record.agent_id,
        "status": later.status if later is not None and resumed else "resume_queued",
        "run": later.run if later is not None and resumed else record.run + 1,
    }
    return web.json_response(out, status=200 if resumed else 202)


@operation(
    "Submit a task", "tasks",
    {201: json_resp(r.TaskCreated, "submitted (`status` is `queued` until the orchestrator "
                    "has recorded it)", headers={"Idempotent-Replayed": "`true` on a retry "
                    "with an Idempotency-Key already used for this body"})},
    {400: "not JSON, or a bad Idempotency-Key (`invalid_idempotency_key`)",
     404: "unknown agent type (`unknown_agent_type`), upload (`unknown_upload`) or task "
          "(`workspace.from_task`)",
     409: "`workspace.from_task` names a task that has not finished",
     422: "the body does not fit; a workspace source the operator does not allow; an "
          "Idempotency-Key used for another body (`idempotency_key_reused`)"},
    body=CreateTask,
    params=(Param(IDEMPOTENCY_HEADER, {"type": "string", "minLength": 1,
                                       "maxLength": MAX_IDEMPOTENCY_KEY},
                  "a retried POST with the same key and body returns the same task",
                  location="header"),),
)  # fmt: skip
async def create_task(request: web.Request) -> web.Response:
    bus, config = request.app[BUS], request.app[CONFIG]
    data = await read_json(request)
    body = parse_model(CreateTask, data)
    specs = config.agent_specs
    if body.agent_type not in specs:
        raise ApiError(
            404,
            "unknown_agent_type",
            f"unknown agent type {body.agent_type!r}",
            {"agent_types": list(specs)},
        )
    context = body.context or {}
    check_mock(context)
    source = await check_workspace(bus, config, body.workspace)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        task_id, agent_id, replayed = (*new_ids(), False)
    else:
        task_id, agent_id, replayed = await claim_ids(bus, key, body_digest(data))
    msg = SubmitTask(
        id=f"{task_id}.submit",
        source=SOURCE,
        task_id=task_id,
        agent_id=agent_id,
        ts=datetime.now(UTC),
        agent_type=body.agent_type,
        description=body.description,
        context=context,
        max_steps=body.max_steps,
        budget_usd=body.budget_usd,
        workspace=source,
        actor=actor(request),
    )
    # Readable at once (`edge/pending.py`): the agent id is claimed before the submit goes out.
    claim = AgentClaim(
        task_id=task_id, agent_id=agent_id, agent_type=body.agent_type,
        description=body.description, max_steps=body.max_steps, budget_usd=body.budget_usd,
        created_at=msg.ts,
    )  # fmt: skip
    try:
        await write_claim(bus.idempotency, claim)
    except (nats.errors.Error, RetryableError):
        raise ApiError(
            503, "unavailable", "the message bus is unavailable: no task was created, retry later",
            {"submitted": "no"},
        ) from None  # fmt: skip
    await submit(bus, msg, config.submit_wait_s)
    record = await wait_for(lambda: find_task(bus, task_id), lambda r: True, config.submit_wait_s)
    status = record.status if record is not None else "queued"
    spec = specs[body.agent_type]
    message = (
        f"task already submitted with this {IDEMPOTENCY_HEADER}"
        if replayed
        else f"task submitted to {spec.name}"
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    body_out = {"task_id": task_id, "agent_id": agent_id, "status": status, "message": message}
    return web.json_response(body_out, status=201, headers=headers)


async def submit(bus: Bus, msg: SubmitTask, within_s: float) -> None:
    """Publish the submit until JetStream confirms it (the same message id each time, so a
    publish that went out unconfirmed is not a second task). Not confirmed within `within_s`:
    503 saying the task may exist, with its ids (a retry with the same Idempotency-Key gets
    the same task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    delay = 0.05
    while True:
        try:
            await publish(bus.js, s.task_inbox(msg.task_id, msg.type), msg, msg.id)
            return
        except (nats.errors.Error, RetryableError) as exc:
            if loop.time() + delay >= deadline:
                raise ApiError(
                    503, "unavailable", UNCONFIRMED,
                    {"task_id": msg.task_id, "agent_id": msg.agent_id,
                     # no responders: no stream took it (JetStream away, or the stream gone)
                     "submitted": "no" if isinstance(exc, NoRespondersError) else "unknown"},
                ) from exc  # fmt: skip
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _with_agent_step(bus: Bus, record: TaskRecord) -> dict[str, Any]:
    head = await find_agent(bus, record.agent_id) if record.status not in TERMINAL else None
    return task_view(record, head.state if head is not None else None)


@operation(
    "List tasks", "tasks", {200: json_resp(r.TaskList, "a page of tasks, newest first")},
    {400: INVALID_QUERY},
    params=(choice("status", get_args(TaskStatus), "only tasks with this status"),
            id_param("agent_type", "only tasks of this agent type"), limit(100, 500), OFFSET),
)  # fmt: skip
async def list_tasks(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    status = query_choice(request, "status", get_args(TaskStatus))
    agent_type = query_id(request, "agent_type")  # a type no task has simply matches none
    limit = query_int(request, "limit", 100, 1, 500)
    offset = query_int(request, "offset", 0, 0, 10**9)
    # The index (edge/index.py), never a scan: the page's records are read by key.
    rows = [
        t
        for t in (await request.app[INDEXES].tasks_synced()).values()
        if (status is None or t.status == status)
        and (agent_type is None or t.agent_type == agent_type)
    ]
    rows.sort(key=lambda t: (t.created_at, t.task_id), reverse=True)
    page = await asyncio.gather(*(find_task(bus, t.task_id) for t in rows[offset : offset + limit]))
    tasks = await asyncio.gather(*(_with_agent_step(bus, r) for r in page if r is not None))
    return web.json_response({"tasks": list(tasks), "total": len(rows)})


@operation("Read a task", "tasks", {200: json_resp(r.TaskView, "the task")}, {404: "no such task"})
async def get_task_route(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    record = await get_task(bus, checked_id(request.match_info["task_id"], "task"))
    # One task: always with its agent's head, for the usage per agent.
    head = await find_agent(bus, record.agent_id)
    return web.json_response(task_view(record, head.state if head is not None else None))


@operation(
    "Cancel a task (and its descendants)", "tasks",
    {200: json_resp(r.TaskCancelled, "its status once cancelled, or still on its way")},
    {404: "no such task", 409: "the task already finished"},
)  # fmt: skip
async def cancel_task(request: web.Request) -> web.Response:
    bus, config = request.app[BUS], request.app[CONFIG]
    record = await get_task(bus, checked_id(request.match_info["task_id"], "task"))
    if record.status in TERMINAL:
        raise conflict(f"task {record.task_id} already {record.status}", {"status": record.status})
    msg = CancelTask(
        id=f"{record.task_id}.cancel_request" + (f".r{record.run}" if record.run > 1 else ""),
        source=SOURCE,
        task_id=record.task_id,
        agent_id=record.agent_id,
        ts=datetime.now(UTC),
        actor=actor(request),
    )
    await publish(bus.js, s.task_inbox(record.task_id, msg.type), msg, msg.id)
    final = await wait_for(
        lambda: find_task(bus, record.task_id), lambda r: r.status in TERMINAL, config.cancel_wait_s
    )
    status = (final or record).status
    return web.json_response({"task_id": record.task_id, "status": status})


@operation(
    "Delete a finished task and everything it holds", "tasks",
    {200: json_resp(r.TaskDeleted, "deleted"),
     202: json_resp(r.TaskDeleted, "`deleting`: still on its way")},
    {404: "no such task", 409: "the task has not finished"},
)  # fmt: skip
async def delete_task(request: web.Request) -> web.Response:
    """`DELETE /tasks/{id}`: a finished task and everything it holds, now (409 while it runs).
    The orchestrator deletes; this waits a bounded time for the record to be gone: 200
    `deleted`, or 202 `deleting` when it is still on its way."""
    bus, config = request.app[BUS], request.app[CONFIG]
    record = await get_task(bus, checked_id(request.match_info["task_id"], "task"))
    if record.status not in TERMINAL:
        raise conflict(
            f"task {record.task_id} is {record.status}; cancel it first, or wait until it ends",
            {"status": record.status},
        )
    msg = DeleteTask(
        id=f"{record.task_id}.delete_request",
        source=SOURCE,
        task_id=record.task_id,
        agent_id=record.agent_id,
        ts=datetime.now(UTC),
    )
    await publish(bus.js, s.task_inbox(record.task_id, msg.type), msg, msg.id)
    gone = await wait_for(
        lambda: _absent(bus, record.task_id), lambda done: done, config.cancel_wait_s
    )
    body = {"task_id": record.task_id, "status": "deleted" if gone else "deleting"}
    return web.json_response(body, status=200 if gone else 202)


async def _absent(bus: Bus, task_id: str) -> bool:
    return await find_task(bus, task_id) is None
