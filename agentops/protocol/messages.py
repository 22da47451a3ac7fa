"""Wire messages: every work message on JetStream, and the events on the events stream.

Rules:
- Messages are frozen pydantic models with a literal `type`; `WORK_ADAPTER` decodes the union.
- Wire models ignore unknown fields so that a newer sender does not break an older receiver.
- `id` is the `Nats-Msg-Id` header too, so JetStream drops a duplicate publish. Senders derive
  ids from what the message is about (agent, step, call) so a re-publish after a crash gets the
  same id.
- Requests carry where to answer as data (`ReplyTo`), never as a subject string; the bus maps
  it through `protocol.subjects`.
- A human's commands and answers carry `actor`: the name of the API token the edge took them
  with ("anonymous" without auth); the receiver puts it on the event it emits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agentops.llm.types import LLMRequest, LLMResult, Usage
from agentops.protocol.errors import ErrorInfo

AgentStatus = Literal[
    "idle", "running", "paused", "awaiting_human", "completed", "failed", "cancelled"
]
TaskStatus = Literal[
    "queued", "running", "paused", "awaiting_human", "completed", "failed", "cancelled"
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Envelope(Wire):
    id: str = Field(min_length=1, max_length=256)
    source: str = ""
    task_id: str = Field(min_length=1, max_length=128)
    agent_id: str | None = None
    causation_id: str | None = None
    ts: datetime

    def reply_header(self, source: str, ts: datetime) -> dict[str, Any]:
        """Envelope fields of the answer to this message; its id is fixed by this one's."""
        return {
            "id": f"{self.id}.result",
            "source": source,
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "causation_id": self.id,
            "ts": ts,
        }


class ReplyTo(Wire):
    """An agent mailbox to answer to."""

    agent_type: str
    agent_id: str


class TaskResult(Wire):
    summary: str
    artifacts: tuple[str, ...] = ()


class GitSource(Wire):
    url: str
    ref: str | None = None


class WorkspaceSource(Wire):
    """Where a task's workspace starts from: exactly one of these (checked by the edge)."""

    git: GitSource | None = None
    upload: str | None = None  # an upload id (`POST /uploads`)
    from_task: str | None = None  # another task's committed files


class ParentRef(Wire):
    """Who a child task reports to when it ends: a delegating agent's call (`kind` task), or
    a workflow's stage (`kind` workflow, `call_id` the stage id)."""

    kind: Literal["task", "workflow"] = "task"
    task_id: str
    agent_id: str | None = None
    agent_type: str | None = None
    step: int = 0
    call_id: str = ""


# ---- to the orchestrator (task inbox) ----
class SubmitTask(Envelope):
    type: Literal["task.submit"] = "task.submit"
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = None
    budget_usd: float | None = None
    workspace: WorkspaceSource | None = None
    actor: str | None = None
    # A child task (delegated, or a workflow's stage) works in its parent's workspace.
    parent: ParentRef | None = None
    depth: int = 0
    workspace_id: str | None = None
    base: str | None = None  # a stage's: the shared workspace's commit it starts from


class DelegateTask(Envelope):
    """An agent hands work to another type: its task's orchestrator starts the child task
    (`child_task_id`) in the same workspace, or answers the call with an error."""

    type: Literal["task.delegate"] = "task.delegate"
    child_task_id: str
    child_agent_id: str
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    step: int
    call_id: str
    parent_agent_type: str
    budget_usd: float | None = None
    depth: int = 1


class ChildFinished(Envelope):
    """A child task ended (to its parent's inbox): what the delegating call returns."""

    type: Literal["task.child_finished"] = "task.child_finished"
    child_task_id: str
    parent: ParentRef
    status: TaskStatus
    result: TaskResult | None = None
    error: ErrorInfo | None = None
    cost_usd: float = 0.0
    head: str | None = None  # the workspace's commit of the child's work
    head_depth: int = 0


class StageSpec(Wire):
    """One stage of a workflow: a task of `agent_type`, started when every stage it depends
    on completed (and, with `approval`, once a human approved it)."""

    id: str
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    approval: bool = False


class SubmitWorkflow(Envelope):
    type: Literal["workflow.submit"] = "workflow.submit"
    name: str = ""
    stages: tuple[StageSpec, ...]
    workspace: WorkspaceSource | None = None


