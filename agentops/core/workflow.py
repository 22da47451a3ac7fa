"""The workflow reducer (DESIGN §4c): stages run as child tasks in the workflow's workspace,
each when every stage it depends on completed. Pure: `step(record, msg, now) -> Decision`.

Rules:
- A stage starts when all of `depends_on` completed: a task `task_<id>-<stage_id>` of its
  agent type, in the workflow's workspace, with the summaries of what it depends on in its
  context (`depends_on`). Independent stages run at once.
- A stage with `approval` waits, before it starts, for a human's answer to its gate (the
  workflow is `awaiting_human` meanwhile; one `workflow.awaiting_approval` event per gate).
  Approved: it starts. Refused: it is `cancelled`, what runs is cancelled, what has not
  started is `skipped`, and the workflow is `cancelled`.
- A stage that fails fails the workflow (cancelled: cancels it); what runs is cancelled and
  what has not started is skipped. When every stage completed, the workflow completed.
- Stage statuses: `pending`, `skipped`, or their task's status. Workflow statuses are the
  task statuses. Events carry `workflow_id` in `data`.
- With a `workspace` source the workflow's workspace is prepared first (a failure fails the
  workflow, reason `workspace_error`); without one each stage's start makes it if missing.
- Ids derive from the workflow and stage ids, and the last message and its effects are kept
  with the record (replayed on redelivery), so a hand-off is never made twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, assert_never

from pydantic import BaseModel, ConfigDict, TypeAdapter

from agentops.core.effects import Decision, Effect, Emit, ReportToTask, ToWorkspaces
from agentops.core.orchestrator import mask_credentials
from agentops.protocol.errors import PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    CancelTask,
    CancelWorkflow,
    ChildFinished,
    DeleteTask,
    Event,
    EventType,
    ParentRef,
    PrepareWorkspace,
    StageSpec,
    SubmitTask,
    SubmitWorkflow,
    TaskStatus,
    WorkflowAnswer,
    WorkflowInbound,
    WorkspaceFailed,
    WorkspaceReady,
    WorkspaceSource,
)
from agentops.protocol.subjects import WORKFLOW_PREFIX

SOURCE = "orchestrator"
StageStatus = str  # "pending", "skipped" or a task status


class Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    spec: StageSpec
    status: StageStatus = "pending"
    task_id: str | None = None
    summary: str | None = None
    cost_usd: float = 0.0
    approved: bool = False


class WorkflowRecord(BaseModel):
    """A workflow (`nats kv get agentops_workflows <workflow_id>`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    workflow_id: str
    name: str = ""
    status: TaskStatus = "queued"
    stages: tuple[Stage, ...]
    workspace_id: str
    source: dict[str, Any] | None = None
    ready: bool = True  # its workspace is ready (prepared, or nothing to prepare)
    gate: str | None = None  # the stage waiting for approval
    # The workspace's newest commit the workflow heard of (a stage's, at its end), and how
    # deep it is: the next stage starts from it.
    head: str | None = None
    head_depth: int = 0
    error: dict[str, Any] | None = None
    deleting: bool = False
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    events_emitted: int = 0
    last_msg_id: str | None = None
    outbox: tuple[Effect, ...] = ()

    def cost_usd(self) -> float:
        return round(sum(stage.cost_usd for stage in self.stages), 10)


WORKFLOW_ADAPTER: TypeAdapter[WorkflowRecord] = TypeAdapter(WorkflowRecord)


def stage_task_id(workflow_id: str, stage_id: str) -> str:
    """`task_<workflow's own part>-<stage_id>`: a task id, not a workflow's (`wf_`)."""
    return f"task_{workflow_id.removeprefix(WORKFLOW_PREFIX)}-{stage_id}"


class _Run:
    def __init__(self, record: WorkflowRecord, msg_id: str, now: datetime) -> None:
        self.record = record
        self.msg_id = msg_id
        self.now = now
        self.effects: list[Effect] = []

    def update(self, **changes: Any) -> None:
        self.record = self.record.model_copy(update=changes)

    def stage(self, stage_id: str, **changes: Any) -> None:
        stages = tuple(
            s.model_copy(update=changes) if s.spec.id == stage_id else s for s in self.record.stages
        )
        self.update(stages=stages)

    def emit(self, type_: EventType, data: dict[str, Any]) -> None:
        n = self.record.events_emitted
        self.update(events_emitted=n + 1)
        event = Event(
            id=f"{self.record.workflow_id}.ev{n}",
            type=type_,
            ts=self.now,
            task_id=self.record.workflow_id,
            data={"workflow_id": self.record.workflow_id, **data},
        )
        self.effects.append(Emit(event=event))

    def header(self, msg_id: str, task_id: str) -> dict[str, Any]:
        return {
            "id": msg_id,
            "source": SOURCE,
            "task_id": task_id,
            "causation_id": self.msg_id,
            "ts": self.now,
        }

    def decision(self) -> Decision[WorkflowRecord]:
        effects = tuple(self.effects)
        final = self.record.model_copy(
            update={"last_msg_id": self.msg_id, "outbox": effects, "updated_at": self.now}
        )
        return Decision(state=final, effects=effects)


def step(
    record: WorkflowRecord | None, msg: WorkflowInbound, now: datetime
) -> Decision[WorkflowRecord]:
    if record is None:
        if isinstance(msg, SubmitWorkflow):
            return _submit(msg, now)
        if isinstance(msg, CancelWorkflow | WorkflowAnswer):
            raise PermanentError(
                f"{msg.type} for unknown workflow {msg.task_id!r}", code="unknown_task"
            )
        return Decision(state=None, ignored="no such workflow")
    if msg.id == record.last_msg_id:
        return Decision(state=None, effects=record.outbox, replay=True)
    if record.deleting:
        return Decision(state=None, ignored="workflow is being deleted")
    run = _Run(record, msg.id, now)
    reason = _apply(run, msg)
    if reason is not None:
        return Decision(state=None, ignored=reason)
    return run.decision()


def _submit(msg: SubmitWorkflow, now: datetime) -> Decision[WorkflowRecord]:
    record = WorkflowRecord(
        workflow_id=msg.task_id,
        name=msg.name,
        stages=tuple(Stage(spec=spec) for spec in msg.stages),
        workspace_id=msg.task_id,
        source=_shown(msg.workspace),
        ready=msg.workspace is None,
        created_at=msg.ts,
        updated_at=now,
    )
    run = _Run(record, msg.id, now)
    run.emit("workflow.created", {"name": msg.name, "stages": [s.id for s in msg.stages]})
    if msg.workspace is not None:
        prepare = PrepareWorkspace(
            **run.header(f"{msg.task_id}.prepare", msg.task_id),
            workspace_id=record.workspace_id,
            origin=msg.workspace,
        )
        run.effects.append(ToWorkspaces(message=prepare))
    else:
        _advance(run)
    return run.decision()


def _shown(source: WorkspaceSource | None) -> dict[str, Any] | None:
    if source is None:
        return None
    if source.git is not None:
        return {"git": {"url": mask_credentials(source.git.url), "ref": source.git.ref}}
    return source.model_dump(exclude_none=True)


def _apply(run: _Run, msg: WorkflowInbound) -> str | None:
    record = run.record
    match msg:
        case SubmitWorkflow():
            return "already submitted"
        case WorkspaceReady():
            if record.ready or record.status in TERMINAL:
                return "not waiting for a workspace"
            run.update(ready=True, head=msg.base)
            _advance(run)
        case WorkspaceFailed():
            if record.ready or record.status in TERMINAL:
                return "not waiting for a workspace"
            _end(run, "failed", {"reason": "workspace_error", "error": msg.error.model_dump()})
        case ChildFinished():
            return _stage_finished(run, msg)
        case WorkflowAnswer():
            return _answer(run, msg)
        case CancelWorkflow():
            if record.status in TERMINAL:
                return "already finished"
            _end(run, "cancelled", {"reason": msg.reason})
        case DeleteTask():
            if record.status not in TERMINAL:
                return f"workflow is {record.status}"
            run.update(deleting=True)
        case _:
            assert_never(msg)
    return None


def _stage_finished(run: _Run, msg: ChildFinished) -> str | None:
    stage = next((s for s in run.record.stages if s.spec.id == msg.parent.call_id), None)
    if stage is None or stage.task_id != msg.child_task_id:
        return "not a stage of this workflow"
    summary = msg.result.summary if msg.result else None
    run.stage(stage.spec.id, status=msg.status, summary=summary, cost_usd=msg.cost_usd)
    if msg.head is not None and msg.head_depth >= run.record.head_depth:
        run.update(head=msg.head, head_depth=msg.head_depth)
    run.emit(
        "workflow.stage_finished",
        {"stage_id": stage.spec.id, "task_id": msg.child_task_id, "status": msg.status},
    )
    if run.record.status in TERMINAL:
        return None
    if msg.status == "failed":
        _end(run, "failed", {"reason": "stage_failed", "stage_id": stage.spec.id})
    elif msg.status == "cancelled":
        _end(run, "cancelled", {"reason": "stage_cancelled", "stage_id": stage.spec.id})
    else:
        _advance(run)
    return None


def _answer(run: _Run, msg: WorkflowAnswer) -> str | None:
    record = run.record
    if record.status in TERMINAL or record.gate != msg.stage_id:
        return f"no approval is awaited for stage {msg.stage_id!r}"
    run.update(gate=None)
    if not msg.approved:
        comment = f": {msg.comment}" if msg.comment else ""
        run.stage(msg.stage_id, status="cancelled")
        _end(run, "cancelled", {"reason": f"stage {msg.stage_id} was refused{comment}"})
        return None
    run.stage(msg.stage_id, approved=True)
    _advance(run)
    return None


def _advance(run: _Run) -> None:
    """Start every stage whose dependencies completed; open the next gate; end when done."""
    record = run.record
    done = {s.spec.id: s for s in record.stages if s.status == "completed"}
    for stage in record.stages:
        if stage.status != "pending" or not all(d in done for d in stage.spec.depends_on):
            continue
        if stage.spec.approval and not stage.approved:
            if run.record.gate is None:
                run.update(gate=stage.spec.id)
                run.emit(
                    "workflow.awaiting_approval",
                    {"stage_id": stage.spec.id, "agent_type": stage.spec.agent_type,
                     "description": stage.spec.description},
                )  # fmt: skip
            continue
        _start(run, stage, {d: done[d].summary for d in stage.spec.depends_on})
    stages = run.record.stages
    if all(s.status == "completed" for s in stages):
        _end(run, "completed", {})
        return
    running = any(s.status not in ("pending", "skipped", *TERMINAL) for s in stages)
    status: TaskStatus = "awaiting_human" if run.record.gate else "running" if running else "queued"
    run.update(status=status)


def _start(run: _Run, stage: Stage, summaries: dict[str, str | None]) -> None:
    record = run.record
    task_id = stage_task_id(record.workflow_id, stage.spec.id)
    context = {**stage.spec.context}
    if summaries:
        context["depends_on"] = {k: v or "" for k, v in summaries.items()}
    submit = SubmitTask(
        **{
            **run.header(f"{task_id}.submit", task_id),
            "agent_id": f"agent_{task_id.removeprefix('task_')}",
        },
        agent_type=stage.spec.agent_type,
        description=stage.spec.description,
        context=context,
        parent=ParentRef(kind="workflow", task_id=record.workflow_id, call_id=stage.spec.id),
        depth=1,
        workspace_id=record.workspace_id,
        base=record.head,
    )
    run.effects.append(ReportToTask(message=submit))
    run.stage(stage.spec.id, status="queued", task_id=task_id)
    run.emit("workflow.stage_started", {"stage_id": stage.spec.id, "task_id": task_id,
                                         "agent_type": stage.spec.agent_type})  # fmt: skip


def _end(run: _Run, status: TaskStatus, data: dict[str, Any]) -> None:
    """End the workflow: what runs is cancelled, what has not started is skipped."""
    record = run.record
    for stage in record.stages:
        if stage.status == "pending":
            run.stage(stage.spec.id, status="skipped")
        elif stage.task_id and stage.status not in TERMINAL:
            cancel = CancelTask(
                **run.header(f"{stage.task_id}.cancel_workflow", stage.task_id),
                reason=f"its workflow {record.workflow_id} ended ({status})",
            )
            run.effects.append(ReportToTask(message=cancel))
    error = (
        {"code": data.get("reason", status), "message": str(data)} if status == "failed" else None
    )
    run.update(status=status, finished_at=run.now, gate=None, error=error)
    event: EventType = (
        "workflow.completed" if status == "completed"
        else "workflow.failed" if status == "failed" else "workflow.cancelled"
    )  # fmt: skip
    run.emit(event, {"status": status, "cost_usd": run.record.cost_usd(), **data})
