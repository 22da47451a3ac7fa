"""`GET /metrics` in the Prometheus text format (0.0.4), and the edge's own counters.

Rules:
- The edge counts what only it sees (HTTP requests by method/route/status, WebSocket clients
  and frames) in memory, per process; Prometheus sums replicas.
- Everything else is read from NATS at scrape time, so no process has to push metrics: task
  and agent counts by status from KV, and from the same agent states what they used (LLM
  tokens, cost) and did (LLM calls, tool calls by tool and outcome); stream sizes from the
  JetStream API, per-service request counts from `$SRV.STATS`. If NATS is away, the edge still answers with its own
  counters and `agentops_nats_connected 0`.
- Routes are labelled by their pattern (`/tasks/{task_id}`), unknown paths as `unmatched`, so
  clients cannot blow up the label cardinality; likewise a tool name the model made up (a
  failed call to no builtin tool) is labelled `other`.
- Every request gets one canonical log line (method, route, status, duration) here.
- Label values are escaped (backslash, quote, newline); every family has HELP and TYPE.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

import nats.errors
import nats.js.errors
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from agentops.core.state import OTHER_TOOL, TASK_RECORD_ADAPTER, AgentState
from agentops.edge.apispec import Resp, operation
from agentops.edge.context import BUS, CONFIG, Bus
from agentops.edge.data import scan_heads
from agentops.edge.discovery import gather
from agentops.protocol import subjects as s
from agentops.protocol.messages import AgentStatus, TaskStatus
from agentops.store.kv import scan
from agentops.tools.registry import BUILTIN_TOOLS

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STREAMS = (s.WORK_STREAM, s.EVENTS_STREAM, s.DLQ_STREAM)

Sample = tuple[dict[str, str], float]


@dataclass
class EdgeMetrics:
    http_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    ws_clients: int = 0
    ws_events_sent: int = 0
    ws_disconnects: Counter[str] = field(default_factory=Counter)


METRICS = web.AppKey("metrics", EdgeMetrics)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class Exposition:
    """Builds the text format one metric family at a time."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            rendered = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            self._lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


QUIET = frozenset({"/health", "/metrics"})  # probed every few seconds: logged at debug


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request and writes its one canonical log line."""
    status = 500
    started = time.perf_counter()
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = route_label(request)
        request.app[METRICS].http_requests[(request.method, route, str(status))] += 1
        emit = log.debug if route in QUIET else log.info
        emit(
            "http.request",
            method=request.method,
            path=request.path,
            route=route,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _edge_families(out: Exposition, m: EdgeMetrics) -> None:
    out.family(
        "agentops_edge_http_requests_total",
        "counter",
        "HTTP requests handled by this edge, by method, route pattern and status.",
        (
            ({"method": k[0], "route": k[1], "status": k[2]}, v)
            for k, v in sorted(m.http_requests.items())
        ),
    )
    out.family(
        "agentops_edge_ws_clients",
        "gauge",
        "WebSocket clients connected to this edge.",
        [({}, m.ws_clients)],
    )
    out.family(
        "agentops_edge_ws_events_sent_total",
        "counter",
        "Event frames sent to WebSocket clients by this edge.",
        [({}, m.ws_events_sent)],
    )
    out.family(
        "agentops_edge_ws_disconnects_total",
        "counter",
        "WebSocket clients closed by this edge, by reason.",
        (({"reason": k}, v) for k, v in sorted(m.ws_disconnects.items())),
    )


def _work_families(out: Exposition, states: Iterable[AgentState]) -> None:
    """What the agents in the KV bucket have used and done, by agent type: LLM tokens, cost,
    LLM answers and failures, tool calls by outcome. Gauges: deleting agents lowers them."""
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
    out.family(
        "agentops_llm_tokens",
        "gauge",
        "LLM tokens used by the agents in the agents KV bucket.",
        (({"agent_type": k, "direction": d}, n) for (k, d), n in sorted(tokens.items())),
    )
    out.family(
        "agentops_llm_cost_usd",
        "gauge",
        "LLM cost in USD of the agents in the agents KV bucket.",
        (({"agent_type": k}, round(v, 6)) for k, v in sorted(cost.items())),
    )
    out.family(
        "agentops_llm_calls",
        "gauge",
        "LLM calls of the agents in the agents KV bucket, by outcome.",
        (({"agent_type": k, "outcome": o}, n) for (k, o), n in sorted(llm.items())),
    )
    out.family(
        "agentops_tool_calls",
        "gauge",
        "Tool calls of the agents in the agents KV bucket, by tool and outcome.",
        (({"agent_type": k, "tool": t, "outcome": o}, n) for (k, t, o), n in sorted(tools.items())),
    )


async def _bus_families(out: Exposition, bus: Bus, window_s: float) -> None:
    tasks = Counter(r.status for r in await scan(bus.tasks.kv, TASK_RECORD_ADAPTER))
    states = [head.state for head in await scan_heads(bus.agents.kv)]
    agents = Counter(a.status for a in states)
    out.family(
        "agentops_tasks",
        "gauge",
        "Tasks by status (from the tasks KV bucket).",
        (({"status": st}, tasks.get(st, 0)) for st in get_args(TaskStatus)),
    )
    out.family(
        "agentops_agents",
        "gauge",
        "Agents by status (from the agents KV bucket).",
        (({"status": st}, agents.get(st, 0)) for st in get_args(AgentStatus)),
    )
    _work_families(out, states)
    streams: list[tuple[str, Any]] = []
    for name in STREAMS:
        try:
            streams.append((name, (await bus.js.stream_info(name)).state))
        except nats.js.errors.NotFoundError:
            continue
    out.family(
        "agentops_stream_messages",
        "gauge",
        "Messages stored in each JetStream stream.",
        (({"stream": n}, st.messages) for n, st in streams),
    )
    out.family(
        "agentops_stream_bytes",
        "gauge",
        "Bytes stored in each JetStream stream.",
        (({"stream": n}, st.bytes) for n, st in streams),
    )
    requests: list[Sample] = []
    errors: list[Sample] = []
    for reply in await gather(bus.nc, s.SERVICE_STATS, window_s):
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
        "agentops_service_requests_total",
        "counter",
        "Requests handled per micro-service endpoint instance ($SRV.STATS).",
        requests,
    )
    out.family(
        "agentops_service_errors_total",
        "counter",
        "Errors per micro-service endpoint instance ($SRV.STATS).",
        errors,
    )


@operation(
    "Prometheus metrics", "system",
    {200: Resp("the text format 0.0.4 (README: Metrics lists every family)",
               media={"text/plain": {"type": "string"}})},
    public=True, bus=False,
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    out = Exposition()
    _edge_families(out, request.app[METRICS])
    connected = bus.nc.is_connected
    if connected:
        try:
            await _bus_families(out, bus, request.app[CONFIG].health_window_s)
        except nats.errors.Error as exc:
            log.warning("edge.metrics_unavailable", error=repr(exc))
            connected = False
    out.family(
        "agentops_nats_connected",
        "gauge",
        "Whether this edge is connected to NATS.",
        [({}, 1 if connected else 0)],
    )
    return web.Response(body=out.text().encode(), headers={"Content-Type": CONTENT_TYPE})
