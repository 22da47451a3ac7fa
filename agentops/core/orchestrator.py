"""The orchestrator reducer: `step(record, message, now) -> Decision`. Pure.

Task intake and lifecycle: a submission creates the task record and starts its agent; a
cancel is forwarded to the agent; agent reports update the record, and a terminal report
emits `task.completed` / `task.failed` / `task.cancelled`. A message that could not be
applied (`FailTask`) ends the task `failed`, reason `internal_error`. A delete of a finished
task marks the record `deleting`; the shell then removes its data and the record itself
(`services/orchestrator.py`). Same crash-safety rule as the agent: the last applied message
id and its effects are kept with the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentops.core.effects import Decision, Effect, Emit, SendToAgent
from agentops.core.state import TaskRecord
from agentops.protocol.errors import PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentReport,
    CancelAgent,
    CancelTask,
    DeleteTask,
    Event,
    EventType,
    FailAgent,
    FailTask,
    StartAgent,
    SubmitTask,
    TaskInbound,
    TaskStatus,
)

SOURCE = "orchestrator"


class _Run:
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
    record = TaskRecord(
        task_id=msg.task_id,
        agent_type=msg.agent_type,
        description=msg.description,
        context=msg.context,
        agent_id=msg.agent_id,
        agent_ids=(msg.agent_id,),
        max_steps=msg.max_steps,
        budget_usd=msg.budget_usd,
        created_at=msg.ts,
        updated_at=now,
    )
    run = _Run(record, msg.id, now)
    start = StartAgent(
        **run.header("start"),
        agent_type=msg.agent_type,
        description=msg.description,
        context=msg.context,
        max_steps=msg.max_steps,
        budget_usd=msg.budget_usd,
    )
    run.effects.append(SendToAgent(agent_type=msg.agent_type, message=start))
    created = {"agent_type": msg.agent_type, "description": msg.description, "status": "queued"}
    run.emit("task.created", {**created, **({"actor": msg.actor} if msg.actor else {})})
    return run.decision()


def step(record: TaskRecord | None, msg: TaskInbound, now: datetime) -> Decision[TaskRecord]:
    if record is None:
        if isinstance(msg, SubmitTask):
            return _submit(msg, now)
        if isinstance(msg, FailTask | DeleteTask):  # never created, or deleted already
            return Decision(state=None, ignored="no such task")
        raise PermanentError(f"{msg.type} for unknown task {msg.task_id!r}", code="unknown_task")
    if msg.id == record.last_msg_id:
        return Decision(state=None, effects=record.outbox, replay=True)
    run = _Run(record, msg.id, now)
    match msg:
        case SubmitTask():
            return Decision(state=None, ignored="already submitted")
        case CancelTask():
            if record.status in TERMINAL:
                return Decision(state=None, ignored="already finished")
            cancel = CancelAgent(**run.header("cancel"), reason=msg.reason, actor=msg.actor)
            run.effects.append(SendToAgent(agent_type=record.agent_type, message=cancel))
        case DeleteTask():
            if record.status not in TERMINAL:
                return Decision(state=None, ignored=f"task is {record.status}")
            run.update(deleting=True)
        case FailTask():
            if record.status in TERMINAL:
                return Decision(state=None, ignored="already finished")
            run.update(status="failed", error=msg.error, finished_at=now)
            run.emit("task.failed", _finished_data(run.record, "failed", record.agent_id))
            fail = FailAgent(**run.header("fail"), error=msg.error)
            run.effects.append(SendToAgent(agent_type=record.agent_type, message=fail))
        case AgentReport():
            if record.status in TERMINAL:
                return Decision(state=None, ignored="task already finished")
            status: TaskStatus = "queued" if msg.status == "idle" else msg.status
            run.update(
                status=status,
                current_step=msg.step,
                usage=msg.usage,
                result=msg.result,
                error=msg.error,
            )
            if status in TERMINAL:
                run.update(finished_at=now)
                event_type: EventType = (
                    "task.completed"
                    if status == "completed"
                    else "task.failed"
                    if status == "failed"
                    else "task.cancelled"
                )
                run.emit(event_type, _finished_data(run.record, status, msg.agent_id))
    return run.decision()


def _finished_data(record: TaskRecord, status: str, agent_id: str | None) -> dict[str, Any]:
    """The data of `task.completed|failed|cancelled`; a failure says why in `reason` (the
    error's code: `max_steps`, `internal_error` when a message could not be applied, ...)."""
    data: dict[str, Any] = {
        "status": status,
        "agent_id": agent_id,
        "steps": record.current_step,
        "usage": record.usage.model_dump(),
        "result": record.result.model_dump() if record.result else None,
        "error": record.error.model_dump() if record.error else None,
    }
    if status == "failed":
        data["reason"] = record.error.code if record.error else "failed"
    return data
