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


# ---- to the orchestrator (task inbox) ----
class SubmitTask(Envelope):
    type: Literal["task.submit"] = "task.submit"
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = None
    budget_usd: float | None = None
    actor: str | None = None


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


AgentInbound = (
    StartAgent
    | PauseAgent
    | ResumeAgent
    | CancelAgent
    | FailAgent
    | HumanResponse
    | LLMCompleted
    | LLMFailed
    | ToolCompleted
)
TaskInbound = SubmitTask | CancelTask | AgentReport | FailTask | DeleteTask
WorkMessage = Annotated[
    AgentInbound | TaskInbound | LLMRequested | ToolRequested | DeleteWorkspace,
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
