"""The metric families read from NATS, kept ready so a scrape never waits for NATS.

Rules:
- One refresh reads everything: `$SRV.STATS` (each process's own counts and histograms,
  `bus/metrics.py`, summed over instances; per-endpoint request counts), the streams' sizes,
  and counts from the edge's indexes of task records and agent summaries (`edge/index.py`: tasks
  by agent type and status, agents by status, what the stored agents used and did), which
  cost their number of entries in memory, never a bucket scan. It renders them to text once.
- A scrape serves the last rendered text and, when it is older than `metrics_max_age_s`,
  starts the next refresh in the background (one at a time): the figures from NATS are those
  of the previous scrape, however many tasks there are. Only the first scrape, or one after
  `metrics_stale_s` without any, waits for a refresh. An edge that is not scraped reads nothing.
- Each instance's last `$SRV.STATS` reply is kept for `INSTANCE_TTL_S`: an instance slow to
  answer one gathering keeps its counts in the sum instead of dipping it (a dip would read as
  a counter reset); one gone longer leaves the sum, as a restarted process does.
- Gauges derived from the agent summaries (`agentops_stored_*`) describe the agents stored
  now (deleting finished tasks lowers them), each as of its last status change (a summary is
  not written at every step: exact for agents that ended); rates come from the processes'
  counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

import nats.js.errors
import structlog

from agentops.bus.metrics import FAMILIES, Totals, merge
from agentops.core.state import OTHER_TOOL
from agentops.edge.context import Bus
from agentops.edge.discovery import gather
from agentops.edge.exposition import Exposition
from agentops.edge.index import Indexes
from agentops.protocol import subjects as s
from agentops.protocol.messages import AgentStatus, TaskStatus
from agentops.store.summaries import AgentSummary
from agentops.tools.registry import BUILTIN_TOOLS

log = structlog.get_logger(__name__)

STREAMS = (s.WORK_STREAM, s.EVENTS_STREAM, s.DLQ_STREAM)
INSTANCE_TTL_S = 60.0
STATUS_ENDPOINT = "status"


@dataclass
class BusFigures:
    """The rendered NATS families, their age, and each instance's last stats."""

    max_age_s: float
    stale_s: float
    agent_types: tuple[str, ...] = ()  # the configured ones: listed even with no task yet
    text: str | None = None
    taken_at: float = 0.0
    instances: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    refreshing: asyncio.Task[None] | None = None
    indexes: Indexes | None = None  # tasks and agents (edge/index.py); None: not shown

    async def current(self, bus: Bus, window_s: float) -> str | None:
        """The text to serve now (None: nothing could be read yet)."""
        age = time.monotonic() - self.taken_at
        if self.text is None or age > self.stale_s:
            task = self._start(bus, window_s)
            with contextlib.suppress(Exception):  # logged by `_logged`; served without
                await asyncio.shield(task)
        elif age > self.max_age_s:
            self._start(bus, window_s)
        return self.text

    def _start(self, bus: Bus, window_s: float) -> asyncio.Task[None]:
        if self.refreshing is None or self.refreshing.done():
            self.refreshing = asyncio.create_task(self._refresh(bus, window_s))
            self.refreshing.add_done_callback(_logged)
        return self.refreshing

    async def _refresh(self, bus: Bus, window_s: float) -> None:
        out = Exposition()
        await quick_families(out, bus, window_s, self.instances)
        if self.indexes is not None:
            await indexed_families(out, self.indexes, self.agent_types)
        self.text, self.taken_at = out.text(), time.monotonic()

    async def close(self) -> None:
        if self.refreshing is not None:
            self.refreshing.cancel()
            await asyncio.gather(self.refreshing, return_exceptions=True)


