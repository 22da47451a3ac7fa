"""What every edge handler reaches through the app: the bus, the stores and the config.

Rules:
- Handlers get their dependencies only through typed `web.AppKey`s (these, and `METRICS` in
  `edge.metrics`); nothing is global, so a test builds the app against its own nats-server.
- `EdgeConfig` holds the edge's own knobs. Timeouts are how long a handler waits for another
  process to confirm a command (read back from KV); tests shorten them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from agentops.agents.definitions import AgentSpec
from agentops.agents.loader import shipped_specs
from agentops.config_tables import TokenEntry, WorkspaceSettings
from agentops.core.state import TaskRecord
from agentops.core.workflow import WorkflowRecord
from agentops.protocol import subjects as s
from agentops.store.agents import AgentStore
from agentops.store.kv import DocumentStore, task_records, workflow_records

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class EdgeConfig:
    api_token: str | None = None  # the admin token (AGENTOPS_API_TOKEN)
    tokens: tuple[TokenEntry, ...] = ()  # [auth] tokens
    metrics_role: str = "none"  # [auth] metrics: the role GET /metrics needs
    auth_max_failures: int = 10  # failed attempts per client address per window...
    auth_window_s: float = 60.0  # ...before 429
    workspaces: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    # The configured agent types (`agents/loader.py`): what may be submitted, listed, expected.
    agent_specs: Mapping[str, AgentSpec] = field(default_factory=shipped_specs)
    submit_wait_s: float = 2.0  # POST /tasks: wait for the orchestrator's record
    cancel_wait_s: float = 3.0  # POST /tasks/{id}/cancel: wait for a terminal status
    control_wait_s: float = 3.0  # pause/resume: wait for the agent to confirm
    human_wait_s: float = 5.0  # human-response: wait for the answer in the thread
    health_window_s: float = 0.3  # how long to gather $SRV.PING / $SRV.STATS replies
    ws_queue_size: int = 1000  # frames queued per WebSocket client; one more is 1013
    ws_queue_bytes: int = 1024 * 1024  # bytes queued per client, its transport's buffer included
    ws_send_buffer: int = 64 * 1024  # the socket's SO_SNDBUF, so the kernel holds little more
    ws_slow_client_s: float = 5.0  # a replay the client frees no room for this long: 1013
    ws_feed_grace_s: float = 10.0  # the events feed down this long: every client gets 1011
    ws_feed_idle_s: float = 30.0  # no client this long: the feed's consumer is deleted
    ws_close_timeout_s: float = 5.0  # a close the client does not take in time: connection cut
    ws_max_bad_frames: int = 20  # junk frames a client may send before it is closed (1008)
    ws_heartbeat_s: float = 30.0
    client_max_size: int = MAX_BODY_BYTES
    jetstream_domain: str | None = None  # AGENTOPS_JETSTREAM_DOMAIN: the API prefix /health asks
    idle_timeout_s: float = 15.0  # an idle connection, or headers not complete, is closed then
    body_timeout_s: float = 20.0  # a request body with no byte this long closes the connection
    metrics_max_age_s: float = 5.0  # a scrape finding older NATS figures refreshes them (after)
    metrics_stale_s: float = 300.0  # ... and one finding figures this old waits for the refresh


@dataclass(frozen=True)
class Bus:
    """The edge's handle on NATS: connection, JetStream and the typed KV stores."""

    nc: Client
    js: JetStreamContext
    buckets: Mapping[str, KeyValue]

    @property
    def tasks(self) -> DocumentStore[TaskRecord]:
        return task_records(self.buckets)

    @property
    def agents(self) -> AgentStore:
        """Agent heads and threads (read only: each agent's process writes its own)."""
        return AgentStore(self.nc, self.js, self.buckets[s.AGENTS_BUCKET])

    @property
    def workflows(self) -> DocumentStore[WorkflowRecord]:
        return workflow_records(self.buckets)

    @property
    def idempotency(self) -> KeyValue:
        return self.buckets[s.IDEMPOTENCY_BUCKET]


BUS = web.AppKey("bus", Bus)
CONFIG = web.AppKey("config", EdgeConfig)
