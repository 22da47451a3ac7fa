"""Reading task records and agent states for the edge, and waiting for another process to act.

Rules:
- The edge never writes a task record or an agent state (their owners do, with CAS); it reads
  them and publishes commands.
- `scan` reads every current document of a bucket in one pass (a KV watch: one ordered
  consumer, last value per key); an undecodable document is logged and skipped, so one bad
  value never breaks a listing.
- `wait_for` polls until a predicate holds or the deadline passes and returns the last value
  it saw: the handler decides what an unconfirmed command means for its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from nats.js.kv import KeyValue
from pydantic import BaseModel, TypeAdapter, ValidationError

from agentops.core.state import AgentState, TaskRecord
from agentops.edge.context import Bus
from agentops.edge.errors import not_found

log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")

SCAN_TIMEOUT_S = 5.0


async def scan(kv: KeyValue, adapter: TypeAdapter[T]) -> list[T]:
    watcher = await kv.watchall(ignore_deletes=True)
    out: list[T] = []
    try:
        while True:
            entry = await watcher.updates(timeout=SCAN_TIMEOUT_S)  # type: ignore[no-untyped-call]
            if entry is None:  # the watcher's "initial values done" marker
                break
            if not entry.value:
                continue
            try:
                out.append(adapter.validate_json(entry.value))
            except ValidationError as exc:
                log.warning("edge.corrupt_document", key=entry.key, error=str(exc))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return out


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


async def find_agent(bus: Bus, agent_id: str) -> AgentState | None:
    state, _ = await bus.agents.load(agent_id)
    return state


async def get_task(bus: Bus, task_id: str) -> TaskRecord:
    record = await find_task(bus, task_id)
    if record is None:
        raise not_found("task", task_id)
    return record


async def get_agent(bus: Bus, agent_id: str) -> AgentState:
    state = await find_agent(bus, agent_id)
    if state is None:
        raise not_found("agent", agent_id)
    return state