def _logged(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("edge.metrics_unavailable", error=repr(task.exception()))


async def quick_families(
    out: Exposition, bus: Bus, window_s: float, instances: dict[str, tuple[float, dict[str, Any]]]
) -> None:
    """The processes' own counts and the streams' sizes (a few requests)."""
    replies = await gather(bus.nc, s.SERVICE_STATS, window_s)
    _keep(instances, replies)
    stats = [reply for _, reply in instances.values()]
    _process_families(out, merge(_snapshots(stats)))
    _service_families(out, stats)
    await _stream_families(out, bus)


async def indexed_families(out: Exposition, indexes: Indexes, agent_types: tuple[str, ...]) -> None:
    """Tasks and agents from the edge's indexes of records and summaries (never a scan)."""
    summaries = (await indexes.tasks_synced()).values()
    tasks = Counter((t.agent_type, t.status) for t in summaries)
    kinds = sorted(set(agent_types) | {kind for kind, _ in tasks})
    out.family(
        "agentops_tasks", "gauge", "Tasks by agent type and status (the tasks KV bucket).",
        (({"agent_type": k, "status": st}, tasks.get((k, st), 0))
         for k in kinds for st in get_args(TaskStatus)),
    )  # fmt: skip
    heads = list((await indexes.agents_synced()).values())
    agents = Counter(a.status for a in heads)
    out.family(
        "agentops_agents", "gauge", "Agents by status (the agent summaries KV bucket).",
        (({"status": st}, agents.get(st, 0)) for st in get_args(AgentStatus)),
    )  # fmt: skip
    _stored_families(out, heads)


def _keep(
    instances: dict[str, tuple[float, dict[str, Any]]], replies: list[dict[str, Any]]
) -> None:
    now = time.monotonic()
    for reply in replies:
        if isinstance(reply.get("id"), str):
            instances[reply["id"]] = (now, reply)
    for ident, (seen, _) in list(instances.items()):
        if now - seen > INSTANCE_TTL_S:
            del instances[ident]


def _snapshots(stats: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for reply in stats:
        for endpoint in reply.get("endpoints") or ():
            if isinstance(endpoint, dict) and endpoint.get("name") == STATUS_ENDPOINT:
                data = endpoint.get("data")
                metrics = data.get("metrics") if isinstance(data, dict) else None
                if isinstance(metrics, dict):
                    yield metrics


def _process_families(out: Exposition, totals: Totals) -> None:
    """Every family the processes count, summed over their instances."""
    for family in FAMILIES:
        if family.kind == "counter":
            series = totals.counters.get(family.name, {})
            out.family(
                family.name, "counter", family.help,
                ((dict(zip(family.labels, k, strict=True)), round(v, 10))
                 for k, v in sorted(series.items())),
            )  # fmt: skip
        else:
            hists = totals.histograms.get(family.name, {})
            out.histogram(
                family.name, family.help,
                ((dict(zip(family.labels, k, strict=True)), h) for k, h in sorted(hists.items())),
            )  # fmt: skip


def _stored_families(out: Exposition, states: Iterable[AgentSummary]) -> None:
    """What the agents stored now have used and done, by agent type (gauges)."""
    tokens: Counter[tuple[str, str]] = Counter()
    cost: dict[str, float] = {}
    llm: Counter[tuple[str, str]] = Counter()
    tools: Counter[tuple[str, str, str]] = Counter()
    for state in states:
        kind = state.agent_type
        tokens[kind, "input"] += state.usage.input_tokens
        tokens[kind, "output"] += state.usage.output_tokens
        cost[kind] = cost.get(kind, 0.0) + state.usage.cost_usd
        llm[kind, "ok"] += state.llm_answers
        llm[kind, "error"] += state.llm_errors
        for name, tally in state.tool_results.items():
            if tally.ok:
                tools[kind, name, "ok"] += tally.ok
            if tally.failed:
                label = name if name in BUILTIN_TOOLS else OTHER_TOOL
                tools[kind, label, "error"] += tally.failed
    now = (
        " of the agents stored now, each as of its last status change (a gauge: deleting"
        " finished tasks lowers it)"
    )
    out.family(
        "agentops_stored_llm_tokens", "gauge", "LLM tokens used" + now + ".",
        (({"agent_type": k, "direction": d}, n) for (k, d), n in sorted(tokens.items())),
    )  # fmt: skip
    out.family(
        "agentops_stored_llm_cost_usd", "gauge", "LLM cost in USD" + now + ".",
        (({"agent_type": k}, round(v, 6)) for k, v in sorted(cost.items())),
    )  # fmt: skip
    out.family(
        "agentops_stored_llm_calls", "gauge", "LLM answers and errors" + now + ".",
        (({"agent_type": k, "outcome": o}, n) for (k, o), n in sorted(llm.items())),
    )  # fmt: skip
    out.family(
        "agentops_stored_tool_calls", "gauge", "Tool results by tool and outcome" + now + ".",
        (({"agent_type": k, "tool": t, "outcome": o}, n) for (k, t, o), n in sorted(tools.items())),
    )  # fmt: skip


async def _stream_families(out: Exposition, bus: Bus) -> None:
    streams: list[tuple[str, Any]] = []
    for name in STREAMS:
        try:
            streams.append((name, (await bus.js.stream_info(name)).state))
        except nats.js.errors.NotFoundError:
            continue
    out.family(
        "agentops_stream_messages", "gauge", "Messages stored in each JetStream stream.",
        (({"stream": n}, st.messages) for n, st in streams),
    )  # fmt: skip
    out.family(
        "agentops_stream_bytes", "gauge", "Bytes stored in each JetStream stream.",
        (({"stream": n}, st.bytes) for n, st in streams),
    )  # fmt: skip


def _service_families(out: Exposition, stats: Iterable[dict[str, Any]]) -> None:
    requests: list[tuple[dict[str, str], float]] = []
    errors: list[tuple[dict[str, str], float]] = []
    for reply in stats:
        for endpoint in reply.get("endpoints") or ():
            if not isinstance(endpoint, dict):
                continue
            labels = {
                "service": str(reply.get("name", "")),
                "instance": str(reply.get("id", "")),
                "endpoint": str(endpoint.get("name", "")),
            }
            requests.append((labels, float(endpoint.get("num_requests", 0) or 0)))
            errors.append((labels, float(endpoint.get("num_errors", 0) or 0)))
    out.family(
        "agentops_service_requests_total", "counter",
        "Requests handled per micro-service endpoint instance ($SRV.STATS).", requests,
    )  # fmt: skip
    out.family(
        "agentops_service_errors_total", "counter",
        "Errors per micro-service endpoint instance ($SRV.STATS).", errors,
    )  # fmt: skip
