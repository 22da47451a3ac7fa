"""`GET /metrics` in the Prometheus text format (0.0.4), and the edge's own counters.

Rules:
- The edge counts what only it sees (HTTP requests by method/route/status, WebSocket clients
  and frames) in memory, per process; Prometheus sums replicas.
- Everything else comes from NATS (`edge/metrics_bus.py`): the processes' own histograms and
  counters (steps, LLM and tool calls, tokens, cost, task runs ended) summed from
  `$SRV.STATS`, tasks and agents by status from KV heads, stream sizes. No process pushes
  anything. Those figures are rendered by a background refresh and served ready, so a scrape
  costs the same with 10 tasks or 10,000; if NATS is away, the edge still answers with its
  own counters and `agentops_nats_connected 0`.
- Routes are labelled by their pattern (`/tasks/{task_id}`), unknown paths as `unmatched`, so
  clients cannot blow up the label cardinality; likewise a tool name the model made up (a
  failed call to no builtin tool) is labelled `other`.
- Every request gets one canonical log line (method, route, status, duration) here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from agentops.bus.metrics import Histogram
from agentops.edge.apispec import Resp, operation
from agentops.edge.context import BUS, CONFIG
from agentops.edge.exposition import CONTENT_TYPE, Exposition
from agentops.edge.index import INDEXES
from agentops.edge.metrics_bus import BusFigures

log = structlog.get_logger(__name__)

WS_FOLLOWS = ("task", "agent", "all")  # what a WebSocket client follows


@dataclass
class EdgeMetrics:
    http_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    ws_clients: int = 0
    ws_events_sent: int = 0
    ws_disconnects: Counter[str] = field(default_factory=Counter)
    # Live frames, by what the client follows (task, agent, all): the event's `ts` to the
    # edge writing it (`agentops_edge_ws_frame_delay_seconds`).
    ws_delay: dict[str, Histogram] = field(
        default_factory=lambda: {k: Histogram.empty() for k in WS_FOLLOWS}
    )


METRICS = web.AppKey("metrics", EdgeMetrics)
BUS_FIGURES = web.AppKey("bus_figures", BusFigures)


def setup(app: web.Application) -> None:
    """The edge's counters and the NATS figures' cache (closed on shutdown)."""
    config = app[CONFIG]
    app[METRICS] = EdgeMetrics()
    app[BUS_FIGURES] = BusFigures(
        config.metrics_max_age_s, config.metrics_stale_s, tuple(config.agent_specs),
        indexes=app[INDEXES],
    )  # fmt: skip

    async def close(app: web.Application) -> None:
        await app[BUS_FIGURES].close()

    app.on_cleanup.append(close)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


CLIENT_GONE = 499  # nginx's "client closed request": never counted as a server error
QUIET = frozenset({"/health", "/metrics"})  # probed every few seconds: logged at debug


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request and writes its one canonical log line. A request whose client
    went away (the handler cancelled: a WebSocket closed by the peer) is 499, not 500."""
    status = 500
    started = time.perf_counter()
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
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
    out.histogram(
        "agentops_edge_ws_frame_delay_seconds",
        "Event frames this edge wrote to WebSocket clients, from the event's time stamp (its "
        "emitter's clock) to the write, for events stamped after the client connected; by "
        "what the client follows (task, agent, all).",
        (({"follows": k}, h) for k, h in m.ws_delay.items()),
    )
    out.family(
        "agentops_edge_ws_disconnects_total",
        "counter",
        "WebSocket clients closed by this edge, by reason.",
        (({"reason": k}, v) for k, v in sorted(m.ws_disconnects.items())),
    )


@operation(
    "Prometheus metrics", "system",
    {200: Resp("the text format 0.0.4 (README: Metrics lists every family)",
               media={"text/plain": {"type": "string"}})},
    errors={
        401: "`[auth] metrics` names a role and no known token was sent",
        403: "`[auth] metrics` names a role this token does not have",
    },
    public=True, bus=False,
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    """The edge's own counters, then the figures read from NATS as of the last refresh
    (`agentops_edge_metrics_age_seconds` says how old)."""
    bus, config, figures = request.app[BUS], request.app[CONFIG], request.app[BUS_FIGURES]
    out = Exposition()
    _edge_families(out, request.app[METRICS])
    from_nats = await figures.current(bus, config.health_window_s) if bus.nc.is_connected else None
    out.family(
        "agentops_nats_connected",
        "gauge",
        "Whether this edge is connected to NATS.",
        [({}, 1 if bus.nc.is_connected else 0)],
    )
    out.family(
        "agentops_edge_metrics_age_seconds",
        "gauge",
        "Age of the figures read from NATS in this answer (refreshed in the background).",
        [({}, round(time.monotonic() - figures.taken_at, 3))] if from_nats else [],
    )
    body = out.text() + (from_nats or "")
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
