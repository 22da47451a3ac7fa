"""Every NATS name AgentOps uses: subjects, streams, consumers, KV buckets, services.

Rules:
- This is the only module that builds subject strings. Everything else calls these functions.
- Ids that go into a subject or KV key are validated here (`[A-Za-z0-9_-]`, no dots), so a
  client-supplied id can never inject a wildcard or an extra token.
- An agent's mailbox is `agentops.agent.<type>.<lane>.<agent_id>`. The lane is a stable hash of
  the id; each lane is one durable consumer with max_ack_pending=1, so messages to one agent
  are handled one at a time and in order by whichever replica fetches them, while agents in
  other lanes run concurrently. The orchestrator's per-task inbox works the same way.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Final

PREFIX: Final = "agentops"

# ---- streams and buckets (plain names, readable from the `nats` CLI) ----
WORK_STREAM: Final = "AGENTOPS_WORK"
EVENTS_STREAM: Final = "AGENTOPS_EVENTS"
DLQ_STREAM: Final = "AGENTOPS_DLQ"
THREADS_STREAM: Final = "AGENTOPS_THREADS"

AGENTS_BUCKET: Final = "agentops_agents"
TASKS_BUCKET: Final = "agentops_tasks"
SUMMARIES_BUCKET: Final = "agentops_summaries"  # agent summaries (store/summaries.py)
WORKFLOWS_BUCKET: Final = "agentops_workflows"
WORKFLOW_PREFIX: Final = "wf_"  # workflow ids; their inbox is a task inbox of that id
TOOL_CALLS_BUCKET: Final = "agentops_tool_calls"
IDEMPOTENCY_BUCKET: Final = "agentops_idempotency"
PLUGINS_BUCKET: Final = "agentops_plugins"
UPLOADS_BUCKET: Final = "agentops_uploads"  # an object store: uploaded archives, by upload id

EVENTS_SUBJECTS: Final = (f"{PREFIX}.events.>",)
DLQ_SUBJECTS: Final = (f"{PREFIX}.dlq.>",)
THREAD_SUBJECTS: Final = (f"{PREFIX}.thread.>",)

# Lanes per mailbox family. Changing it re-routes mailboxes, so it is a deploy-time constant.
LANES: Final = 16

# Matched whole (`fullmatch`): `^...$` with `match` lets a trailing newline through.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Agent types are configured (`agents/loader.py`), not listed here. A type name is a subject
# token, and `agent-<type>-l00` (its consumers) must still fit a 64-character token.
AGENT_TYPE_MAX: Final = 64 - len("agent--l00")
_AGENT_TYPE = re.compile(rf"[A-Za-z0-9_-]{{1,{AGENT_TYPE_MAX}}}")


class InvalidName(ValueError):
    """An id or token that cannot be used in a subject or KV key."""


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidName(f"invalid {what} {value!r}: use 1-128 of [A-Za-z0-9_-]")
    return value


def check_agent_type(value: str) -> str:
    """An agent type name as subjects, consumer names and KV keys take it, or `InvalidName`."""
    if not isinstance(value, str) or not _AGENT_TYPE.fullmatch(value):
        raise InvalidName(
            f"invalid agent type name {value!r}: use 1-{AGENT_TYPE_MAX} of [A-Za-z0-9_-]"
        )
    return value


def _token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise InvalidName(f"invalid {what} {value!r}")
    return value


def lane_of(key: str) -> int:
    return zlib.crc32(key.encode()) % LANES


def lane_token(lane: int) -> str:
    return f"l{lane:02d}"


# ---- work subjects (JetStream, stream WORK_STREAM) ----
# A task inbox or agent mailbox subject ends with the kind of message it carries, named after
# the message type, so a NATS permission can let a process send only its own kinds (the edge
# a human's answer, the tool executor a tool result, never the other way round); the receiver
# checks that a message's type fits the kind it arrived on. Subjects without the kind are
# those of older versions, still stored: read, never written (no permission allows them).
TASK_INBOX_KINDS: Final = {
    "task.submit": "submit",
    "task.cancel": "cancel",
    "task.fail": "fail",
    "task.delete": "delete",
    "task.message": "message",
    "agent.report": "report",
    "task.delegate": "delegate",
    "task.child_finished": "child",
    "workspace.ready": "workspace",
    "workspace.failed": "workspace",
    "workspace.committed": "workspace",
    # A workflow's inbox is a task inbox of its id (`wf_...`).
    "workflow.submit": "workflow",
    "workflow.cancel": "workflow",
    "workflow.human_response": "workflow",
}
AGENT_MAILBOX_KINDS: Final = {
    "agent.start": "start",
    "agent.pause": "pause",
    "agent.resume": "resume",
    "agent.cancel": "cancel",
    "agent.fail": "fail",
    "agent.message": "message",
    "agent.human_response": "human",
    "llm.completed": "llm",
    "llm.failed": "llm",
    "tool.completed": "tool",
}


# The work stream lists each inbox and mailbox kind (and the kind-less subjects of older
# versions) rather than `agentops.agent.>`: across a leaf node, the hub forwards its interest
# to a user allowed `agentops.agent.*.*.*.llm` only when a stream subject has that shape.
WORK_SUBJECTS: Final = (
    *(f"{PREFIX}.task.*.*.{kind}" for kind in dict.fromkeys(TASK_INBOX_KINDS.values())),
    f"{PREFIX}.task.*.*",
    *(f"{PREFIX}.agent.*.*.*.{kind}" for kind in dict.fromkeys(AGENT_MAILBOX_KINDS.values())),
    f"{PREFIX}.agent.*.*.*",
    f"{PREFIX}.llm.>",
    f"{PREFIX}.tool.>",
)
TASK_INBOXES: Final = f"{PREFIX}.task.>"  # every task inbox (to watch them all)


def _kind(kinds: dict[str, str], message_type: str, where: str) -> str:
    kind = kinds.get(message_type)
    if kind is None:
        raise InvalidName(f"{message_type!r} does not belong in {where}")
    return kind


def task_inbox(task_id: str, message_type: str) -> str:
    """The orchestrator's per-task inbox: submissions, cancels and agent status reports."""
    check_id(task_id, "task id")
    kind = _kind(TASK_INBOX_KINDS, message_type, "a task inbox")
    return f"{PREFIX}.task.{lane_token(lane_of(task_id))}.{task_id}.{kind}"


