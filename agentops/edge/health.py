"""`GET /health`: is NATS reachable, and does every AgentOps process have a live instance?

Rules:
- Processes are found with `$SRV.PING` (each registers as a NATS micro service named
  `subjects.service_name(process)`); the expected set is `subjects.all_processes(types)` of
  the configured agent types (`EdgeConfig.agent_specs`: one agent process per type).
- The edge answering this request is itself up, whether or not it registered a service.
- 200 `healthy` only when NATS is connected and no expected process is missing; otherwise
  503 `degraded` with the same body, so probes and humans see what is missing.
- The tool executor's entry also shows the code-execution isolation in force (`isolation`,
  from its status endpoint), so an operator sees whether code runs sandboxed.
- `cluster`: the JetStream nodes seen (each stream's leader and replicas) and, per stream and
  bucket, its replicas, leader and lagging replicas (not current). A stream without a leader
  (its quorum lost, or no answer in time) makes the system `degraded`: its work stops.
- `jetstream`: every declared stream (work, events, threads, dead letters, the buckets' and
  the uploads store's) must exist and answer, and every durable consumer of the work stream
  the configured processes use must exist; one missing is `degraded`. Nothing here declares
  anything: the orchestrator declares missing streams again (`bus/setup.redeclare_missing`,
  every few seconds) and each process creates its own consumer again (`bus/consumer.py`).
- `dead_letters`: messages no process could apply (stream AGENTOPS_DLQ): how many are stored,
  how many arrived since this edge started, and the last one's subject and reason. Each one
  has already ended the agent or task it belonged to, so they do not make the system
  degraded; they are shown so an operator sees them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentops.bus.connection import ERROR_CODE, ERROR_MESSAGE, ORIGINAL_SUBJECT
from agentops.edge.apispec import Resp, operation
from agentops.edge.context import BUS, CONFIG
from agentops.edge.discovery import gather, instances_by_name
from agentops.edge.responses import Health
from agentops.protocol import subjects as s

SELF = "edge"
EXECUTOR = "tool-executor"


def nats_status(nc: Client) -> dict[str, Any]:
    url = nc.connected_url
    if not nc.is_connected or url is None:
        return {"connected": False, "server": None, "version": None}
    version = nc.connected_server_version
    return {
        # host:port only: the URL may carry credentials
        "connected": True,
        "server": f"{url.hostname}:{url.port}",
        "version": f"{version.major}.{version.minor}.{version.patch}",
    }


async def service_status(
    nc: Client, window_s: float, agent_types: Iterable[str]
) -> dict[str, dict[str, Any]]:
    found = instances_by_name(await gather(nc, s.SERVICE_PING, window_s))
    services: dict[str, dict[str, Any]] = {}
    for process in s.all_processes(agent_types):
        count = len(found.get(s.service_name(process), ()))
        if process == SELF:
            count = max(count, 1)
        services[process] = {"status": "up" if count else "missing", "instances": count}
    return services


async def executor_isolation(nc: Client, timeout_s: float) -> dict[str, Any] | None:
    """The isolation one tool-executor instance reports, or None if none answers."""
    try:
        reply = await nc.request(s.control_subject(EXECUTOR, "status"), b"", timeout=timeout_s)
        isolation = json.loads(reply.data).get("isolation")
    except Exception:  # no executor, timeout or a bad reply: the entry says "missing" anyway
        return None
    return isolation if isinstance(isolation, dict) else None


DLQ_START = web.AppKey("dlq_start", list)  # [the DLQ's last sequence when this edge started]


async def remember_dlq_start(app: web.Application) -> None:
    try:
        app[DLQ_START].append((await app[BUS].js.stream_info(s.DLQ_STREAM)).state.last_seq)
    except Exception:  # NATS away at start-up: counted from the first health check instead
        return


async def dead_letters(
    js: JetStreamContext, start: list[int], timeout_s: float
) -> dict[str, Any] | None:
    """None when JetStream does not answer within `timeout_s` (health stays quick)."""
    try:
        state = (await asyncio.wait_for(js.stream_info(s.DLQ_STREAM), timeout_s)).state
    except Exception:
        return None
    if not start:
        start.append(state.last_seq)
    out: dict[str, Any] = {"stored": state.messages, "since_start": state.last_seq - start[0]}
    if state.messages:
        try:
            last = await asyncio.wait_for(js.get_msg(s.DLQ_STREAM, seq=state.last_seq), timeout_s)
        except Exception:
            return out
        headers = last.headers or {}
        out["last"] = {
            "subject": headers.get(ORIGINAL_SUBJECT),
            "code": headers.get(ERROR_CODE),
            "error": headers.get(ERROR_MESSAGE),
        }
    return out


async def stream_cluster(js: JetStreamContext, stream: str, timeout_s: float) -> dict[str, Any]:
    """One stream's replicas, leader and lagging replicas; `leader` None when it has none."""
    try:
        info = await asyncio.wait_for(js.stream_info(stream), timeout_s)
    except Exception as exc:  # no leader answers: 503 / timeout
        return {"leader": None, "error": type(exc).__name__}
    cluster = info.cluster
    peers = (cluster.replicas or []) if cluster is not None else []
    return {
        "replicas": info.config.num_replicas or 1,
        "leader": cluster.leader if cluster is not None else None,
        "followers": sorted(p.name for p in peers),
        "lagging": sorted(p.name for p in peers if not p.current or p.offline),
    }


