"""What the edge answers, as pydantic models: the OpenAPI document's response schemas.

Rules:
- These models describe; handlers build their bodies as before (`edge/views.py`, the
  handlers). A test validates real answers against the document, so a field a handler adds
  that is not here fails it: the shapes are closed (`extra="forbid"`) except where another
  module owns the fields (an agent type's public fields).
- Views of stored documents derive from the stored model (a task record, an agent's head)
  minus the fields `edge/views.py` hides, plus what it adds: a field added to the record
  shows up here without an edit.
- Field types reuse the wire and state models (usage, results, errors, thread items).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.config import JsonDict

from agentops.core.state import AgentState, HumanRequestItem, TaskRecord, ThreadItem
from agentops.edge.views import HIDDEN_AGENT_FIELDS, HIDDEN_TASK_FIELDS
from agentops.llm.types import Usage
from agentops.protocol.messages import AgentStatus, TaskStatus


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors ----
class ErrorDetail(_Out):
    code: str = Field(description="stable, machine-readable (e.g. `validation_error`)")
    message: str = Field(description="for people: what went wrong and what to send")
    details: Any = Field(description="null, or facts such as `[{field, message}]` for a 422")


class ErrorBody(_Out):
    """Every error the API answers."""

    error: ErrorDetail


# ---- tasks ----
def _fields(model: type[BaseModel], hidden: frozenset[str]) -> dict[str, Any]:
    return {n: (f.annotation, f) for n, f in model.model_fields.items() if n not in hidden}


TaskView: type[BaseModel] = create_model(
    "TaskView",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A task record as the API shows it (its agent's step, usage and budget fresher).",
    **_fields(TaskRecord, HIDDEN_TASK_FIELDS),
    usage_by_agent=(dict[str, Usage], Field(default_factory=dict)),
    cost_usd=(float, ...),
    cost_usd_total=(float, Field(description="this task's and its descendants' cost")),
    parent_task_id=(str | None, ...),
)


class TaskCreated(_Out):
    task_id: str
    agent_id: str
    status: TaskStatus
    message: str


class TaskList(_Out):
    tasks: list[TaskView]
    total: int = Field(description="how many match the filters (all pages)")


class TaskCancelled(_Out):
    task_id: str
    status: TaskStatus


class TaskDeleted(_Out):
    task_id: str
    status: Literal["deleted", "deleting"]


class MessageAccepted(_Out):
    task_id: str
    agent_id: str | None = None
    status: TaskStatus | Literal["message_queued", "resume_queued"]
    run: int


class FileEntry(_Out):
    path: str
    size: int
    modified: str = Field(json_schema_extra={"format": "date-time"})


class FileList(_Out):
    task_id: str
    files: list[FileEntry]
    truncated: bool


class UploadCreated(_Out):
    upload_id: str
    size: int
    files: int = Field(description="regular files in the archive")
    expires_at: str = Field(json_schema_extra={"format": "date-time"})


# ---- agents ----
class AgentTypeInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # agent types are data: more fields may come

    agent_type: str
    name: str
    role: str
    capabilities: list[str]
    allowed_tools: list[str]
    max_steps: int


class AgentTypes(_Out):
    agent_types: list[AgentTypeInfo]


class AgentSummary(_Out):
    agent_id: str
    agent_type: str
    name: str
    role: str
    capabilities: list[str]
    status: AgentStatus
    current_task: str | None
    task_id: str
    current_step: int


class AgentList(_Out):
    agents: list[AgentSummary]
    total: int = Field(description="how many agents match (the page is `limit` of them)")


class TaskRef(_Out):
    task_id: str
    description: str | None


class WaitingFor(_Out):
    """What the agent waits for: a child `task`, a `human`'s answer, a `process` that is not
    running."""

    task: str | None = None
    human: str | None = None
    process: str | None = None


class AgentStatusView(_Out):
    agent_id: str
    agent_type: str
    name: str
    status: AgentStatus
    current_step: int
    max_steps: int
    task: TaskRef
    awaiting_human: bool
    pending_requests: int
    human_request: HumanRequestItem | None
    errors: int
    tool_calls: int
    usage: Usage
    waiting_for: WaitingFor | None


AgentStateView: type[BaseModel] = create_model(
    "AgentStateView",
    __config__=ConfigDict(extra="forbid"),
    __doc__="An agent's whole state: its head's fields and its whole thread.",
    **_fields(AgentState, HIDDEN_AGENT_FIELDS),
    awaiting_human=(bool, ...),
    human_request=(HumanRequestItem | None, ...),
    thread=(list[ThreadItem], ...),
)


class ThreadPage(_Out):
    agent_id: str
    total: int = Field(description="items in the whole thread")
    offset: int
    limit: int
    items: list[ThreadItem]


class ControlDone(_Out):
    status: Literal["paused", "resumed"]
    agent_id: str


class ControlQueued(_Out):
    status: Literal["pause_requested", "resume_requested"]
    agent_id: str
    agent_status: AgentStatus


class HumanAnswered(_Out):
    status: Literal["response_received", "response_queued"]
    agent_id: str
    agent_status: AgentStatus
    request_id: str


# ---- workflows ----
class StageView(_Out):
    id: str
    agent_type: str
    description: str
    depends_on: list[str]
    approval: bool
    status: str = Field(description="`pending`, `skipped` or a task status")
    task_id: str | None
    summary: str | None
    cost_usd: float


_DATE: JsonDict = {"format": "date-time"}


class WorkflowView(_Out):
    workflow_id: str
    name: str
    status: TaskStatus
    stages: list[StageView]
    awaiting_approval: str | None = Field(description="the stage waiting for approval")
    cost_usd: float
    workspace_id: str
    source: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: str = Field(json_schema_extra=_DATE)
    updated_at: str = Field(json_schema_extra=_DATE)
    finished_at: str | None = Field(json_schema_extra=_DATE)


class WorkflowCreated(_Out):
    workflow_id: str
    status: TaskStatus


class WorkflowList(_Out):
    workflows: list[WorkflowView]
    total: int


class WorkflowCancelled(_Out):
    workflow_id: str
    status: TaskStatus


class GateAnswered(_Out):
    status: Literal["response_received", "response_queued"]
    workflow_id: str
    workflow_status: TaskStatus
    stage_id: str


# ---- health ----
class NatsInfo(_Out):
    connected: bool
    server: str | None = Field(description="host:port (never credentials)")
    version: str | None


class ServiceInfo(_Out):
    status: Literal["up", "missing"]
    instances: int
    isolation: dict[str, Any] | None = Field(
        default=None, description="the tool executor's code isolation"
    )


class LastDeadLetter(_Out):
    subject: str | None
    code: str | None
    error: str | None


class DeadLetters(_Out):
    stored: int
    since_start: int
    last: LastDeadLetter | None = None


class StreamCluster(_Out):
    leader: str | None = Field(description="the node leading it; null: no quorum")
    replicas: int | None = None
    followers: list[str] | None = None
    lagging: list[str] | None = Field(default=None, description="replicas behind or offline")
    error: str | None = Field(default=None, description="why its info could not be read")


class ClusterInfo(_Out):
    nodes: list[str] = Field(description="the JetStream nodes seen (leaders and replicas)")
    streams: dict[str, StreamCluster]
    quorum_lost: list[str] = Field(description="streams with no leader: degraded")


class JetStreamHealth(_Out):
    status: Literal["ok", "degraded"]
    streams: dict[str, Literal["ok", "missing", "unavailable"]] = Field(
        description="every declared stream (KV buckets and the uploads store are streams too)"
    )
    missing_consumers: list[str] | None = Field(
        description="durable consumers of the work stream that do not exist (null: JetStream "
        "did not say in time)"
    )


class Health(_Out):
    status: Literal["healthy", "degraded"]
    nats: NatsInfo
    services: dict[str, ServiceInfo]
    cluster: ClusterInfo | None = Field(
        default=None, description="absent while NATS is away; one node: every stream R1"
    )
    jetstream: JetStreamHealth | None = Field(default=None, description="absent while NATS is away")
    dead_letters: DeadLetters | None = Field(
        default=None, description="absent while NATS is away; null if JetStream is slow"
    )
