"""The agent's whole state as one serialisable thread, and the orchestrator's task record.

In memory an `AgentState` holds its whole thread, so the reducer reads it as one value. It is
stored in two parts (`store/agents.py`): a small head in JetStream KV (`nats kv get
agentops_agents <agent_id>`, written only by the agent's process with compare-and-swap) and
the thread items, each appended once to its own subject of the threads stream.

Derived facts that readers of the head need without the thread (the open human requests,
counts of errors, tool calls and tool results) are kept in the state as counters, updated by
`Transition.record` as items are appended (`tally`), so no step and no reader walks the
thread. A state written before the counters existed gets them from its thread
(`with_tallies`), which must agree with the counters the reducer keeps.

`last_msg_id` + `outbox` make handling crash-safe: the effects of the last applied message are
saved with the state, so when that message is redelivered (the process died after saving but
before publishing) the shell publishes them again under the same message ids and JetStream
drops the ones that already went out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agentops.core.effects import Effect
from agentops.llm.types import ToolCall, Usage
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import AgentStatus, ParentRef, TaskResult, TaskStatus


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


class UserMessageItem(_Item):
    """A user's message for the model: a follow-up run's start, or steering during a run."""

    kind: Literal["user_message"] = "user_message"
    message: str
    context: dict[str, Any] = Field(default_factory=dict)
    run: int = 1
    starts_run: bool = False


class ControlItem(_Item):
    kind: Literal["control"] = "control"
    action: Literal["pause", "resume", "cancel", "fail"]
    reason: str | None = None


ThreadItem = Annotated[
    TaskItem
    | AssistantItem
    | LLMErrorItem
    | ToolResultItem
    | HumanRequestItem
    | HumanResponseItem
    | UserMessageItem
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


class Tally(BaseModel):
    """Results of one tool: how many came back ok and how many failed."""

    model_config = ConfigDict(frozen=True)
    ok: int = 0
    failed: int = 0


OTHER_TOOL = "other"  # the tally of tool names no tool has (a model made them up)


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
    step_started_at: datetime | None = None  # when the current step's LLM call was first sent
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
    workspace_id: str = ""  # "": the task's own
    # Runs: a finished task's follow-up message starts another; step and call counters go on
    # across runs, `max_steps` counts from the run's first step, the run's steering (its
    # mock script, for the mock LLM) is in the item that started it.
    run: int = 1
    run_start_step: int = 0
    run_start_calls: int = 0
    run_item: int = 0  # thread index of the item that started the run (the task: 0)
    # Delegation: how deep this agent's task is, how many children it started, what they
    # cost (it counts toward the budget), and the children its calls wait for (call id ->
    # child task id).
    depth: int = 0
    delegations: int = 0
    children_cost_usd: float = 0.0
    waiting: dict[str, str] = Field(default_factory=dict)
    # ---- tallies of the thread, for readers of the head (see the module docstring) ----
    description: str = ""  # the task's description, cut to DESCRIPTION_CHARS
    human_requests: int = 0
    open_requests: tuple[int, ...] = ()  # thread indexes of unanswered human requests
    error_count: int = 0  # failed LLM calls and failed tool results
    llm_answers: int = 0
    llm_errors: int = 0
    tool_calls: int = 0
    tool_results: dict[str, Tally] = Field(default_factory=dict)

    # ---- derived facts ----
    def open_human_request(self) -> HumanRequestItem | None:
        """The newest unanswered human request (needs the thread in memory)."""
        if not self.open_requests:
            return None
        item = self.thread[self.open_requests[-1]]
        assert isinstance(item, HumanRequestItem), "open_requests points at a human request"
        return item

    def consecutive_errors(self) -> int:
        """Trailing LLM/tool errors, reset by a successful tool result or a human answer."""
        count = 0
        for item in reversed(self.thread):
            if isinstance(item, LLMErrorItem) or (isinstance(item, ToolResultItem) and not item.ok):
                count += 1
            elif isinstance(item, ToolResultItem | HumanResponseItem):
                break
        return count

    def errors(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.thread:
            if isinstance(item, LLMErrorItem):
                out.append({"step": item.step, "source": "llm", **item.error.model_dump()})
            elif isinstance(item, ToolResultItem) and not item.ok and item.error is not None:
                out.append({"step": item.step, "source": item.name, **item.error.model_dump()})
        return out

    def with_tallies(self) -> AgentState:
        """This state with its tallies computed from its thread (a state stored before them)."""
        fields: dict[str, Any] = {
            "description": "",
            "human_requests": 0,
            "open_requests": (),
            "error_count": 0,
            "llm_answers": 0,
            "llm_errors": 0,
            "tool_calls": 0,
            "tool_results": {},
        }
        for index, item in enumerate(self.thread):
            fields.update(tally(fields.__getitem__, self.thread, index, item, None))
        return self.model_copy(update=fields)


DESCRIPTION_CHARS = 1000


def tally(
    get: Callable[[str], Any], thread: tuple[ThreadItem, ...], index: int, item: ThreadItem,
    tools: frozenset[str] | None,
) -> dict[str, Any]:  # fmt: skip
    """The tallies that change when `item` is appended at `index` of `thread`. `get(name)`
    gives a tally so far; `tools` are the tool names a tally may be kept under (None: any)."""
    match item:
        case TaskItem():
            if not get("description"):
                return {"description": item.description[:DESCRIPTION_CHARS]}
        case HumanRequestItem():
            return {
                "human_requests": get("human_requests") + 1,
                "open_requests": (*get("open_requests"), index),
            }
        case HumanResponseItem():
            still = tuple(
                i
                for i in get("open_requests")
                if getattr(thread[i], "request_id", None) != item.request_id
            )
            return {"open_requests": still}
        case LLMErrorItem():
            return {"error_count": get("error_count") + 1, "llm_errors": get("llm_errors") + 1}
        case AssistantItem():
            return {
                "llm_answers": get("llm_answers") + 1,
                "tool_calls": get("tool_calls") + len(item.tool_calls),
            }
        case ToolResultItem():
            name = item.name if tools is None or item.name in tools else OTHER_TOOL
            results: dict[str, Tally] = dict(get("tool_results"))
            old = results.get(name, Tally())
            results[name] = (
                old.model_copy(update={"ok": old.ok + 1})
                if item.ok
                else old.model_copy(update={"failed": old.failed + 1})
            )
            out: dict[str, Any] = {"tool_results": results}
            if not item.ok and item.error is not None:
                out["error_count"] = get("error_count") + 1
            return out
    return {}


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
    # Set when the task is being deleted (DELETE or retention): its data goes, then the record.
    deleting: bool = False
    # Its workspace: the source it started from (credentials masked), the starting commit
    # and the last commit of its work; `started`: its agent was started (after the
    # workspace was ready, when it had a source).
    workspace_id: str = ""
    source: dict[str, Any] | None = None
    base: str | None = None
    head: str | None = None
    started: bool = True
    run: int = 1
    # A tree of tasks: the parent (a delegating agent's task or a workflow), the children
    # started by delegation, how deep it is, and what its descendants cost.
    parent: ParentRef | None = None
    children: tuple[str, ...] = ()
    depth: int = 0
    children_cost_usd: float = 0.0
    child_costs: dict[str, float] = Field(default_factory=dict)
    events_emitted: int = 0
    last_msg_id: str | None = None
    outbox: tuple[Effect, ...] = ()


AGENT_STATE_ADAPTER: TypeAdapter[AgentState] = TypeAdapter(AgentState)
TASK_RECORD_ADAPTER: TypeAdapter[TaskRecord] = TypeAdapter(TaskRecord)
