"""The orchestrator reducer: `step(record, message, now) -> Decision`. Pure.

Task intake and lifecycle: a submission creates the task record and starts its agent; a
cancel is forwarded to the agent; agent reports update the record, and a terminal report
emits `task.completed` / `task.failed` / `task.cancelled`. A message that could not be
applied (`FailTask`) ends the task `failed`, reason `internal_error`. A delete of a finished
task marks the record `deleting`; the shell then removes its data and the record itself
(`services/orchestrator.py`). Same crash-safety rule as the agent: the last applied message
id and its effects are kept with the record.

Workspaces (DESIGN §4b): a task with a source (git, upload, another task) asks the tool
executor to prepare its workspace first and starts its agent when it is ready (or fails,
reason `workspace_error`); without one the agent starts at once in an empty workspace. Each
run's end asks the executor to commit what it changed (author: the agent type). A message
to a finished task starts a follow-up run (`run` + 1, `task.resumed`); to a running one it
steers it. Reports and commits of an earlier run are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, assert_never

from agentops.core import tree
from agentops.core.effects import Decision, Effect, Emit, SendToAgent, ToWorkspaces
from agentops.core.state import TaskRecord
from agentops.protocol.errors import ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentReport,
    CancelAgent,
    CancelTask,
    ChildFinished,
    CommitWorkspace,
    DelegateTask,
    DeleteTask,
    Event,
    EventType,
    FailAgent,
    FailTask,
    PrepareWorkspace,
    StartAgent,
    SubmitTask,
    TaskInbound,
    TaskMessage,
    TaskStatus,
    UserMessage,
    WorkspaceCommitted,
    WorkspaceFailed,
    WorkspaceReady,
)

SOURCE = "orchestrator"


class Run:
    def __init__(self, record: TaskRecord, msg_id: str, now: datetime) -> None:
        self.record = record
        self.msg_id = msg_id
        self.now = now
        self.effects: list[Effect] = []

    def update(self, **changes: Any) -> None:
        self.record = self.record.model_copy(update=changes)

    def emit(self, type_: EventType, data: dict[str, Any]) -> None:
        n = self.record.events_emitted
        self.update(events_emitted=n + 1)
        self.effects.append(
            Emit(
                event=Event(
                    id=f"{self.record.task_id}.ev{n}",
                    type=type_,
                    ts=self.now,
                    task_id=self.record.task_id,
                    agent_id=self.record.agent_id,
                    data=data,
                )
            )
        )

    def header(self, suffix: str) -> dict[str, Any]:
        """Envelope fields of a message to the task's agent; ids derive from the task id."""
        return {
            "id": f"{self.record.task_id}.{suffix}",
            "source": SOURCE,
            "task_id": self.record.task_id,
            "agent_id": self.record.agent_id,
            "causation_id": self.msg_id,
            "ts": self.now,
        }

    def decision(self) -> Decision[TaskRecord]:
        effects = tuple(self.effects)
        final = self.record.model_copy(
            update={"last_msg_id": self.msg_id, "outbox": effects, "updated_at": self.now}
        )
        return Decision(state=final, effects=effects)


def _submit(msg: SubmitTask, now: datetime) -> Decision[TaskRecord]:
    if msg.agent_id is None:
        raise PermanentError("task.submit without agent_id")
    shared = msg.workspace_id is not None and msg.workspace_id != msg.task_id
    # A delegated child snapshots the shared workspace for its base (its parent waits for it
    # anyway); a workflow's stage gets its base from the workflow and starts at once.
    delegated = shared and msg.parent is not None and msg.parent.kind == "task"
    prepare = msg.workspace is not None or delegated
    record = TaskRecord(
        task_id=msg.task_id,
        agent_type=msg.agent_type,
        description=msg.description,
        context=msg.context,
        agent_id=msg.agent_id,
        agent_ids=(msg.agent_id,),
        max_steps=msg.max_steps,
        budget_usd=msg.budget_usd,
        workspace_id=msg.workspace_id or msg.task_id,
        source=_shown_source(msg),
        started=not prepare,
        parent=msg.parent,
        depth=msg.depth,
        base=msg.base,
        created_at=msg.ts,
        updated_at=now,
    )
    run = Run(record, msg.id, now)
    if prepare:  # the agent starts once its workspace is ready (a shared one: committed)
        work = PrepareWorkspace(
            **run.header("prepare"), workspace_id=record.workspace_id, origin=msg.workspace,
            shared=shared,
        )  # fmt: skip
        run.effects.append(ToWorkspaces(message=work))
    else:
        _start_agent(run)
    created = {"agent_type": msg.agent_type, "description": msg.description, "status": "queued"}
    run.emit("task.created", {**created, **({"actor": msg.actor} if msg.actor else {})})
    return run.decision()


