"""Declare the streams and KV buckets every process relies on (idempotent, safe to race).

Replicas follow the cluster (`replicas_for`): `[nats] replicas`, else R3 on three or more
nodes and R1 on one; a stream or bucket found with another number is updated in place.

The process allowed to (the orchestrator, `permissions.DECLARER`; every process when it
connects with the operator's own credentials) calls `ensure_jetstream` at start-up, and
`redeclare_missing` every few seconds after (a stream deleted while running is back within
seconds; /health shows it missing meanwhile). The
others call `attach_jetstream`: they wait for the streams they use and bind the buckets
without a request, so they need no stream or bucket rights (deploy/hybrid's remote gateway,
and every process of the embedded server, which has a NATS user per process).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from agentops.core.items import MAX_ITEM_BYTES
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError

log = structlog.get_logger(__name__)

# A crashed process's re-publishes land well inside this window, so JetStream drops them.
DUPLICATE_WINDOW_S = 15 * 60.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
DLQ_MAX_AGE_S = 14 * 24 * 3600.0
PLUGIN_MAX_AGE_S = 3600.0
UPLOAD_MAX_AGE_S = 24 * 3600.0

STREAMS = (
    StreamConfig(
        name=s.WORK_STREAM,
        description="AgentOps work: task inboxes, agent mailboxes, LLM and tool requests",
        subjects=list(s.WORK_SUBJECTS),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=8 * 1024 * 1024,
    ),
    StreamConfig(
        name=s.EVENTS_STREAM,
        description="AgentOps events, fanned out to WebSocket clients (resume by sequence)",
        subjects=list(s.EVENTS_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=EVENTS_MAX_AGE_S,
        max_bytes=2 * 1024**3,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    ),
    StreamConfig(
        name=s.THREADS_STREAM,
        description="AgentOps agent threads: item <index> of an agent on "
        "agentops.thread.<agent_id>.<index>, written once (again only if its step is decided "
        "again); the agent's head in agentops_agents says how many are committed",
        subjects=list(s.THREAD_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        max_msg_size=MAX_ITEM_BYTES + 64 * 1024,
        allow_direct=True,
    ),
    StreamConfig(
        name=s.DLQ_STREAM,
        description="AgentOps dead letters: messages that could not be handled",
        subjects=list(s.DLQ_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=DLQ_MAX_AGE_S,
        max_bytes=256 * 1024**2,
        discard=DiscardPolicy.OLD,
    ),
)

BUCKETS = (
    KeyValueConfig(
        bucket=s.AGENTS_BUCKET, description="Agent state threads", history=1, direct=True
    ),
    KeyValueConfig(
        bucket=s.SUMMARIES_BUCKET,
        description="Agent summaries for listings, written at status changes",
        history=1,
        direct=True,
    ),
    KeyValueConfig(bucket=s.TASKS_BUCKET, description="Task records", history=1, direct=True),
    KeyValueConfig(
        bucket=s.WORKFLOWS_BUCKET, description="Workflow records", history=1, direct=True
    ),
    KeyValueConfig(
        bucket=s.TOOL_CALLS_BUCKET,
        description="Tool call records by agent.step.call (idempotency)",
        history=1,
        direct=True,
    ),
    KeyValueConfig(
        bucket=s.IDEMPOTENCY_BUCKET,
        description="Idempotency-Key -> task id for POST /tasks",
        history=1,
        ttl=24 * 3600.0,
        direct=True,
    ),
    KeyValueConfig(
        bucket=s.PLUGINS_BUCKET,
        description="Plugin tool announcements by tool name (refreshed while the plugin lives)",
        history=1,
        # Storage clean-up only: readers judge liveness by each announcement's own ttl_s.
        ttl=PLUGIN_MAX_AGE_S,
        direct=True,
    ),
)


def streams(retention_days: int = 30) -> tuple[StreamConfig, ...]:
    """The stream configs; events are kept at least as long as the tasks they belong to."""
    events_age = max(EVENTS_MAX_AGE_S, (retention_days + 1) * 86_400.0)
    return tuple(
        replace(c, max_age=events_age) if c.name == s.EVENTS_STREAM else c for c in STREAMS
    )


UPLOADS = ObjectStoreConfig(
    bucket=s.UPLOADS_BUCKET,
    description="Uploaded archives (POST /uploads) until a task starts from them",
    ttl=UPLOAD_MAX_AGE_S,
)


def cluster_size(nc: Client) -> int:
    """How many servers the connected cluster has (1 for a lone server): the client URLs the
    server announces (`connect_urls`, every node of its cluster), else the seed list."""
    # nats-py keeps the server's INFO private; `connect_urls` lists every node's client URL
    # (this one too) and is absent on a lone server.
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    return max(len(set(info.get("connect_urls") or ())), 1)


def replicas_for(configured: int | None, nodes: int) -> int:
    """Stream and bucket replicas: `[nats] replicas` if set, else 3 on a cluster of three or
    more JetStream nodes, else 1 (R2 is never chosen: it cannot lose a node and keep quorum)."""
    if configured is not None:
        return configured
    return 3 if nodes >= 3 else 1


async def ensure_jetstream(
    js: JetStreamContext, retention_days: int = 30, replicas: int = 1,
    timeout: float = 60.0,
) -> dict[str, KeyValue]:  # fmt: skip
    """Declare every stream, the uploads object store and the buckets with `replicas`
    replicas; an existing one with fewer (an R1 deployment that became a cluster) is scaled
    up in place (`num_replicas` updated; JetStream copies the data to the new peers). A
    cluster still electing its meta leader answers 503: retried until `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _declare(js, retention_days, replicas)
        except (ServiceUnavailableError, nats.errors.TimeoutError, TimeoutError) as exc:
            if loop.time() >= deadline:
                raise ConfigError(
                    f"JetStream did not answer within {timeout:.0f}s ({type(exc).__name__}): "
                    "is a cluster without quorum?"
                ) from None
            log.info("jetstream.not_ready", error=type(exc).__name__)
            await asyncio.sleep(0.5)
        except APIError as exc:
            if exc.err_code == INSUFFICIENT_RESOURCES:
                raise ConfigError(
                    f"[nats] replicas: {replicas} replicas need as many JetStream servers in "
                    f"the cluster ({exc.description})"
                ) from None
            raise


INSUFFICIENT_RESOURCES = 10074  # JetStream: fewer peers than num_replicas


async def _declare(js: JetStreamContext, retention_days: int, replicas: int) -> dict[str, KeyValue]:
    # Buckets first and the work stream last: the other processes wait for the streams they
    # use (`attach_jetstream`), so once they see them every bucket exists too.
    buckets: dict[str, KeyValue] = {}
    for kv_config in BUCKETS:
        try:
            kv = await js.create_key_value(replace(kv_config, replicas=replicas))
        except BadRequestError:
            await _scale(js, s.kv_stream(kv_config.bucket), replicas)
            kv = await js.key_value(kv_config.bucket)
        buckets[kv_config.bucket] = kv
    try:
        await js.create_object_store(s.UPLOADS_BUCKET, config=replace(UPLOADS, replicas=replicas))
    except BadRequestError:  # exists
        await _scale(js, s.object_stream(s.UPLOADS_BUCKET), replicas)
    for config in sorted(streams(retention_days), key=lambda c: c.name == s.WORK_STREAM):
        config = replace(config, num_replicas=replicas)
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with a different config (an older version, fewer replicas): update.
            await js.update_stream(config)
            log.info("jetstream.stream_updated", stream=config.name, replicas=replicas)
    return buckets


async def _scale(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Set a bucket's stream to `replicas` replicas if it has another number."""
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) != replicas:
        await js.update_stream(replace(info.config, num_replicas=replicas))
        log.info("jetstream.stream_scaled", stream=stream, replicas=replicas)


async def redeclare_missing(
    js: JetStreamContext, retention_days: int = 30, replicas: int = 1
) -> list[str]:
    """Declare again every stream, bucket or the uploads store that no longer exists (deleted
    by hand, or lost with a server's store); returns their names. The declarer runs this
    every `REDECLARE_EVERY_S`, so a missing stream costs seconds, not a restart."""
    declared: list[str] = []

    async def gone(name: str) -> bool:
        try:
            await js.stream_info(name)
        except NotFoundError:
            return True
        return False

    for config in streams(retention_days):
        if config.name is not None and await gone(config.name):
            with contextlib.suppress(BadRequestError):  # declared meanwhile by a replica
                await js.add_stream(replace(config, num_replicas=replicas))
            declared.append(config.name)
    for kv_config in BUCKETS:
        if await gone(KV_STREAM_TEMPLATE.format(bucket=kv_config.bucket)):
            with contextlib.suppress(BadRequestError):
                await js.create_key_value(replace(kv_config, replicas=replicas))
            declared.append(kv_config.bucket)
    if await gone(s.object_stream(s.UPLOADS_BUCKET)):
        with contextlib.suppress(BadRequestError):
            await js.create_object_store(
                s.UPLOADS_BUCKET, config=replace(UPLOADS, replicas=replicas)
            )
        declared.append(s.UPLOADS_BUCKET)
    return declared


REDECLARE_EVERY_S = 3.0


ATTACH_TIMEOUT_S = 60.0
# The streams the remote LLM gateway waits for (`permissions.waits_for` says it per process).
ATTACHED_STREAMS = (s.WORK_STREAM, s.EVENTS_STREAM, s.DLQ_STREAM)


async def attach_jetstream(
    js: JetStreamContext,
    streams: tuple[str, ...] = ATTACHED_STREAMS,
    timeout: float = ATTACH_TIMEOUT_S,
) -> dict[str, KeyValue]:
    """Wait until each of `streams` exists (declared by a process with the rights to), then
    bind the buckets. Raises `ConfigError` saying what is missing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for name in streams:
        while (problem := await _stream_problem(js, name)) is not None:
            if loop.time() >= deadline:
                raise ConfigError(
                    f"stream {name} is not available after {timeout:.0f}s: {problem}. "
                    "This process does not create streams (the orchestrator does, or "
                    "AGENTOPS_JETSTREAM_DECLARE=false): start the orchestrator, or `agentops "
                    "up` on the machine that holds JetStream, first"
                )
            log.info("jetstream.waiting", stream=name, problem=problem)
            await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
    return {c.bucket: bind_bucket(js, c.bucket) for c in BUCKETS}


