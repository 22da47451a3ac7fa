"""Reading task records and agent states for the edge, and waiting for another process to act.

Rules:
- The edge never writes a task record or an agent state (their owners do, with CAS); it reads
  them and publishes commands.
- Task and agent listings come from the edge's indexes (`edge/index.py`), never a scan;
  workflows (few) are still read in one pass (`store.kv.scan`).
- `wait_for` polls until a predicate holds or the deadline passes and returns the last value
  it saw: the handler decides what an unconfirmed command means for its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from pydantic import BaseModel

from agentops.core.state import HumanRequestItem, TaskRecord
from agentops.edge.context import Bus
from agentops.edge.errors import not_found
from agentops.store.agents import Head
from agentops.store.kv import CorruptDocument

log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")

SCAN_TIMEOUT_S = 5.0


async def wait_for(
    load: Callable[[], Awaitable[V | None]], done: Callable[[V], bool], within_s: float
) -> V | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    delay = 0.01
    while True:
        value = await load()
        remaining = deadline - loop.time()
        if (value is not None and done(value)) or remaining <= 0:
            return value
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.2)


async def find_task(bus: Bus, task_id: str) -> TaskRecord | None:
    record, _ = await bus.tasks.load(task_id)
    return record


async def find_agent(bus: Bus, agent_id: str) -> Head | None:
    return await bus.agents.head(agent_id)


async def get_task(bus: Bus, task_id: str) -> TaskRecord:
    record = await find_task(bus, task_id)
    if record is None:
        raise not_found("task", task_id)
    return record


async def get_agent(bus: Bus, agent_id: str) -> Head:
    head = await find_agent(bus, agent_id)
    if head is None:
        raise not_found("agent", agent_id)
    return head


async def open_request(bus: Bus, head: Head) -> tuple[int, HumanRequestItem] | None:
    """The newest unanswered human request and its thread index (one item read)."""
    if not head.state.open_requests:
        return None
    index = head.state.open_requests[-1]
    if head.legacy:
        item = head.state.thread[index]
    else:
        (item,) = await bus.agents.items(head.state.agent_id, index, index + 1)
    if not isinstance(item, HumanRequestItem):
        raise CorruptDocument(f"agent {head.state.agent_id}: item {index} is not a human request")
    return index, item