class CancelWorkflow(Envelope):
    type: Literal["workflow.cancel"] = "workflow.cancel"
    reason: str = "cancelled by user"


class WorkflowAnswer(Envelope):
    """A human's answer to a stage's approval gate."""

    type: Literal["workflow.human_response"] = "workflow.human_response"
    stage_id: str
    approved: bool
    comment: str | None = None


class TaskMessage(Envelope):
    """A user's message to a task (`POST /tasks/{id}/messages`): a follow-up run when the
    task has finished, steering for its next LLM call while it runs."""

    type: Literal["task.message"] = "task.message"
    message: str
    context: dict[str, Any] = Field(default_factory=dict)


class WorkspaceReady(Envelope):
    """The tool executor prepared the task's workspace; `base` is its starting commit."""

    type: Literal["workspace.ready"] = "workspace.ready"
    workspace_id: str
    base: str


class WorkspaceFailed(Envelope):
    type: Literal["workspace.failed"] = "workspace.failed"
    workspace_id: str
    error: ErrorInfo


class WorkspaceCommitted(Envelope):
    """What a run changed is committed: `head` (None: nothing to commit), `base` (set when
    the workspace's repository was made at this commit)."""

    type: Literal["workspace.committed"] = "workspace.committed"
    workspace_id: str
    run: int = 1
    head: str | None = None
    base: str | None = None
    depth: int = 0  # commits behind `head` (the deeper of two heads is the newer)


class CancelTask(Envelope):
    type: Literal["task.cancel"] = "task.cancel"
    reason: str = "cancelled by user"
    actor: str | None = None


class FailTask(Envelope):
    """A message of this task (or of its agent) could not be applied after its retries: the
    task ends `failed` with reason `internal_error` instead of waiting forever."""

    type: Literal["task.fail"] = "task.fail"
    error: ErrorInfo


class DeleteTask(Envelope):
    """Delete a finished root task with everything below it (`DELETE /tasks/{id}`, or the
    retention sweep)."""

    type: Literal["task.delete"] = "task.delete"
    reason: Literal["requested", "retention"] = "requested"
    actor: str | None = None


class AgentReport(Envelope):
    """An agent tells its task's orchestrator about a status change."""

    type: Literal["agent.report"] = "agent.report"
    agent_type: str
    run: int = 1
    status: AgentStatus
    step: int = 0
    result: TaskResult | None = None
    error: ErrorInfo | None = None
    usage: Usage = Usage()


# ---- to an agent (mailbox) ----
class StartAgent(Envelope):
    type: Literal["agent.start"] = "agent.start"
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = None
    budget_usd: float | None = None
    workspace_id: str | None = None  # None: the task's own
    depth: int = 0  # how deep in a tree of delegations (a root task is 0)


class UserMessage(Envelope):
    """A user's message for the model. `new_run`: the task had finished and this starts
    run `run` (a follow-up); otherwise it steers the run going on."""

    type: Literal["agent.message"] = "agent.message"
    message: str
    context: dict[str, Any] = Field(default_factory=dict)
    new_run: bool = False
    run: int = 1


class PauseAgent(Envelope):
    type: Literal["agent.pause"] = "agent.pause"
    actor: str | None = None


class ResumeAgent(Envelope):
    type: Literal["agent.resume"] = "agent.resume"
    actor: str | None = None


class CancelAgent(Envelope):
    type: Literal["agent.cancel"] = "agent.cancel"
    reason: str = "cancelled by user"
    actor: str | None = None


class FailAgent(Envelope):
    """End the agent `failed` (a message to it could not be applied after its retries)."""

    type: Literal["agent.fail"] = "agent.fail"
    error: ErrorInfo


class HumanResponse(Envelope):
    type: Literal["agent.human_response"] = "agent.human_response"
    response: Any = None
    request_id: str | None = None
    actor: str | None = None


class LLMCompleted(Envelope):
    type: Literal["llm.completed"] = "llm.completed"
    step: int
    attempt: int
    result: LLMResult


class LLMFailed(Envelope):
    type: Literal["llm.failed"] = "llm.failed"
    step: int
    attempt: int
    error: ErrorInfo


class ToolCompleted(Envelope):
    type: Literal["tool.completed"] = "tool.completed"
    step: int
    call_id: str
    name: str
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    duration_ms: float = 0.0