def task_inbox_filter(task_id: str) -> str:
    """Everything sent to one task's inbox (to watch it)."""
    check_id(task_id, "task id")
    return f"{PREFIX}.task.{lane_token(lane_of(task_id))}.{task_id}.*"


def task_lane_filter(lane: int) -> str:
    return f"{PREFIX}.task.{lane_token(lane)}.>"


def task_inbox_kind(kind: str) -> str:
    """Every task inbox, messages of `kind` only (a permission)."""
    return f"{PREFIX}.task.*.*.{_token(kind, 'kind')}"


def agent_mailbox(agent_type: str, agent_id: str, message_type: str) -> str:
    _token(agent_type, "agent type")
    check_id(agent_id, "agent id")
    kind = _kind(AGENT_MAILBOX_KINDS, message_type, "an agent mailbox")
    return f"{PREFIX}.agent.{agent_type}.{lane_token(lane_of(agent_id))}.{agent_id}.{kind}"


def agent_mailbox_filter(agent_type: str, agent_id: str) -> str:
    """Everything sent to one agent (to watch its mailbox)."""
    _token(agent_type, "agent type")
    check_id(agent_id, "agent id")
    return f"{PREFIX}.agent.{agent_type}.{lane_token(lane_of(agent_id))}.{agent_id}.*"


def agent_lane_filter(agent_type: str, lane: int) -> str:
    _token(agent_type, "agent type")
    return f"{PREFIX}.agent.{agent_type}.{lane_token(lane)}.>"


def agent_mailbox_kind(agent_type: str, kind: str) -> str:
    """Every mailbox of an agent type, messages of `kind` only (a permission)."""
    return f"{PREFIX}.agent.{_token(agent_type, 'agent type')}.*.*.{_token(kind, 'kind')}"


def inbox_owner(subject: str) -> tuple[str, str | None]:
    """(the task or agent id, the kind or None for an older version's subject) of an inbox
    or mailbox subject as delivered."""
    parts = subject.split(".")
    current = 6 if parts[1:2] == ["agent"] else 5  # tokens of a subject with its kind
    if len(parts) == current:
        return parts[-2], parts[-1]
    return parts[-1], None


def kind_fits(subject: str, message_type: str) -> bool:
    """Does a message of this type belong on this inbox or mailbox subject?"""
    _, kind = inbox_owner(subject)
    kinds = AGENT_MAILBOX_KINDS if subject.startswith(f"{PREFIX}.agent.") else TASK_INBOX_KINDS
    return kind is None or kinds.get(message_type) == kind


