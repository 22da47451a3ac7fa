"""The agent's whole state as one serialisable thread, and the orchestrator's task record.

Both are stored as JSON in JetStream KV (`nats kv get agentops_agents <agent_id>`), written only
by their owner with compare-and-swap. Derived facts (the open human request, consecutive
errors, counts) are computed from the thread by functions here, not stored twice.

`last_msg_id` + `outbox` make handling crash-safe: the effects of the last applied message are
saved with the state, so when that message is redelivered (the process died after saving but
before publishing) the shell publishes them again under the same message ids and JetStream
drops the ones that already went out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agentops.core.effects import Effect
from agentops.llm.types import ToolCall, Usage
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import AgentStatus, TaskResult, TaskStatus


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    at: datetime


class TaskItem(_Item):
    kind: Literal["task"] = "task"
    description: str
    context: dict[str, Any] = Field(default_factory=dict)


class AssistantItem(_Item):
    kind: Literal["assistant"] = "assistant"
    step: int
    attempt: int = 0
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""


class LLMErrorItem(_Item):
    kind: Literal["llm_error"] = "llm_error"
    step: int
    attempt: int
    error: ErrorInfo


class ToolResultItem(_Item):
    kind: Literal["tool_result"] = "tool_result"
    step: int
    call_id: str
    name: str
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class HumanRequestItem(_Item):
    kind: Literal["human_request"] = "human_request"
    request_id: str
    step: int
    # The tool call this answers (request_human_input, or a call held for approval); None for
    # an escalation after repeated errors and for a budget question.
    call_id: str | None = None
    reason: Literal["tool", "escalation", "approval", "budget"] = "tool"
    question: str
    context: str | None = None
    urgency: str = "medium"
    format: str = "free_text"
    choices: tuple[str, ...] | None = None
    # Machine-readable facts of the question: the exact call to approve, the budget figures.
    details: dict[str, Any] | None = None


class HumanResponseItem(_Item):
    kind: Literal["human_response"] = "human_response"
    request_id: str
    response: Any = None


class ControlItem(_Item):
    kind: Literal["control"] = "control"
    action: Literal["pause", "resume", "cancel"]
    reason: str | None = None


ThreadItem = Annotated[
    TaskItem
    | AssistantItem
    | LLMErrorItem
    | ToolResultItem
    | HumanRequestItem
    | HumanResponseItem
    | ControlItem,
    Field(discriminator="kind"),
]


class Inflight(BaseModel):
    """What the agent is waiting for from another process."""

    model_config = ConfigDict(frozen=True)
    # llm: waiting for the model; tools: waiting for tool results (and human answers);
    # dispatch: the model answered while paused, its tool calls go out on resume.
    kind: Literal["llm", "tools", "dispatch"]
    step: int
    attempt: int = 0
    pending: tuple[str, ...] = ()  # tool call ids still without a result


class AgentState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_id: str
    task_id: str
    agent_type: str
    status: AgentStatus = "idle"
    paused_from: AgentStatus | None = None
    max_steps: int
    budget_usd: float | None = None
    step: int = 0
    inflight: Inflight | None = None
    thread: tuple[ThreadItem, ...] = ()
    result: TaskResult | None = None
    error: ErrorInfo | None = None
    usage: Usage = Usage()
    llm_calls: int = 0
    created_at: datetime
    updated_at: datetime
    events_emitted: int = 0
    last_msg_id: str | None = None
    outbox: tuple[Effect, ...] = ()  # effects of the last applied message

    # ---- derived facts ----
    def open_human_request(self) -> HumanRequestItem | None:
        answered = {i.request_id for i in self.thread if isinstance(i, HumanResponseItem)}
        for item in reversed(self.thread):
            if isinstance(item, HumanRequestItem) and item.request_id not in answered:
                return item
        return None

    def consecutive_errors(self) -> int:
        """Trailing LLM/tool errors, reset by a successful tool result or a human answer."""
        count = 0
        for item in reversed(self.thread):
            if isinstance(item, LLMErrorItem) or (isinstance(item, ToolResultItem) and not item.ok):
                count += 1
            elif isinstance(item, ToolResultItem | HumanResponseItem):
                break
        return count

    def count(self, kind: str) -> int:
        return sum(1 for i in self.thread if i.kind == kind)

    def errors(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.thread:
            if isinstance(item, LLMErrorItem):
                out.append({"step": item.step, "source": "llm", **item.error.model_dump()})
            elif isinstance(item, ToolResultItem) and not item.ok and item.error is not None:
                out.append({"step": item.step, "source": item.name, **item.error.model_dump()})
        return out

    def tool_calls_made(self) -> int:
        return sum(len(i.tool_calls) for i in self.thread if isinstance(i, AssistantItem))


class TaskRecord(BaseModel):
    """The orchestrator's view of one task (`nats kv get agentops_tasks <task_id>`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str
    agent_type: str
    description: str
    context: dict[str, Any] = Field(default_factory=dict)
    status: TaskStatus = "queued"
    agent_id: str
    agent_ids: tuple[str, ...] = ()
    max_steps: int | None = None
    budget_usd: float | None = None
    current_step: int = 0
    result: TaskResult | None = None
    error: ErrorInfo | None = None
    usage: Usage = Usage()
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    events_emitted: int = 0
    last_msg_id: str | None = None
    outbox: tuple[Effect, ...] = ()


AGENT_STATE_ADAPTER: TypeAdapter[AgentState] = TypeAdapter(AgentState)
TASK_RECORD_ADAPTER: TypeAdapter[TaskRecord] = TypeAdapter(TaskRecord)