def bind_bucket(js: JetStreamContext, bucket: str, direct: bool | None = None) -> KeyValue:
    """A bucket's handle without a request: its stream info may be denied to this user, and
    the handle is fully determined by the declared config (as `js.key_value` would build it).
    `direct=False`: reads go through the stream's leader (`consistent_buckets`)."""
    (config,) = (c for c in BUCKETS if c.bucket == bucket)
    return KeyValue(
        name=bucket,
        stream=KV_STREAM_TEMPLATE.format(bucket=bucket),
        pre=KV_PRE_TEMPLATE.format(bucket=bucket),
        js=js,
        direct=bool(config.direct) if direct is None else direct,
    )


def consistent_buckets(
    nc: Client, js: JetStreamContext, buckets: dict[str, KeyValue]
) -> dict[str, KeyValue]:
    """On a cluster, bucket reads go through each bucket's leader: a direct get is answered by
    whichever replica is first, and a follower a few milliseconds behind would show an agent
    replica a state older than the one its message follows (it would then ignore a valid
    result as stale and the agent would wait forever). One server: direct gets, as declared."""
    if cluster_size(nc) < 2:
        return buckets
    return {name: bind_bucket(js, name, direct=False) for name in buckets}


async def _stream_problem(js: JetStreamContext, name: str) -> str | None:
    """None if the stream exists, else why it cannot be seen (for the operator)."""
    try:
        await js.stream_info(name)
    except NotFoundError:
        return "it does not exist yet"
    except (ServiceUnavailableError, nats.errors.NoRespondersError):
        return (
            "no JetStream answers (hub not connected, or wrong AGENTOPS_JETSTREAM_DOMAIN: "
            "through a leaf node it must be the hub's `jetstream { domain }`)"
        )
    except (TimeoutError, nats.errors.TimeoutError):
        return "JetStream did not answer (permission denied? see the nats-server log)"
    return None