def llm_requests() -> str:
    return f"{PREFIX}.llm.request"


def tool_requests(tool_name: str) -> str:
    return f"{PREFIX}.tool.call.{_token(tool_name, 'tool name')}"


def tool_requests_filter() -> str:
    return f"{PREFIX}.tool.call.*"


def workspace_requests(operation: str) -> str:
    """Work on a task's workspace for the tool executor, which owns workspaces."""
    return f"{PREFIX}.tool.workspace.{_token(operation, 'workspace operation')}"


def workspace_requests_filter() -> str:
    return f"{PREFIX}.tool.workspace.*"


def workspace_endpoint(operation: str) -> str:
    """The tool executor's workspace requests (core request-reply, micro endpoints): files,
    read, export, fetch, inspect."""
    return f"{PREFIX}.workspace.{_token(operation, 'workspace operation')}"


def workspace_endpoints() -> str:
    return f"{PREFIX}.workspace.*"


def events_of_task(task_id: str) -> str:
    """Every event of one task (what deleting the task purges from the events stream)."""
    return f"{PREFIX}.events.{check_id(task_id, 'task id')}.>"


# ---- plugin tools (core request-reply, served by plugin processes in a queue group) ----
def plugin_calls(tool_name: str) -> str:
    """Where the executor sends a plugin tool's calls; the key of its announcement is the name."""
    return f"{PREFIX}.plugin.call.{_token(tool_name, 'tool name')}"


PLUGIN_QUEUE: Final = "agentops-plugins"


# ---- events (JetStream, stream EVENTS_STREAM) ----
def event(task_id: str, agent_id: str | None, event_type: str) -> str:
    """`agentops.events.<task_id>.<agent_id or _>.<type>`; event types are `noun.verb`."""
    check_id(task_id, "task id")
    if agent_id is not None:
        check_id(agent_id, "agent id")
    for part in event_type.split("."):
        _token(part, "event type")
    return f"{PREFIX}.events.{task_id}.{agent_id or '_'}.{event_type}"


def events_filter(task_id: str | None = None, agent_id: str | None = None) -> str:
    task = check_id(task_id, "task id") if task_id else "*"
    agent = check_id(agent_id, "agent id") if agent_id else "*"
    if task == "*" and agent == "*":
        return f"{PREFIX}.events.>"
    return f"{PREFIX}.events.{task}.{agent}.>"


def task_lifecycle_filter() -> str:
    """Every task's `task.*` events (created, completed, failed, cancelled), nothing else."""
    return f"{PREFIX}.events.*.*.task.>"


# ---- agent threads (JetStream, stream THREADS_STREAM: one subject per item) ----
def thread_item(agent_id: str, index: int) -> str:
    """`agentops.thread.<agent_id>.<index>`: item `index` of an agent's thread. The stream
    keeps one message per subject, so writing an index again replaces what was there."""
    check_id(agent_id, "agent id")
    if index < 0:
        raise InvalidName(f"invalid thread index {index}")
    return f"{PREFIX}.thread.{agent_id}.{index}"


def thread_filter(agent_id: str) -> str:
    return f"{PREFIX}.thread.{check_id(agent_id, 'agent id')}.>"


def thread_index(subject: str) -> int:
    """The item index a thread subject names."""
    return int(subject.rsplit(".", 1)[1])


def kv_filter(bucket: str, key_prefix: str) -> str:
    """Every key of a KV bucket below `key_prefix.` (e.g. an agent's tool-call claims)."""
    return f"$KV.{_token(bucket, 'bucket')}.{check_id(key_prefix, 'key prefix')}.>"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{_token(bucket, 'bucket')}"


def object_stream(bucket: str) -> str:
    """The stream behind an object store (`agentops_uploads`)."""
    return f"OBJ_{_token(bucket, 'bucket')}"


def object_subjects(bucket: str) -> str:
    """Every chunk and metadata subject of an object store (writing objects)."""
    return f"$O.{_token(bucket, 'bucket')}.>"


# ---- dead letters ----
def dead_letter(original_subject: str) -> str:
    """Dead letters keep the original subject after the prefix, so they can be filtered by it."""
    suffix = original_subject.removeprefix(f"{PREFIX}.") or "unknown"
    return f"{PREFIX}.dlq.{suffix}"


# ---- durable consumer names ----
def orchestrator_consumer(lane: int) -> str:
    return f"orchestrator-{lane_token(lane)}"