async def cluster_status(js: JetStreamContext, timeout_s: float) -> dict[str, Any]:
    names = s.declared_streams()
    found = await asyncio.gather(*(stream_cluster(js, n, timeout_s) for n in names))
    streams = dict(zip(names, found, strict=True))
    nodes = sorted(
        {x["leader"] for x in found if x["leader"]}
        | {f for x in found for f in x.get("followers", ())}
    )
    return {
        "nodes": nodes,
        "streams": streams,
        "quorum_lost": sorted(n for n, x in streams.items() if x["leader"] is None),
    }


STREAM_INFO_S = 2.0


async def _none() -> None:
    return None


def _stream_state(found: dict[str, Any]) -> str:
    """`ok`, `missing` or `unavailable` (slow or refused: not known to work), from the stream
    info `stream_cluster` read."""
    error = found.get("error")
    if error is None:
        return "ok"
    return "missing" if error == NotFoundError.__name__ else "unavailable"


async def jetstream_status(
    bus_nc: Client,
    cluster: dict[str, Any],
    agent_types: Iterable[str],
    timeout_s: float,
    api: str,
) -> dict[str, Any]:
    """Each declared stream `ok`, `missing` or `unavailable` (from the stream infos
    `cluster_status` read: one request per stream serves both), and the work stream's
    consumers that are missing (each process creates its own again; the orchestrator
    declares missing streams again)."""
    streams = {name: _stream_state(found) for name, found in cluster["streams"].items()}
    expected = s.work_consumers(agent_types)
    missing: list[str] | None
    if streams[s.WORK_STREAM] == "missing":
        missing = list(expected)
    else:
        missing = await _missing_consumers(bus_nc, api, expected, timeout_s)
    healthy = all(v == "ok" for v in streams.values()) and missing == []
    return {"status": "ok" if healthy else "degraded", "streams": streams,
            "missing_consumers": missing}  # fmt: skip


async def _missing_consumers(
    nc: Client, api: str, expected: tuple[str, ...], timeout_s: float
) -> list[str] | None:
    """None when JetStream does not say in time."""
    names: set[str] = set()
    offset = 0
    try:
        while True:
            request = json.dumps({"offset": offset}).encode()
            reply = await nc.request(s.consumer_names(api, s.WORK_STREAM), request, timeout_s)
            page = json.loads(reply.data)
            if "error" in page:
                return None
            names.update(page.get("consumers") or ())
            offset += len(page.get("consumers") or ())
            if not page.get("consumers") or offset >= int(page.get("total", 0)):
                break
    except Exception:
        return None
    return [c for c in expected if c not in names]


@operation(
    "Is everything up?", "system",
    {200: Resp("healthy: NATS connected, every process has a live instance, every stream, "
               "bucket and work consumer exists", model=Health),
     503: Resp("degraded: what is missing (or the error shape, if NATS fails mid-request)",
               model=Health, also_error=True)},
    public=True, bus=False,
)  # fmt: skip
async def health(request: web.Request) -> web.Response:
    nc = request.app[BUS].nc
    nats = nats_status(nc)
    config = request.app[CONFIG]
    window = config.health_window_s
    # Stream infos get more time than the discovery window: a slow answer is not a lost quorum.
    js = request.app[BUS].js
    services, cluster = await asyncio.gather(
        service_status(nc, window, config.agent_specs),
        cluster_status(js, max(window, STREAM_INFO_S)) if nats["connected"] else _none(),
    )
    if services.get(EXECUTOR, {}).get("status") == "up" and nats["connected"]:
        services[EXECUTOR]["isolation"] = await executor_isolation(nc, window)
    healthy = (
        nats["connected"]
        and all(v["status"] == "up" for v in services.values())
        and cluster is not None
        and not cluster["quorum_lost"]
    )
    jetstream = None
    if cluster is not None:
        jetstream = await jetstream_status(
            nc, cluster, config.agent_specs, window, s.js_api(config.jetstream_domain)
        )
        healthy = healthy and jetstream["status"] == "ok"
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "degraded",
        "nats": nats,
        "services": services,
    }
    if cluster is not None:
        body["cluster"] = cluster
    if jetstream is not None:
        body["jetstream"] = jetstream
    if nats["connected"]:
        body["dead_letters"] = await dead_letters(
            request.app[BUS].js, request.app[DLQ_START], window
        )
    return web.json_response(body, status=200 if healthy else 503)