def _shown_source(msg: SubmitTask) -> dict[str, Any] | None:
    """The workspace's source as the record shows it (a URL without its credentials)."""
    source = msg.workspace
    if source is None:
        return None
    if source.git is not None:
        return {"git": {"url": mask_credentials(source.git.url), "ref": source.git.ref}}
    return source.model_dump(exclude_none=True)


def mask_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def _start_agent(run: Run) -> None:
    record = run.record
    start = StartAgent(
        **run.header("start"),
        agent_type=record.agent_type,
        description=record.description,
        context=record.context,
        max_steps=record.max_steps,
        budget_usd=record.budget_usd,
        workspace_id=record.workspace_id or record.task_id,
        depth=record.depth,
    )
    run.effects.append(SendToAgent(agent_type=record.agent_type, message=start))
    run.update(started=True)


def step(
    record: TaskRecord | None,
    msg: TaskInbound,
    now: datetime,
    agent_types: frozenset[str] | None = None,
) -> Decision[TaskRecord]:
    """`agent_types`: the types a delegation may name (None: any)."""
    if record is None:
        if isinstance(msg, SubmitTask):
            return _submit(msg, now)
        if isinstance(msg, SubmitTask | CancelTask | AgentReport):
            raise PermanentError(
                f"{msg.type} for unknown task {msg.task_id!r}", code="unknown_task"
            )
        return Decision(state=None, ignored="no such task")  # never created, or deleted
    if msg.id == record.last_msg_id:
        return Decision(state=None, effects=record.outbox, replay=True)
    if record.deleting and not isinstance(msg, DeleteTask):
        return Decision(state=None, ignored="task is being deleted")
    run = Run(record, msg.id, now)
    reason = _apply(run, msg, agent_types)
    if reason is not None:
        return Decision(state=None, ignored=reason)
    return run.decision()


def _apply(run: Run, msg: TaskInbound, agent_types: frozenset[str] | None) -> str | None:
    record = run.record
    match msg:
        case DelegateTask():
            return tree.delegate(run, msg, agent_types)
        case ChildFinished():
            return tree.child_finished(run, msg)
        case SubmitTask():
            return "already submitted"
        case CancelTask():
            if record.status in TERMINAL:
                return "already finished"
            if not record.started:  # its workspace is still being made: no agent to tell
                run.update(status="cancelled", finished_at=run.now)
                run.emit("task.cancelled", _finished_data(run.record, "cancelled", None))
                return None
            cancel = CancelAgent(
                **run.header(_per_run(record, "cancel")), reason=msg.reason, actor=msg.actor
            )
            run.effects.append(SendToAgent(agent_type=record.agent_type, message=cancel))
            tree.cancel_children(run, msg.reason)
        case DeleteTask():
            if record.status not in TERMINAL:
                return f"task is {record.status}"
            run.update(deleting=True)
        case FailTask():
            if record.status in TERMINAL:
                return "already finished"
            _finish(run, "failed", record.agent_id, error=msg.error)
            if record.started:
                fail = FailAgent(**run.header(_per_run(record, "fail")), error=msg.error)
                run.effects.append(SendToAgent(agent_type=record.agent_type, message=fail))
        case AgentReport():
            return _report(run, msg)
        case WorkspaceReady():
            if record.started or record.status in TERMINAL:
                return "not waiting for a workspace"
            run.update(base=msg.base)
            _start_agent(run)
        case WorkspaceFailed():
            if record.started or record.status in TERMINAL:
                return "not waiting for a workspace"
            _finish(run, "failed", None, error=msg.error, reason="workspace_error")
        case WorkspaceCommitted():
            if msg.run < record.run:
                return "a commit of an earlier run"
            run.update(head=msg.head or record.head, base=record.base or msg.base)
            if record.status in TERMINAL:  # the run's end, its work committed: tell the parent
                tree.tell_parent(run, record.status, head_depth=msg.depth)
        case TaskMessage():
            return _message(run, msg)
        case _:
            assert_never(msg)
    return None