def agent_consumer(agent_type: str, lane: int) -> str:
    return f"agent-{check_agent_type(agent_type)}-{lane_token(lane)}"


LLM_GATEWAY_CONSUMER: Final = "llm-gateway"
TOOL_EXECUTOR_CONSUMER: Final = "tool-executor"
WORKSPACE_CONSUMER: Final = "tool-executor-workspaces"


# ---- processes: connection names and micro service names ----
def agent_process(agent_type: str) -> str:
    return f"agent-{check_agent_type(agent_type)}"


CORE_PROCESSES: Final = ("edge", "orchestrator", "tool-executor", "llm-gateway")


def all_processes(agent_types: Iterable[str]) -> tuple[str, ...]:
    """Every AgentOps process of a system with these agent types (one process per type, in
    name order); the types are the configured ones (`agents.loader.agent_types`)."""
    return (
        "edge",
        "orchestrator",
        *(agent_process(t) for t in sorted(set(agent_types))),
        "tool-executor",
        "llm-gateway",
    )


def connection_name(process: str) -> str:
    return f"{PREFIX}-{process}"


def inbox_prefix(process: str) -> str:
    """Each process's private reply subjects (`_INBOX.agentops-<process>.>`), so a NATS user
    can be allowed its own replies without reading every other process's (deploy/hybrid)."""
    return f"_INBOX.{connection_name(process)}"


def kv_key(bucket: str, key: str) -> str:
    """The subject a KV entry is written on (what nats-py's KV API publishes to)."""
    return f"$KV.{_token(bucket, 'bucket')}.{key}"


def deliver_subject(process: str, consumer: str) -> str:
    """Where JetStream pushes a consumer's messages: under the process's own inbox prefix, so
    a least-privilege process may already receive them (deploy/hybrid)."""
    return f"{inbox_prefix(process)}.deliver.{_token(consumer, 'consumer')}"


def kick_subject(deliver: str) -> str:
    """Where a consumer's stall watchdog tells every replica to subscribe again (core NATS,
    under the same inbox prefix as the deliver subject, so the same permissions cover it)."""
    return f"{deliver}.kick"


def service_name(process: str) -> str:
    """Micro service names allow [A-Za-z0-9_-]; the connection name already fits."""
    return connection_name(process)


# ---- service endpoints (core request-reply, answered by micro services) ----
def control_subject(process: str, endpoint: str) -> str:
    return f"{PREFIX}.control.{_token(process, 'process')}.{_token(endpoint, 'endpoint')}"


SERVICE_PING: Final = "$SRV.PING"
SERVICE_STATS: Final = "$SRV.STATS"
SERVICE_INFO: Final = "$SRV.INFO"


def plugin_process(tool_name: str) -> str:
    """A plugin process's name (connection, inbox prefix and credential)."""
    return f"plugin-{_token(tool_name, 'tool name')}"


# ---- what NATS permissions name (protocol/permissions.py) ----
# Patterns, not subjects to publish on: `*` and `>` are NATS wildcards here.
STREAMS: Final = (WORK_STREAM, EVENTS_STREAM, THREADS_STREAM, DLQ_STREAM)
BUCKETS: Final = (
    AGENTS_BUCKET,
    SUMMARIES_BUCKET,
    TASKS_BUCKET,
    WORKFLOWS_BUCKET,
    TOOL_CALLS_BUCKET,
    IDEMPOTENCY_BUCKET,
    PLUGINS_BUCKET,
)
_NAME_OR_ANY = re.compile(r"\*|[A-Za-z0-9_-]{1,64}")


def _name(value: str, what: str) -> str:
    if not _NAME_OR_ANY.fullmatch(value):
        raise InvalidName(f"invalid {what} {value!r}")
    return value


def js_api(domain: str | None = None) -> str:
    """The JetStream API prefix: `$JS.API`, or `$JS.<domain>.API` across a leaf node."""
    return f"$JS.{_token(domain, 'domain')}.API" if domain else "$JS.API"


def stream_api(api: str, action: str, stream: str) -> str:
    """`<api>.STREAM.<CREATE|UPDATE|INFO|PURGE|DELETE>.<stream>`."""
    return f"{api}.STREAM.{_token(action, 'action')}.{_name(stream, 'stream')}"


