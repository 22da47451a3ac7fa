"""Is the process an agent waits for running? For `waiting_for.process` in an agent's status.

An agent waiting for the model has its request on the LLM gateway's consumer; one waiting for
tools, on the tool executor's. JetStream says whether a push consumer has any subscriber
(`push_bound`): none means no live process will take the agent's next message, so the status
says which process it waits for. One consumer-info request per process, kept `TTL_S`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from agentops.core.state import AgentState
from agentops.edge.context import BUS
from agentops.protocol import subjects as s

TTL_S = 2.0
_FOR = {
    "llm": ("llm-gateway", s.LLM_GATEWAY_CONSUMER),
    "tools": ("tool-executor", s.TOOL_EXECUTOR_CONSUMER),
}
SEEN = web.AppKey("liveness", dict)  # consumer -> (bound, when looked)


async def missing_process(app: web.Application, state: AgentState) -> str | None:
    """The process the agent's in-flight work waits for, when none is serving it."""
    flight = state.inflight
    if state.status != "running" or flight is None or flight.kind not in _FOR:
        return None
    if flight.kind == "tools" and all(c in state.waiting for c in flight.pending):
        return None  # only delegated tasks pending: `waiting_for.task` says so
    process, consumer = _FOR[flight.kind]
    return None if await _bound(app, consumer) else process


async def _bound(app: web.Application, consumer: str) -> bool:
    seen: dict[str, Any] = app[SEEN]
    now = time.monotonic()
    known = seen.get(consumer)
    if known is not None and now - known[1] < TTL_S:
        return bool(known[0])
    try:
        info = await app[BUS].js.consumer_info(s.WORK_STREAM, consumer)
        bound = bool(info.push_bound)
    except Exception:  # unknown: do not claim it is down
        bound = True
    seen[consumer] = (bound, now)
    return bound
