"""Declare the streams and KV buckets every process relies on (idempotent, safe to race).

Every process calls `ensure_jetstream` at start-up, so any of them can come up first.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from agentops.protocol import subjects as s

# A crashed process's re-publishes land well inside this window, so JetStream drops them.
DUPLICATE_WINDOW_S = 15 * 60.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
DLQ_MAX_AGE_S = 14 * 24 * 3600.0
PLUGIN_MAX_AGE_S = 3600.0

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


async def ensure_jetstream(js: JetStreamContext) -> dict[str, KeyValue]:
    for config in STREAMS:
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with a different config (e.g. an older version): update in place.
            await js.update_stream(config)
    buckets: dict[str, KeyValue] = {}
    for kv_config in BUCKETS:
        try:
            buckets[kv_config.bucket] = await js.create_key_value(kv_config)
        except BadRequestError:
            buckets[kv_config.bucket] = await js.key_value(kv_config.bucket)
    return buckets
