"""What each process may do on NATS: publish and subscribe allow lists, derived from subjects.

Every AgentOps process, plugin process and the remote LLM gateway connects as its own NATS
user; the server config (`natsconf.py`) gives each the `Permissions` built here, so a
compromised process (or code that steals its connection) can do only what that process does.

Rules:
- Everything is built from `protocol/subjects.py`: a new subject or consumer is allowed in
  the one function of the process that uses it, and nowhere else.
- Allow lists only; everything not listed is denied. Replies to requests a process received
  (`$SRV.PING`, its status endpoint, a plugin call) go out through `allow_responses`, not a
  publish right on other processes' inboxes. A remote leaf-node user (`Scope.leaf`) gets
  `_INBOX.>` instead, and event subjects in the shape the hub's stream interest has.
- Inboxes and mailboxes carry their message kind as the last token, so a process may send
  only its own kinds: the edge answers and pauses, the tool executor sends tool results, the
  gateway LLM answers, the orchestrator starts, cancels and fails agents.
- Stream and bucket management belongs to the process that declares them (`DECLARER`); the
  others wait for the streams they use (`waits_for`, one stream-info right each) and bind
  buckets without a request.
- Per agent type: the agent types a deployment runs are a parameter (`Scope.agent_types`).

What stays shared (NATS cannot tell agents apart by subject): every agent process may write
any agent's head and thread items and emit any agent's events; it validates what it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, get_args

from agentops.agents.loader import shipped_types
from agentops.protocol import subjects as s
from agentops.protocol.messages import EventType

DECLARER: Final = "orchestrator"
SERVICE_REPLY_S: Final = 60  # a process answers `$SRV.*` and its status endpoint at once
PLUGIN_REPLY_S: Final = 15 * 60  # a plugin call may run up to 600 s
# Event families by the process that emits them; agents emit every other family.
ORCHESTRATOR_EVENTS: Final = ("task", "workflow")
GATEWAY_EVENTS: Final = ("llm.delta",)


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # May answer each request it received once, within this many seconds: NATS's
    # `allow_responses` (the server remembers every reply subject it delivers for that long,
    # so it is short where answers are immediate). None: replies need a publish right.
    responses_s: int | None = SERVICE_REPLY_S

    def may_publish(self, subject: str) -> bool:
        return any(covers(p, subject) for p in self.publish)

    def may_subscribe(self, subject: str) -> bool:
        return any(covers(p, subject) for p in self.subscribe)


def covers(pattern: str, subject: str) -> bool:
    """Does the allow pattern include every subject `subject` stands for (NATS wildcards:
    `*` one token, `>` one or more trailing tokens)?"""
    want, have = subject.split("."), pattern.split(".")
    for i, token in enumerate(have):
        if token == ">":
            return len(want) > i
        if i >= len(want):
            return False
        if token == "*" and want[i] != ">":
            continue
        if token != want[i]:
            return False
    return len(want) == len(have)


@dataclass(frozen=True)
class Scope:
    """Where the permissions apply: the agent types deployed, the JetStream domain the
    process reaches streams through, and whether it is a remote leaf-node user."""

    agent_types: tuple[str, ...] = field(default_factory=shipped_types)
    domain: str | None = None
    leaf: bool = False


DEFAULT_SCOPE: Final = Scope()


@dataclass
class _Rights:
    process: str
    scope: Scope
    pub: list[str] = field(default_factory=list)
    sub: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return s.js_api(self.scope.domain)

    def publish(self, *subjects: str) -> None:
        self.pub.extend(subjects)

    def service(self) -> None:
        """Every AgentOps process: its own replies, micro-service discovery, status endpoint."""
        self.sub += [s.inbox_filter(self.process), *s.service_discovery(self.process)]
        self.sub.append(s.control_filter(self.process))

    def waits(self, *streams: str) -> None:
        self.publish(*(s.stream_api(self.api, "INFO", name) for name in streams))

    def consumer(self, name: str, filter_subject: str) -> None:
        """A durable push consumer of the work stream (create pinned to its filter, info for
        the stall watchdog, delete to replace an older version's), its acks, its kicks and
        the dead letters of what it takes."""
        work = s.WORK_STREAM
        self.publish(
            s.consumer_create(self.api, work, name, filter_subject),
            s.consumer_api(self.api, "INFO", work, name),
            s.consumer_api(self.api, "DELETE", work, name),
            s.acks(work, name),
            s.dead_letter(filter_subject),
        )
        if s.kick_filter(self.process) not in self.pub:
            self.publish(s.kick_filter(self.process))

    def follows(self, stream: str) -> None:
        """An ordered consumer (a KV watch or scan, a WebSocket feed) on a stream."""
        self.publish(
            s.consumer_create(self.api, stream),
            s.consumer_api(self.api, "INFO", stream, "*"),
            s.flow_control(stream),
        )

    def reads(self, bucket: str, watch: bool = False) -> None:
        """Direct gets (one server), and gets through the leader (a cluster: `bus/setup.py
        consistent_buckets`)."""
        self.publish(s.direct_get(self.api, s.kv_stream(bucket), by_subject=True))
        self.publish(s.stream_msg_get(self.api, s.kv_stream(bucket)))
        if watch:
            self.follows(s.kv_stream(bucket))

    def uploads(self, write: bool) -> None:
        """The uploads object store: read objects (ordered consumer on their chunks), or also
        write and replace them (the edge)."""
        stream = s.object_stream(s.UPLOADS_BUCKET)
        self.publish(s.stream_api(self.api, "INFO", stream), s.stream_msg_get(self.api, stream))
        if write:
            self.publish(
                s.object_subjects(s.UPLOADS_BUCKET), s.stream_api(self.api, "PURGE", stream)
            )
        else:  # nats-py's get subscribes by subject, finding the stream by name first
            self.follows(stream)
            self.publish(s.stream_names(self.api))

    def mailboxes(self, *kinds: str) -> None:
        for agent_type in self.scope.agent_types:
            self.publish(*(s.agent_mailbox_kind(agent_type, kind) for kind in kinds))

    def done(self) -> Permissions:
        if self.scope.leaf:
            self.publish(s.every_inbox())
        return Permissions(
            publish=tuple(dict.fromkeys(self.pub)),
            subscribe=tuple(dict.fromkeys(self.sub)),
            responses_s=None if self.scope.leaf else SERVICE_REPLY_S,
        )


def _orchestrator(r: _Rights) -> None:
    for lane in range(s.LANES):
        r.consumer(s.orchestrator_consumer(lane), s.task_lane_filter(lane))
    for stream in s.declared_streams():  # it declares them all
        r.publish(*(s.stream_api(r.api, action, stream) for action in ("CREATE", "UPDATE", "INFO")))
    deleted = (
        s.THREADS_STREAM, s.EVENTS_STREAM, s.AGENTS_BUCKET, s.SUMMARIES_BUCKET, s.TOOL_CALLS_BUCKET
    )  # fmt: skip
    kv_deleted = (*deleted[2:], s.TASKS_BUCKET, s.WORKFLOWS_BUCKET, s.IDEMPOTENCY_BUCKET)
    for stream in (*deleted[:2], *(s.kv_stream(b) for b in kv_deleted)):
        r.publish(s.stream_api(r.api, "PURGE", stream))  # deleting a task's data
    for bucket in (s.TASKS_BUCKET, s.WORKFLOWS_BUCKET):  # the retention sweep scans records
        r.reads(bucket, watch=True)
        r.publish(s.kv_keys(bucket))
    # Summaries filled in from the heads (a store older than them: `store/summaries.backfill`).
    r.follows(s.kv_stream(s.AGENTS_BUCKET))
    r.publish(s.kv_keys(s.SUMMARIES_BUCKET))
    # Starting, steering, cancelling and failing agents; a delegation's result to its parent.
    r.mailboxes("start", "cancel", "fail", "message", "tool")
    # Children (delegations, workflow stages) start, are cancelled and report to their parent.
    kinds = ("submit", "cancel", "child", "fail", "delete")
    r.publish(*(s.task_inbox_kind(k) for k in kinds))
    r.publish(*(s.events_of_family(f) for f in ORCHESTRATOR_EVENTS))
    r.publish(*(s.workspace_requests(op) for op in ("prepare", "commit", "delete")))


def _agent(agent_type: str) -> Callable[[_Rights], None]:
    def rights(r: _Rights) -> None:
        for lane in range(s.LANES):
            r.consumer(s.agent_consumer(agent_type, lane), s.agent_lane_filter(agent_type, lane))
        r.waits(s.WORK_STREAM, s.EVENTS_STREAM, s.THREADS_STREAM, s.DLQ_STREAM)
        r.reads(s.AGENTS_BUCKET)
        r.publish(s.kv_keys(s.AGENTS_BUCKET), s.every_thread_item())
        r.publish(s.kv_keys(s.SUMMARIES_BUCKET))  # at status changes (store/summaries.py)
        r.publish(s.direct_get(r.api, s.THREADS_STREAM))
        r.follows(s.kv_stream(s.PLUGINS_BUCKET))  # plugin tools, live
        r.publish(s.llm_requests(), s.tool_requests_filter())
        r.publish(*(s.task_inbox_kind(k) for k in ("report", "fail", "delegate")))
        r.publish(s.agent_mailbox_kind(agent_type, "fail"))  # a message it cannot apply
        families = sorted({t.split(".")[0] for t in get_args(EventType)})
        r.publish(*(s.events_of_family(f) for f in families if f not in ORCHESTRATOR_EVENTS))

    return rights


def _tool_executor(r: _Rights) -> None:
    r.consumer(s.TOOL_EXECUTOR_CONSUMER, s.tool_requests_filter())
    r.consumer(s.WORKSPACE_CONSUMER, s.workspace_requests_filter())
    r.waits(s.WORK_STREAM, s.DLQ_STREAM)
    r.reads(s.TOOL_CALLS_BUCKET)
    r.publish(s.kv_keys(s.TOOL_CALLS_BUCKET))  # claims
    r.mailboxes("tool")
    r.publish(s.task_inbox_kind("workspace"))  # a workspace prepared, failed, committed
    r.sub.append(s.workspace_endpoints())  # the edge's file, diff and archive requests
    r.uploads(write=False)
    r.follows(s.kv_stream(s.PLUGINS_BUCKET))
    r.publish(s.plugin_calls_filter())
    # Plugins from installed packages (entry points) are served by the executor itself.
    r.sub.append(s.plugin_calls_filter())
    r.publish(s.kv_keys(s.PLUGINS_BUCKET, "*"))


def _llm_gateway(r: _Rights) -> None:
    r.consumer(s.LLM_GATEWAY_CONSUMER, s.llm_requests())
    r.waits(s.WORK_STREAM, s.EVENTS_STREAM, s.DLQ_STREAM)
    r.mailboxes("llm")
    if r.scope.leaf:  # the hub's stream interest is `agentops.events.>`: the same shape
        r.publish(s.events_filter())
    else:
        r.publish(*(s.events_of_type(t) for t in GATEWAY_EVENTS))


def _edge(r: _Rights) -> None:
    # Every declared stream's info (stream sizes in /metrics; /health finds a missing or
    # broken one; the indexes' KV streams' last sequence) and the work stream's consumers.
    r.waits(*s.declared_streams())
    r.publish(s.consumer_names(r.api, s.WORK_STREAM))
    r.publish(s.stream_msg_get(r.api, s.DLQ_STREAM))  # /health: the last dead letter
    # An agent's `waiting_for.process`: has the consumer it waits on a subscriber (liveness)?
    for consumer in (s.LLM_GATEWAY_CONSUMER, s.TOOL_EXECUTOR_CONSUMER):
        r.publish(s.consumer_api(r.api, "INFO", s.WORK_STREAM, consumer))
    r.reads(s.AGENTS_BUCKET)  # heads by key; listings watch the summaries instead
    r.reads(s.SUMMARIES_BUCKET, watch=True)  # the index of agents (edge/index.py)
    r.reads(s.TASKS_BUCKET, watch=True)
    r.reads(s.WORKFLOWS_BUCKET, watch=True)
    r.publish(s.direct_get(r.api, s.THREADS_STREAM))
    r.reads(s.IDEMPOTENCY_BUCKET)
    r.publish(s.kv_keys(s.IDEMPOTENCY_BUCKET))
    r.follows(s.EVENTS_STREAM)  # the one WebSocket feed (edge/feed.py), deleted when idle
    r.publish(s.consumer_api(r.api, "DELETE", s.EVENTS_STREAM, "*"))
    r.publish(s.direct_get(r.api, s.EVENTS_STREAM))  # WebSocket replays: batches, no consumer
    kinds = ("submit", "cancel", "delete", "message", "workflow")
    r.publish(*(s.task_inbox_kind(k) for k in kinds))
    r.mailboxes("pause", "resume", "human")
    r.publish(s.workspace_endpoints())  # files, diffs and archives from the tool executor
    r.uploads(write=True)
    r.publish(s.SERVICE_PING, s.SERVICE_STATS, s.control_subject("tool-executor", "status"))


_CORE: Final[dict[str, Callable[[_Rights], None]]] = {
    "edge": _edge,
    "orchestrator": _orchestrator,
    "tool-executor": _tool_executor,
    "llm-gateway": _llm_gateway,
}


def processes(scope: Scope = DEFAULT_SCOPE) -> tuple[str, ...]:
    """Every AgentOps process of a deployment with these agent types."""
    agents = tuple(s.agent_process(t) for t in scope.agent_types)
    return ("edge", "orchestrator", *agents, "tool-executor", "llm-gateway")


def for_process(process: str, scope: Scope = DEFAULT_SCOPE) -> Permissions:
    """The permissions of one AgentOps process (`edge`, `agent-<type>`, ...)."""
    if process in _CORE:
        build = _CORE[process]
    elif process.startswith("agent-") and process.removeprefix("agent-") in scope.agent_types:
        build = _agent(process.removeprefix("agent-"))
    else:
        raise ValueError(f"unknown process {process!r}")
    rights = _Rights(process, scope)
    rights.service()
    build(rights)
    return rights.done()


def for_plugin(tool_name: str) -> Permissions:
    """A plugin process: serve its tool's calls and announce it, nothing else."""
    process = s.plugin_process(tool_name)
    return Permissions(
        publish=(s.kv_keys(s.PLUGINS_BUCKET, tool_name),),
        subscribe=(s.inbox_filter(process), s.plugin_calls(tool_name)),
        responses_s=PLUGIN_REPLY_S,
    )


def waits_for(process: str) -> tuple[str, ...]:
    """The streams a process that does not declare them waits for at start-up (it may ask
    for their info and nothing else)."""
    api = s.js_api()
    scope = Scope(agent_types=(process.removeprefix("agent-"),))
    allowed = for_process(process, scope).publish if process in processes(scope) else ()
    return tuple(x for x in s.STREAMS if s.stream_api(api, "INFO", x) in allowed)
