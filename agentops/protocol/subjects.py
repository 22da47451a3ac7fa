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
from typing import Final

PREFIX: Final = "agentops"

# ---- streams and buckets (plain names, readable from the `nats` CLI) ----
WORK_STREAM: Final = "AGENTOPS_WORK"
EVENTS_STREAM: Final = "AGENTOPS_EVENTS"
DLQ_STREAM: Final = "AGENTOPS_DLQ"
THREADS_STREAM: Final = "AGENTOPS_THREADS"

AGENTS_BUCKET: Final = "agentops_agents"
TASKS_BUCKET: Final = "agentops_tasks"
WORKFLOWS_BUCKET: Final = "agentops_workflows"
WORKFLOW_PREFIX: Final = "wf_"  # workflow ids; their inbox is a task inbox of that id
TOOL_CALLS_BUCKET: Final = "agentops_tool_calls"
IDEMPOTENCY_BUCKET: Final = "agentops_idempotency"
PLUGINS_BUCKET: Final = "agentops_plugins"
UPLOADS_BUCKET: Final = "agentops_uploads"  # an object store: uploaded archives, by upload id

WORK_SUBJECTS: Final = (
    f"{PREFIX}.task.>",
    f"{PREFIX}.agent.>",
    f"{PREFIX}.llm.>",
    f"{PREFIX}.tool.>",
)
EVENTS_SUBJECTS: Final = (f"{PREFIX}.events.>",)
DLQ_SUBJECTS: Final = (f"{PREFIX}.dlq.>",)
THREAD_SUBJECTS: Final = (f"{PREFIX}.thread.>",)

# Lanes per mailbox family. Changing it re-routes mailboxes, so it is a deploy-time constant.
LANES: Final = 16

AGENT_TYPES: Final = ("backend_developer", "devops_engineer", "frontend_developer")

# Matched whole (`fullmatch`): `^...$` with `match` lets a trailing newline through.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidName(ValueError):
    """An id or token that cannot be used in a subject or KV key."""


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidName(f"invalid {what} {value!r}: use 1-128 of [A-Za-z0-9_-]")
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
def task_inbox(task_id: str) -> str:
    """The orchestrator's per-task inbox: submissions, cancels and agent status reports."""
    check_id(task_id, "task id")
    return f"{PREFIX}.task.{lane_token(lane_of(task_id))}.{task_id}"


def task_lane_filter(lane: int) -> str:
    return f"{PREFIX}.task.{lane_token(lane)}.*"


def agent_mailbox(agent_type: str, agent_id: str) -> str:
    _token(agent_type, "agent type")
    check_id(agent_id, "agent id")
    return f"{PREFIX}.agent.{agent_type}.{lane_token(lane_of(agent_id))}.{agent_id}"


def agent_lane_filter(agent_type: str, lane: int) -> str:
    _token(agent_type, "agent type")
    return f"{PREFIX}.agent.{agent_type}.{lane_token(lane)}.*"


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


# ---- dead letters ----
def dead_letter(original_subject: str) -> str:
    """Dead letters keep the original subject after the prefix, so they can be filtered by it."""
    suffix = original_subject.removeprefix(f"{PREFIX}.") or "unknown"
    return f"{PREFIX}.dlq.{suffix}"


# ---- durable consumer names ----
def orchestrator_consumer(lane: int) -> str:
    return f"orchestrator-{lane_token(lane)}"


def agent_consumer(agent_type: str, lane: int) -> str:
    return f"agent-{_token(agent_type, 'agent type')}-{lane_token(lane)}"


LLM_GATEWAY_CONSUMER: Final = "llm-gateway"
TOOL_EXECUTOR_CONSUMER: Final = "tool-executor"
WORKSPACE_CONSUMER: Final = "tool-executor-workspaces"


# ---- processes: connection names and micro service names ----
def agent_process(agent_type: str) -> str:
    return f"agent-{_token(agent_type, 'agent type')}"


CORE_PROCESSES: Final = ("edge", "orchestrator", "tool-executor", "llm-gateway")


def all_processes() -> tuple[str, ...]:
    return (
        "edge",
        "orchestrator",
        *(agent_process(t) for t in AGENT_TYPES),
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
