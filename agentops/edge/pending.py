"""Read your writes: an agent id the API handed out is readable before its process starts it.

Rules:
- `POST /tasks` writes a small claim, agent id -> {task_id, agent_type, description,
  max_steps, created_at}, into the idempotency bucket before it publishes the submit and
  answers 201 (the bucket's 24 h TTL outlives any start-up; by then the task record exists).
- An agent whose head does not exist yet (its process has not handled the start: it is
  restarting, busy, or the orchestrator has not recorded the task) is shown from its task
  record, else from the claim, else from the edge's task index (a child task's agent, whose
  id a task record handed out): status `idle` (or its task's end, if it ended before the
  agent ran), step 0, an empty thread. Only an id none of these knows is 404.
- Listings too (`unstarted`): the agent of a recorded task that has not ended and has no
  summary yet is a row of `GET /agents`, as `pending_agent` shows it (`idle`), so a listing
  right after `POST /tasks`, on any edge, has the agent whose id the 201 handed out even
  while its process is busy. (One pass over the task index per listing, ~1 ms at 10,000
  tasks: ended tasks are skipped first.)
- Nothing here is written back: the agent's process writes its head when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from agentops.core.state import DESCRIPTION_CHARS, AgentState, TaskRecord
from agentops.edge.context import Bus, EdgeConfig
from agentops.edge.index import Indexes, TaskSummary
from agentops.protocol.messages import TERMINAL
from agentops.store.agents import Head
from agentops.store.summaries import AgentSummary


class AgentClaim(BaseModel):
    """What `POST /tasks` handed out, stored under the agent id before the 201."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str
    agent_id: str
    agent_type: str
    description: str
    max_steps: int | None = None
    budget_usd: float | None = None
    created_at: datetime


async def write_claim(kv: KeyValue, claim: AgentClaim) -> None:
    await kv.put(claim.agent_id, claim.model_dump_json().encode())


async def read_claim(kv: KeyValue, agent_id: str) -> AgentClaim | None:
    try:
        entry = await kv.get(agent_id)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    try:
        return AgentClaim.model_validate_json(entry.value or b"")
    except ValueError:  # an idempotency entry, or junk: not a claim
        return None


def _state(
    claim: AgentClaim | TaskRecord, agent_id: str, config: EdgeConfig, status: str = "idle"
) -> AgentState:
    spec = config.agent_specs.get(claim.agent_type)
    at = claim.created_at
    return AgentState.model_validate(
        {
            "agent_id": agent_id,
            "task_id": claim.task_id,
            "agent_type": claim.agent_type,
            "status": status,
            "max_steps": claim.max_steps or (spec.max_steps if spec else 0),
            "budget_usd": claim.budget_usd,
            "created_at": at,
            "updated_at": at,
            "description": claim.description[:DESCRIPTION_CHARS],
        }
    )


async def pending_agent(
    bus: Bus, indexes: Indexes, config: EdgeConfig, agent_id: str
) -> Head | None:
    """The agent as it is until its process starts it, or None if no task names it."""
    claim = await read_claim(bus.idempotency, agent_id)
    task_id = claim.task_id if claim is not None else None
    if task_id is None:
        for summary in (await indexes.tasks_synced()).values():
            if summary.agent_id == agent_id or agent_id in summary.agent_ids:
                task_id = summary.task_id
                break
    record = (await bus.tasks.load(task_id))[0] if task_id is not None else None
    if record is not None and agent_id in (record.agent_id, *record.agent_ids):
        status = record.status if record.status in TERMINAL else "idle"
        return Head(_state(record, agent_id, config, status), revision=0, thread_len=0)
    if claim is not None:
        return Head(_state(claim, agent_id, config), revision=0, thread_len=0)
    return None


def unstarted(
    tasks: Mapping[str, TaskSummary], started: Mapping[str, AgentSummary]
) -> dict[str, AgentSummary]:
    """The agents of the task index's unfinished tasks that have no summary yet (their
    process has not started them), `idle`."""
    out: dict[str, AgentSummary] = {}
    for task in tasks.values():
        if task.status in TERMINAL or task.deleting:
            continue
        for agent_id in (task.agent_id, *task.agent_ids):
            if agent_id not in started and agent_id not in out:
                out[agent_id] = AgentSummary(
                    agent_id=agent_id, agent_type=task.agent_type, task_id=task.task_id,
                    status="idle", created_at=task.created_at,
                )  # fmt: skip
    return out
