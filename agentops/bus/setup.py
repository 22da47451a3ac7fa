"""Declare the streams and KV buckets every process relies on (idempotent, safe to race).

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

import nats.errors
import structlog
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
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
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


async def ensure_jetstream(js: JetStreamContext, retention_days: int = 30) -> dict[str, KeyValue]:
    for config in streams(retention_days):
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with a different config (e.g. an older version): update in place.
            await js.update_stream(config)
    with contextlib.suppress(BadRequestError):  # exists
        await js.create_object_store(s.UPLOADS_BUCKET, config=UPLOADS)
    buckets: dict[str, KeyValue] = {}
    for kv_config in BUCKETS:
        try:
            buckets[kv_config.bucket] = await js.create_key_value(kv_config)
        except BadRequestError:
            buckets[kv_config.bucket] = await js.key_value(kv_config.bucket)
    return buckets


async def redeclare_missing(js: JetStreamContext, retention_days: int = 30) -> list[str]:
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
                await js.add_stream(config)
            declared.append(config.name)
    for kv_config in BUCKETS:
        if await gone(KV_STREAM_TEMPLATE.format(bucket=kv_config.bucket)):
            with contextlib.suppress(BadRequestError):
                await js.create_key_value(kv_config)
            declared.append(kv_config.bucket)
    if await gone(s.object_stream(s.UPLOADS_BUCKET)):
        with contextlib.suppress(BadRequestError):
            await js.create_object_store(s.UPLOADS_BUCKET, config=UPLOADS)
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


def bind_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """A bucket's handle without a request: its stream info may be denied to this user, and
    the handle is fully determined by the declared config (as `js.key_value` would build it)."""
    (config,) = (c for c in BUCKETS if c.bucket == bucket)
    return KeyValue(
        name=bucket,
        stream=KV_STREAM_TEMPLATE.format(bucket=bucket),
        pre=KV_PRE_TEMPLATE.format(bucket=bucket),
        js=js,
        direct=bool(config.direct),
    )


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
