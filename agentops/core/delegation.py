"""Delegation, the agent's side: `delegate_task` starts a child task of another type in the
same workspace, and the call waits for it like any tool call. Pure.

Rules:
- The call is refused at once, as an error result the model reads, past the type's
  `max_delegation_depth` (default 3) or `max_children` (default 20).
- The child's ids derive from the parent's (`<task_id>-d<n>`, `<agent_id>-d<n>`, n counted in
  the state), so a decision made again names the same child.
- The child gets what is left of the parent's budget (`budget_usd` less what the parent and
  its earlier children spent): a child over it asks its own human, like any agent at its
  budget. What the child spent comes back in its result and counts toward the parent's.
- The parent's task (its orchestrator) starts the child, or answers the call with an error
  (an unknown type); the child's end comes back as the call's result, `{task_id, status,
  summary, artifacts, cost_usd}`. While it runs, `waiting` names it (`waiting_for.task`).
"""

from __future__ import annotations

from typing import Any

from agentops.core.state import AgentState
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import DelegateTask
from agentops.protocol.subjects import InvalidName, check_id
from agentops.tools.registry import DelegateTaskArgs

MAX_DELEGATION_DEPTH = 3
MAX_CHILDREN = 20
DELEGATE = "delegate_task"


def spent_usd(state: AgentState) -> float:
    """What the agent's task has spent: its own LLM calls and its children's."""
    return round(state.usage.cost_usd + state.children_cost_usd, 10)


def refusal(state: AgentState, max_depth: int, max_children: int) -> str | None:
    if state.depth + 1 > max_depth:
        return (
            f"delegation is limited to {max_depth} levels and this task is at level "
            f"{state.depth}: do this part yourself"
        )
    if state.delegations >= max_children:
        return f"this task already delegated {max_children} times, its limit: do the rest yourself"
    try:
        check_id(child_ids(state)[0], "child task id")
    except InvalidName:
        return "the tree of delegated tasks is too deep for task ids: do this part yourself"
    return None


def child_ids(state: AgentState) -> tuple[str, str]:
    n = state.delegations
    return f"{state.task_id}-d{n}", f"{state.agent_id}-d{n}"


def delegation(
    state: AgentState, header: dict[str, Any], step: int, call: ToolCall, args: DelegateTaskArgs
) -> tuple[DelegateTask, dict[str, Any]]:
    """The message that asks for the child, and the state changes of having asked."""
    task_id, agent_id = child_ids(state)
    budget = None
    if state.budget_usd is not None:
        budget = max(0.0, round(state.budget_usd - spent_usd(state), 10))
    message = DelegateTask(
        **header,
        child_task_id=task_id,
        child_agent_id=agent_id,
        agent_type=args.agent_type,
        description=args.description,
        context=args.context or {},
        step=step,
        call_id=call.id,
        parent_agent_type=state.agent_type,
        budget_usd=budget,
        depth=state.depth + 1,
    )
    changes = {"delegations": state.delegations + 1, "waiting": {**state.waiting, call.id: task_id}}
    return message, changes


def delegated(state: AgentState, call_id: str, ok: bool, result: Any) -> dict[str, Any]:
    """The state changes when a delegating call's answer arrives: no longer waiting, and
    what the child spent counted."""
    waiting = {k: v for k, v in state.waiting.items() if k != call_id}
    cost = result.get("cost_usd") if ok and isinstance(result, dict) else None
    spent = float(cost) if isinstance(cost, int | float) and cost >= 0 else 0.0
    return {"waiting": waiting, "children_cost_usd": round(state.children_cost_usd + spent, 10)}


def refused_error(message: str) -> ErrorInfo:
    return ErrorInfo(code="delegation_refused", message=message)