# ---- to the llm gateway / tool executor ----
class ConversationRef(Wire):
    """Which conversation an LLM request's messages belong to (`bus/conversation.py`): the
    request carries the messages after the first `base`, whose rolling digest is
    `base_digest`; the whole has `count` messages and digest `digest`."""

    base: int = Field(default=0, ge=0)
    base_digest: str = ""
    count: int = Field(ge=0)
    digest: str


class LLMRequested(Envelope):
    type: Literal["llm.request"] = "llm.request"
    step: int
    attempt: int
    reply_to: ReplyTo
    request: LLMRequest
    conversation: ConversationRef | None = None  # set on the wire by the sender
    whole: bool = False  # send the whole conversation (the gateway did not have its base)


class DeleteWorkspace(Envelope):
    """The tool executor deletes a task's workspace (its files and what it keeps of them)."""

    type: Literal["workspace.delete"] = "workspace.delete"
    workspace_id: str


class PrepareWorkspace(Envelope):
    """The tool executor makes a task's workspace (a git repository) from its source, once;
    it answers `WorkspaceReady` or `WorkspaceFailed` to the task's inbox."""

    type: Literal["workspace.prepare"] = "workspace.prepare"
    workspace_id: str
    origin: WorkspaceSource | None = None
    # A shared workspace (a child task's, a stage's): made if missing, what is in it
    # committed, and its HEAD is the base.
    shared: bool = False


class CommitWorkspace(Envelope):
    """Commit what a run changed in the workspace, authored by the agent type; the executor
    answers `WorkspaceCommitted` to the task's inbox."""

    type: Literal["workspace.commit"] = "workspace.commit"
    workspace_id: str
    author: str
    message: str
    run: int = 1
    background: bool = False  # nothing waits for it (a root task's end): low priority


class ToolRequested(Envelope):
    type: Literal["tool.request"] = "tool.request"
    step: int
    call_id: str
    name: str
    # Empty in a saved outbox (derived again from the thread on replay, `core/agent.py`).
    arguments: dict[str, Any] = Field(default_factory=dict)
    reply_to: ReplyTo
    timeout_s: float = 30.0
    idempotent: bool = False
    workspace_id: str | None = None  # None: the task's own


AgentInbound = (
    StartAgent
    | PauseAgent
    | ResumeAgent
    | CancelAgent
    | FailAgent
    | UserMessage
    | HumanResponse
    | LLMCompleted
    | LLMFailed
    | ToolCompleted
)
TaskInbound = (
    SubmitTask
    | DelegateTask
    | ChildFinished
    | CancelTask
    | AgentReport
    | FailTask
    | DeleteTask
    | TaskMessage
    | WorkspaceReady
    | WorkspaceFailed
    | WorkspaceCommitted
)
WorkflowInbound = (
    SubmitWorkflow
    | CancelWorkflow
    | WorkflowAnswer
    | ChildFinished
    | WorkspaceReady
    | WorkspaceFailed
    | DeleteTask
)
WorkspaceWork = PrepareWorkspace | CommitWorkspace | DeleteWorkspace
WorkMessage = Annotated[
    AgentInbound
    | TaskInbound
    | SubmitWorkflow
    | CancelWorkflow
    | WorkflowAnswer
    | LLMRequested
    | ToolRequested
    | WorkspaceWork,
    Field(discriminator="type"),
]
WORK_ADAPTER: TypeAdapter[WorkMessage] = TypeAdapter(WorkMessage)


# ---- events (stream EVENTS_STREAM, fanned out on WS /ws) ----
EventType = Literal[
    "task.created",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "task.deleted",
    "task.resumed",
    "user.message",
    "workflow.created",
    "workflow.stage_started",
    "workflow.stage_finished",
    "workflow.awaiting_approval",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "agent.status",
    "agent.step",
    "llm.request",
    "llm.response",
    "llm.delta",
    "llm.error",
    "tool.call",
    "tool.result",
    "human.request",
    "human.response",
    "command.rejected",
    "budget.exceeded",
]


class Event(Wire):
    """An event as stored on the events stream. WebSocket frames add the stream `seq`."""

    id: str
    type: EventType
    ts: datetime
    task_id: str
    agent_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
