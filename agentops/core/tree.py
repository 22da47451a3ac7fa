"""Trees of tasks, the orchestrator's side (DESIGN §4c): delegated children and their parents.
Pure; each function acts on one record inside the orchestrator reducer's `Run`.

Rules:
- A delegation arrives at the parent's task inbox: the parent's record lists the child and
  the child is submitted to its own inbox (one writer per record: each inbox's lane writes
  its own), working in the parent's workspace, one level deeper, with what is left of the
  budget. An unknown agent type, or a parent that has ended, answers the delegating call
  with an error instead.
- A child's end goes to its parent's inbox (`ChildFinished`); the parent's record adds what
  the child's tree cost (`cost_usd_total` = its own + its descendants') and the delegating
  agent gets `{task_id, status, summary, artifacts, cost_usd}` as its call's result. A
  workflow parent has its own reducer (`core/workflow.py`).
- Cancelling a task cancels its children (each cancels its own), under ids per run.
- Ids derive from the child's id, so a redelivered message asks for nothing twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentops.core.effects import ReportToTask, SendToAgent
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import (
    TERMINAL,
    CancelTask,
    ChildFinished,
    DelegateTask,
    ParentRef,
    SubmitTask,
    TaskStatus,
    ToolCompleted,
)

if TYPE_CHECKING:
    from agentops.core.orchestrator import Run

DELEGATE = "delegate_task"


def delegate(run: Run, msg: DelegateTask, agent_types: frozenset[str] | None) -> str | None:
    record = run.record
    problem = None
    if record.status in TERMINAL:
        problem = f"task {record.task_id} has ended"
    elif agent_types is not None and msg.agent_type not in agent_types:
        known = ", ".join(sorted(agent_types))
        problem = f"there is no agent type {msg.agent_type!r}; delegate to one of: {known}"
    if problem is not None:
        answer_call(run, msg, ok=False, error=ErrorInfo(code="delegation_refused", message=problem))
        return None
    if msg.child_task_id in record.children:
        return "already delegated"
    parent = ParentRef(
        kind="task",
        task_id=record.task_id,
        agent_id=msg.agent_id,
        agent_type=msg.parent_agent_type,
        step=msg.step,
        call_id=msg.call_id,
    )
    submit = SubmitTask(
        **{**run.header("child"), "id": f"{msg.child_task_id}.submit", "task_id": msg.child_task_id,
           "agent_id": msg.child_agent_id},
        agent_type=msg.agent_type,
        description=msg.description,
        context=msg.context,
        budget_usd=msg.budget_usd,
        parent=parent,
        depth=msg.depth,
        workspace_id=record.workspace_id or record.task_id,
    )  # fmt: skip
    run.update(children=(*record.children, msg.child_task_id))
    run.effects.append(_to_task(submit))
    return None


def answer_call(run: Run, msg: DelegateTask, *, ok: bool, result: object = None,
                error: ErrorInfo | None = None) -> None:  # fmt: skip
    """The delegating agent's call answered (a refusal here)."""
    assert msg.agent_id is not None
    reply = ToolCompleted(
        id=f"{msg.child_task_id}.delegate_answer",
        source="orchestrator",
        task_id=msg.task_id,
        agent_id=msg.agent_id,
        causation_id=msg.id,
        ts=run.now,
        step=msg.step,
        call_id=msg.call_id,
        name=DELEGATE,
        ok=ok,
        result=result,
        error=error,
    )
    run.effects.append(_to_agent(msg.parent_agent_type, reply))


def child_finished(run: Run, msg: ChildFinished) -> str | None:
    record = run.record
    if msg.child_task_id not in record.children:
        return "not a child of this task"
    parent = msg.parent
    costs = {**record.child_costs, msg.child_task_id: msg.cost_usd}  # a follow-up reports again
    run.update(child_costs=costs, children_cost_usd=round(sum(costs.values()), 10))
    if parent.agent_id is None or parent.agent_type is None:
        return None
    result: dict[str, Any] = {
        "task_id": msg.child_task_id,
        "status": msg.status,
        "summary": msg.result.summary if msg.result else None,
        "artifacts": list(msg.result.artifacts) if msg.result else [],
        "cost_usd": msg.cost_usd,
    }
    if msg.error is not None:
        result["error"] = msg.error.model_dump()
    reply = ToolCompleted(
        id=f"{msg.child_task_id}.delegate_result",
        source="orchestrator",
        task_id=record.task_id,
        agent_id=parent.agent_id,
        causation_id=msg.id,
        ts=run.now,
        step=parent.step,
        call_id=parent.call_id,
        name=DELEGATE,
        ok=True,
        result=result,
    )
    run.effects.append(_to_agent(parent.agent_type, reply))
    return None


def tell_parent(run: Run, status: TaskStatus, head_depth: int = 0) -> None:
    """A child that ended (its work committed) tells its parent, with what its whole tree
    cost and the commit of its work."""
    record = run.record
    if record.parent is None:
        return
    cost = round(record.usage.cost_usd + record.children_cost_usd, 10)
    suffix = "" if record.run == 1 else f".r{record.run}"
    finished = ChildFinished(
        **{**run.header("finished"), "id": f"{record.task_id}.finished{suffix}",
           "task_id": record.parent.task_id, "agent_id": record.parent.agent_id},
        child_task_id=record.task_id,
        parent=record.parent,
        status=status,
        result=record.result,
        error=record.error,
        cost_usd=cost,
        head=record.head,
        head_depth=head_depth,
    )  # fmt: skip
    run.effects.append(_to_task(finished))


def cancel_children(run: Run, reason: str) -> None:
    record = run.record
    suffix = "" if record.run == 1 else f".r{record.run}"
    for child in record.children:
        cancel = CancelTask(
            **{**run.header("cancel"), "id": f"{child}.cancel_parent{suffix}", "task_id": child},
            reason=f"{reason} (its parent task {record.task_id} was cancelled)",
        )  # fmt: skip
        run.effects.append(_to_task(cancel))


def _to_task(message: SubmitTask | ChildFinished | CancelTask) -> ReportToTask:
    return ReportToTask(message=message)


def _to_agent(agent_type: str, message: ToolCompleted) -> SendToAgent:
    return SendToAgent(agent_type=agent_type, message=message)
