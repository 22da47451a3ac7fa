"""Workflow routes (DESIGN §4c): submit, list, read, cancel, answer a stage's approval gate.

Rules:
- Like tasks, the edge never writes a workflow record: it publishes to the workflow's inbox
  (its id starts `wf_`; the orchestrator runs `core/workflow.py`) and reads back what was
  written, for a bounded time.
- The body is checked whole before anything is sent: stage ids unique and plain tokens,
  `depends_on` naming stages of this workflow with no cycle, known agent types, valid mock
  scripts, an allowed workspace source; each problem is a 422 naming its field
  (`stages.2.depends_on.0`).
- A gate's answer is an approval like a held tool call's (`{"approved": bool, "comment"?}`,
  or "yes"/"no"): anything else is a 400 saying what to send.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, get_args

from aiohttp import web
from pydantic import Field, field_validator

from agentops.agents.definitions import AgentSpec
from agentops.bus.connection import publish
from agentops.core.answers import BadAnswer, approval
from agentops.core.workflow import WORKFLOW_ADAPTER, WorkflowRecord
from agentops.edge import responses as r
from agentops.edge.apispec import INVALID_QUERY, OFFSET, choice, json_resp, limit, operation
from agentops.edge.context import BUS, CONFIG, Bus
from agentops.edge.data import wait_for
from agentops.edge.errors import (
    ApiError,
    bad_request,
    checked_id,
    conflict,
    not_found,
    validation_error,
)
from agentops.edge.schemas import (
    HumanAnswer,
    WorkspaceSpec,
    _Body,
    _shallow,
    parse_model,
    query_choice,
    query_int,
    read_json,
)
from agentops.edge.tasks import check_mock, check_workspace
from agentops.protocol import subjects as s
from agentops.protocol.messages import (
    TERMINAL,
    CancelWorkflow,
    StageSpec,
    SubmitWorkflow,
    TaskStatus,
    WorkflowAnswer,
)
from agentops.store.kv import scan

SOURCE = "edge"
MAX_STAGES = 50
_STAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # fullmatch: `$` would let "a\n" through


class StageBody(_Body):
    id: str = Field(min_length=1, max_length=32)
    agent_type: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1, max_length=100_000)
    context: dict[str, Any] | None = None
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_STAGES)
    approval: bool = False

    @field_validator("id")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _STAGE_ID.fullmatch(value):
            raise ValueError("must be 1-32 of [A-Za-z0-9_-]")
        return value

    @field_validator("context")
    @classmethod
    def _depth(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _shallow(value)


class CreateWorkflow(_Body):
    name: str = Field(default="", max_length=200)
    workspace: WorkspaceSpec | None = None
    stages: list[StageBody] = Field(min_length=1, max_length=MAX_STAGES)


def check_stages(stages: list[StageBody], specs: Mapping[str, AgentSpec]) -> None:
    """Ids unique, dependencies known and acyclic, agent types known: or a 422 naming the
    field."""
    problems: list[dict[str, str]] = []
    ids = [stage.id for stage in stages]
    for i, stage in enumerate(stages):
        if ids.index(stage.id) != i:
            problems.append(
                {"field": f"stages.{i}.id", "message": f"duplicate stage id {stage.id!r}"}
            )
        if stage.agent_type not in specs:
            known = ", ".join(sorted(specs))
            problems.append({"field": f"stages.{i}.agent_type",
                             "message": f"unknown agent type {stage.agent_type!r}; known: {known}"})  # fmt: skip
        for j, dep in enumerate(stage.depends_on):
            if dep not in ids or dep == stage.id:
                what = (
                    "itself" if dep == stage.id else f"{dep!r}, which is no stage of this workflow"
                )
                problems.append({"field": f"stages.{i}.depends_on.{j}",
                                 "message": f"a stage cannot depend on {what}"})  # fmt: skip
    if not problems:
        cycle = _cycle({stage.id: stage.depends_on for stage in stages})
        if cycle:
            problems.append(
                {"field": "stages", "message": f"depends_on makes a cycle: {' -> '.join(cycle)}"}
            )
    if problems:
        raise validation_error(problems)


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if state.get(dep) is None and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def workflow_view(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "workflow_id": record.workflow_id,
        "name": record.name,
        "status": record.status,
        "stages": [
            {
                **stage.spec.model_dump(mode="json", exclude={"context"}),
                "status": stage.status,
                "task_id": stage.task_id,
                "summary": stage.summary,
                "cost_usd": stage.cost_usd,
            }
            for stage in record.stages
        ],
        "awaiting_approval": record.gate,
        "cost_usd": record.cost_usd(),
        "workspace_id": record.workspace_id,
        "source": record.source,
        "error": record.error,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }


@operation(
    "Start a workflow", "workflows",
    {201: json_resp(r.WorkflowCreated, "submitted (`queued` until the orchestrator has it)")},
    {404: "an unknown upload or task as the workspace source",
     409: "`workspace.from_task` names a task that has not finished",
     422: "the body does not fit: stage ids, dependencies (unknown, cyclic), agent types, "
          "mock scripts, workspace source; each problem names its field"},
    body=CreateWorkflow,
)  # fmt: skip
async def create_workflow(request: web.Request) -> web.Response:
    bus, config = request.app[BUS], request.app[CONFIG]
    body = parse_model(CreateWorkflow, await read_json(request))
    check_stages(body.stages, config.agent_specs)
    for i, stage in enumerate(body.stages):
        try:
            check_mock(stage.context or {})
        except ApiError as exc:
            raise ApiError(
                exc.status, exc.code, f"stages.{i}: {exc.message}", exc.details
            ) from None
    source = await check_workspace(bus, config, body.workspace)
    workflow_id = f"{s.WORKFLOW_PREFIX}{uuid.uuid4().hex[:20]}"
    msg = SubmitWorkflow(
        id=f"{workflow_id}.submit",
        source=SOURCE,
        task_id=workflow_id,
        ts=datetime.now(UTC),
        name=body.name,
        stages=tuple(
            StageSpec(
                id=st.id,
                agent_type=st.agent_type,
                description=st.description,
                context=st.context or {},
                depends_on=tuple(st.depends_on),
                approval=st.approval,
            )
            for st in body.stages
        ),
        workspace=source,
    )
    await publish(bus.js, s.task_inbox(workflow_id, msg.type), msg, msg.id)
    record = await wait_for(lambda: _find(bus, workflow_id), lambda r: True, config.submit_wait_s)
    status = record.status if record is not None else "queued"
    return web.json_response({"workflow_id": workflow_id, "status": status}, status=201)


async def _find(bus: Bus, workflow_id: str) -> WorkflowRecord | None:
    record, _ = await bus.workflows.load(workflow_id)
    return record


async def _get(request: web.Request) -> tuple[Bus, WorkflowRecord]:
    bus = request.app[BUS]
    workflow_id = checked_id(request.match_info["workflow_id"], "workflow")
    record = await _find(bus, workflow_id) if workflow_id.startswith(s.WORKFLOW_PREFIX) else None
    if record is None:
        raise not_found("workflow", workflow_id)
    return bus, record


@operation(
    "List workflows", "workflows", {200: json_resp(r.WorkflowList, "a page, newest first")},
    {400: INVALID_QUERY},
    params=(choice("status", get_args(TaskStatus), "only workflows with this status"),
            limit(100, 500), OFFSET),
)  # fmt: skip
async def list_workflows(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    status = query_choice(request, "status", get_args(TaskStatus))
    limit = query_int(request, "limit", 100, 1, 500)
    offset = query_int(request, "offset", 0, 0, 10**9)
    records = await scan(bus.workflows.kv, WORKFLOW_ADAPTER)
    if status is not None:
        records = [r for r in records if r.status == status]
    records.sort(key=lambda r: (r.created_at, r.workflow_id), reverse=True)
    page = [workflow_view(r) for r in records[offset : offset + limit]]
    return web.json_response({"workflows": page, "total": len(records)})


@operation(
    "Read a workflow", "workflows", {200: json_resp(r.WorkflowView, "the workflow and stages")},
    {404: "no such workflow"},
)  # fmt: skip
async def get_workflow(request: web.Request) -> web.Response:
    _, record = await _get(request)
    return web.json_response(workflow_view(record))


@operation(
    "Cancel a workflow and what runs in it", "workflows",
    {200: json_resp(r.WorkflowCancelled, "its status once cancelled, or still on its way")},
    {404: "no such workflow", 409: "the workflow already finished"},
)  # fmt: skip
async def cancel_workflow(request: web.Request) -> web.Response:
    bus, record = await _get(request)
    if record.status in TERMINAL:
        raise conflict(
            f"workflow {record.workflow_id} already {record.status}", {"status": record.status}
        )
    msg = CancelWorkflow(
        id=f"{record.workflow_id}.cancel_request", source=SOURCE, task_id=record.workflow_id,
        ts=datetime.now(UTC),
    )  # fmt: skip
    await publish(bus.js, s.task_inbox(record.workflow_id, msg.type), msg, msg.id)
    final = await wait_for(
        lambda: _find(bus, record.workflow_id), lambda r: r.status in TERMINAL,
        request.app[CONFIG].cancel_wait_s,
    )  # fmt: skip
    return web.json_response(
        {"workflow_id": record.workflow_id, "status": (final or record).status}
    )


@operation(
    "Approve or refuse the stage waiting for approval", "workflows",
    {200: json_resp(r.GateAnswered, "received"),
     202: json_resp(r.GateAnswered, "`response_queued`: on its way")},
    {400: "not JSON, or not an approval (`{\"approved\": bool, \"comment\"?}` or yes/no)",
     404: "no such workflow",
     409: "no stage awaits approval, or `request_id` is not the stage that does"},
    body=HumanAnswer,
)  # fmt: skip
async def answer_gate(request: web.Request) -> web.Response:
    """`POST /workflows/{id}/human-response {"response": {"approved": bool, "comment"?}}`."""
    bus, record = await _get(request)
    body = parse_model(HumanAnswer, await read_json(request))
    gate = record.gate
    if record.status != "awaiting_human" or gate is None:
        raise conflict(
            f"workflow {record.workflow_id} is {record.status}, not awaiting an approval",
            {"status": record.status},
        )
    if body.request_id is not None and body.request_id != gate:
        raise conflict(
            f"stage {body.request_id!r} is not the one awaiting approval", {"stage_id": gate}
        )
    try:
        answer = approval(body.response)
    except BadAnswer as exc:
        raise bad_request(str(exc), {"stage_id": gate}) from None
    msg = WorkflowAnswer(
        id=f"{record.workflow_id}.gate.{gate}", source=SOURCE, task_id=record.workflow_id,
        ts=datetime.now(UTC), stage_id=gate, approved=answer.approved, comment=answer.comment,
    )  # fmt: skip
    await publish(bus.js, s.task_inbox(record.workflow_id, msg.type), msg, msg.id)
    later = await wait_for(
        lambda: _find(bus, record.workflow_id), lambda r: r.gate != gate,
        request.app[CONFIG].human_wait_s,
    )  # fmt: skip
    received = later is not None and later.gate != gate
    out = {
        "status": "response_received" if received else "response_queued",
        "workflow_id": record.workflow_id,
        "workflow_status": (later or record).status,
        "stage_id": gate,
    }
    return web.json_response(out, status=200 if received else 202)
