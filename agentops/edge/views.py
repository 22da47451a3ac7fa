"""How task records and agent heads look over HTTP (pure functions, no I/O).

Rules:
- Internal bookkeeping (`last_msg_id`, `outbox`, `events_emitted`) never leaves the edge.
- Everything here reads an agent's head (its tallies: `description`, `open_requests`,
  `error_count`, `tool_calls`, ...), never its thread: a listing costs the number of agents,
  not the length of their runs. The one open human request shown comes with the head (read
  by index, `edge/data.open_request`).
- `awaiting_human` is the status, the one fact `POST .../human-response` checks; the open
  request is shown whenever there is one (also while paused).
- A task's `current_step`, `usage` and `budget_usd` are refreshed from its agent's head,
  since the orchestrator only hears about status changes (a human may raise the budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.core.state import AgentState, HumanRequestItem, TaskRecord
from agentops.store.summaries import AgentSummary

HIDDEN_TASK_FIELDS = frozenset(
    {"last_msg_id", "outbox", "events_emitted", "started", "parent", "child_costs"}
)
HIDDEN_AGENT_FIELDS = frozenset({"last_msg_id", "outbox", "thread"})


def task_view(record: TaskRecord, agent: AgentState | None = None) -> dict[str, Any]:
    body = record.model_dump(mode="json", exclude=set(HIDDEN_TASK_FIELDS))
    usage = record.usage
    if agent is not None and agent.agent_id == record.agent_id:
        # The agent's state is fresher: the orchestrator hears only of status changes.
        body["current_step"] = max(record.current_step, agent.step)
        body["budget_usd"] = agent.budget_usd
        if (
            agent.usage.cost_usd >= usage.cost_usd
            and agent.usage.input_tokens >= usage.input_tokens
        ):
            usage = agent.usage
        body["usage_by_agent"] = {agent.agent_id: agent.usage.model_dump(mode="json")}
    body["usage"] = usage.model_dump(mode="json")
    body["cost_usd"] = usage.cost_usd
    # The whole tree's: this task's own calls and what its descendants spent.
    body["cost_usd_total"] = round(usage.cost_usd + record.children_cost_usd, 10)
    body["parent_task_id"] = record.parent.task_id if record.parent else None
    return body


def _spec_fields(agent_type: str, specs: Mapping[str, AgentSpec]) -> dict[str, Any]:
    spec = specs.get(agent_type)
    if spec is None:  # a type no longer configured (or from a newer deploy): what we know
        return {"name": agent_type, "role": "", "capabilities": []}
    return {"name": spec.name, "role": spec.role, "capabilities": list(spec.capabilities)}


def request_view(request: HumanRequestItem | None) -> dict[str, Any] | None:
    return request.model_dump(mode="json") if request is not None else None


def agent_summary(
    state: AgentState | AgentSummary, specs: Mapping[str, AgentSpec]
) -> dict[str, Any]:
    """A row of `GET /agents`; `specs` are the configured agent types (names, roles)."""
    return {
        "agent_id": state.agent_id,
        "agent_type": state.agent_type,
        **_spec_fields(state.agent_type, specs),
        "status": state.status,
        "current_task": state.description or None,
        "task_id": state.task_id,
        "current_step": state.step,
    }


def waiting_for(
    state: AgentState, request: HumanRequestItem | None, process: str | None = None
) -> dict[str, str] | None:
    """What the agent waits for (DESIGN §4c): a child `task`, a `human`'s answer, or a
    `process` that is not running (its next hand-over has no live consumer)."""
    out: dict[str, str] = {}
    if state.waiting:
        out["task"] = next(iter(state.waiting.values()))
    if state.status == "awaiting_human" and request is not None:
        out["human"] = request.request_id
    if process is not None:
        out["process"] = process
    return out or None


def agent_status(
    state: AgentState,
    request: HumanRequestItem | None,
    specs: Mapping[str, AgentSpec],
    process: str | None = None,
) -> dict[str, Any]:
    return {
        "agent_id": state.agent_id,
        "agent_type": state.agent_type,
        "name": _spec_fields(state.agent_type, specs)["name"],
        "status": state.status,
        "current_step": state.step,
        "max_steps": state.max_steps,
        "task": {"task_id": state.task_id, "description": state.description or None},
        "awaiting_human": state.status == "awaiting_human",
        "pending_requests": len(state.open_requests),
        "human_request": request_view(request),
        "errors": state.error_count,
        "tool_calls": state.tool_calls,
        "usage": state.usage.model_dump(mode="json"),
        "waiting_for": waiting_for(state, request, process),
    }


def head_view(state: AgentState, request: HumanRequestItem | None) -> dict[str, Any]:
    """The state's fields but its thread (which `GET /agents/{id}/state` streams after)."""
    body = state.model_dump(mode="json", exclude=set(HIDDEN_AGENT_FIELDS))
    body["awaiting_human"] = state.status == "awaiting_human"
    body["human_request"] = request_view(request)
    return body