def _report(run: Run, msg: AgentReport) -> str | None:
    record = run.record
    if msg.run < record.run:
        return "a report of an earlier run"
    if record.status in TERMINAL:
        return "task already finished"
    status: TaskStatus = "queued" if msg.status == "idle" else msg.status
    run.update(
        status=status, current_step=msg.step, usage=msg.usage, result=msg.result, error=msg.error
    )
    if status in TERMINAL:
        _finish(run, status, msg.agent_id)
    return None


def _finish(
    run: Run,
    status: TaskStatus,
    agent_id: str | None,
    *,
    error: ErrorInfo | None = None,
    reason: str | None = None,
) -> None:
    """End the task (or this run of it): its event, and the commit of what the run changed."""
    if error is not None:
        run.update(status=status, error=error)
    run.update(finished_at=run.now)
    record = run.record
    event_type: EventType = (
        "task.completed"
        if status == "completed"
        else "task.failed"
        if status == "failed"
        else "task.cancelled"
    )
    run.emit(event_type, _finished_data(record, status, agent_id, reason))
    if not record.started:  # nothing to commit: tell the parent now
        tree.tell_parent(run, status)
    else:  # the parent hears once the run's work is committed (`WorkspaceCommitted`)
        summary = record.result.summary if record.result else f"{record.agent_type}: {status}"
        commit = CommitWorkspace(
            **run.header(_per_run(record, "commit")),
            workspace_id=record.workspace_id or record.task_id,
            author=record.agent_type,
            message=summary,
            run=record.run,
            background=record.parent is None,  # a parent or workflow waits for a child's
        )
        run.effects.append(ToWorkspaces(message=commit))


def _message(run: Run, msg: TaskMessage) -> str | None:
    """A finished task runs again (a follow-up, run n+1); a running one forwards it."""
    record = run.record
    if not record.started:
        return "the task's agent has not started"
    if record.status not in TERMINAL:
        forward = UserMessage(
            **{**run.header("msg"), "id": f"{msg.id}.agent"},
            message=msg.message, context=msg.context, run=record.run,
        )  # fmt: skip
        run.effects.append(SendToAgent(agent_type=record.agent_type, message=forward))
        return None
    number = record.run + 1
    run.update(run=number, status="running", finished_at=None, result=None, error=None)
    resume = UserMessage(
        **run.header(f"resume.r{number}"),
        message=msg.message, context=msg.context, new_run=True, run=number,
    )  # fmt: skip
    run.effects.append(SendToAgent(agent_type=record.agent_type, message=resume))
    run.emit("task.resumed", {"run": number, "status": "running"})
    return None


def _per_run(record: TaskRecord, name: str) -> str:
    """A task-level message id: the first run keeps the plain name, later runs add `.r<n>`
    (a follow-up's cancel must not be taken for the first run's, JetStream would drop it)."""
    return name if record.run == 1 else f"{name}.r{record.run}"


def _finished_data(
    record: TaskRecord, status: str, agent_id: str | None, reason: str | None = None
) -> dict[str, Any]:
    """The data of `task.completed|failed|cancelled`; a failure says why in `reason` (the
    error's code: `max_steps`, `internal_error` when a message could not be applied,
    `workspace_error` when the workspace could not be made, ...)."""
    data: dict[str, Any] = {
        "status": status,
        "agent_id": agent_id,
        "run": record.run,
        "steps": record.current_step,
        "usage": record.usage.model_dump(),
        "result": record.result.model_dump() if record.result else None,
        "error": record.error.model_dump() if record.error else None,
    }
    if status == "failed":
        data["reason"] = reason or (record.error.code if record.error else "failed")
    return data