def consumer_create(
    api: str, stream: str, name: str | None = None, filter_subject: str | None = None
) -> str:
    """Creating a consumer: pinned to its name and filter, or (no name: an ephemeral ordered
    consumer, e.g. a KV watch) any consumer of the stream."""
    base = f"{api}.CONSUMER.CREATE.{_name(stream, 'stream')}"
    if name is None:
        return base
    return f"{base}.{_name(name, 'consumer')}" + (f".{filter_subject}" if filter_subject else "")


def consumer_names(api: str, stream: str) -> str:
    """The names of a stream's consumers (one request: what /health checks)."""
    return f"{api}.CONSUMER.NAMES.{_name(stream, 'stream')}"


def declared_streams() -> tuple[str, ...]:
    """Every stream the declarer keeps: the streams, the buckets' and the uploads store's."""
    return (*STREAMS, *(kv_stream(b) for b in BUCKETS), object_stream(UPLOADS_BUCKET))


def work_consumers(agent_types: Iterable[str]) -> tuple[str, ...]:
    """The durable consumers of the work stream a system with these agent types has."""
    lanes = range(LANES)
    return (
        *(orchestrator_consumer(lane) for lane in lanes),
        *(agent_consumer(t, lane) for t in agent_types for lane in lanes),
        TOOL_EXECUTOR_CONSUMER,
        WORKSPACE_CONSUMER,
        LLM_GATEWAY_CONSUMER,
    )


def consumer_api(api: str, action: str, stream: str, name: str) -> str:
    """`<api>.CONSUMER.<INFO|DELETE>.<stream>.<name or *>`."""
    return f"{api}.CONSUMER.{_token(action, 'action')}.{_name(stream, 'stream')}.{_name(name, 'consumer')}"


def stream_names(api: str) -> str:
    """Listing stream names (nats-py finds an object store's stream by subject this way)."""
    return f"{api}.STREAM.NAMES"


def stream_msg_get(api: str, stream: str) -> str:
    """Getting one stored message through the stream leader (`get_last_msg` without direct)."""
    return f"{api}.STREAM.MSG.GET.{_name(stream, 'stream')}"


def direct_get(api: str, stream: str, by_subject: bool = False) -> str:
    """Direct gets of a stream's messages: a request naming them in its body (batches), or
    the last message of any subject given in the request subject (a KV get)."""
    base = f"{api}.DIRECT.GET.{_name(stream, 'stream')}"
    return f"{base}.>" if by_subject else base


def acks(stream: str, consumer: str) -> str:
    """Ack, nak, term and in-progress replies of one consumer's messages."""
    return f"$JS.ACK.{_name(stream, 'stream')}.{_name(consumer, 'consumer')}.>"


def flow_control(stream: str) -> str:
    """Flow-control replies of ordered consumers (KV watches, WebSocket feeds) on a stream."""
    return f"$JS.FC.{_name(stream, 'stream')}.>"


def kv_key_of(bucket: str, subject: str) -> str:
    """The key a KV subject (`$KV.<bucket>.<key>`) names."""
    return subject.removeprefix(f"$KV.{_token(bucket, 'bucket')}.")


def kv_keys(bucket: str, key: str = ">") -> str:
    """Writing one key (or every key) of a bucket."""
    return f"$KV.{_token(bucket, 'bucket')}.{key if key in ('*', '>') else check_id(key, 'key')}"


def service_discovery(process: str) -> tuple[str, ...]:
    """What a micro service subscribes to so `$SRV.PING/INFO/STATS` find it."""
    name = service_name(process)
    return (SERVICE_PING, SERVICE_INFO, SERVICE_STATS, f"$SRV.*.{name}", f"$SRV.*.{name}.*")


def control_filter(process: str) -> str:
    return f"{PREFIX}.control.{_token(process, 'process')}.*"


def inbox_filter(process: str) -> str:
    """Every reply, deliver and kick subject of a process."""
    return f"{inbox_prefix(process)}.>"


def kick_filter(process: str) -> str:
    return f"{inbox_prefix(process)}.deliver.*.kick"


def every_inbox() -> str:
    return "_INBOX.>"


def events_of_family(family: str) -> str:
    """Every event whose type starts with `family` (`task` → task.created, task.failed...)."""
    return f"{PREFIX}.events.*.*.{_token(family, 'event family')}.>"


def events_of_type(event_type: str) -> str:
    parts = [_token(part, "event type") for part in event_type.split(".")]
    return f"{PREFIX}.events.*.*.{'.'.join(parts)}"


def every_thread_item() -> str:
    return f"{PREFIX}.thread.>"


def plugin_calls_filter() -> str:
    return f"{PREFIX}.plugin.call.*"
