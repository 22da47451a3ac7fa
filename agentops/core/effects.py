"""What a reducer decides: the new state and the effects the shell must perform.

Effects are data (a tagged union), so a decision can be stored in the state's outbox and
performed again after a crash with the same message ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agentops.protocol.messages import (
    AgentReport,
    CancelAgent,
    CancelTask,
    ChildFinished,
    CommitWorkspace,
    DelegateTask,
    Event,
    FailAgent,
    LLMRequested,
    PrepareWorkspace,
    StartAgent,
    SubmitTask,
    ToolCompleted,
    ToolRequested,
    UserMessage,
)


class _Effect(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CallLLM(_Effect):
    kind: Literal["call_llm"] = "call_llm"
    message: LLMRequested


class InvokeTool(_Effect):
    kind: Literal["invoke_tool"] = "invoke_tool"
    message: ToolRequested


class ReportToTask(_Effect):
    """A message to a task's orchestrator inbox: an agent's status change or delegation, a
    child's submission or end, a cancel passed down a tree."""

    kind: Literal["report"] = "report"
    message: AgentReport | DelegateTask | SubmitTask | ChildFinished | CancelTask


class SendToAgent(_Effect):
    kind: Literal["send_agent"] = "send_agent"
    agent_type: str
    message: StartAgent | CancelAgent | FailAgent | UserMessage | ToolCompleted


class ToWorkspaces(_Effect):
    """Work on a task's workspace, for the tool executor (which owns workspaces)."""

    kind: Literal["workspace"] = "workspace"
    message: PrepareWorkspace | CommitWorkspace


class Emit(_Effect):
    kind: Literal["emit"] = "emit"
    event: Event


Effect = Annotated[
    CallLLM | InvokeTool | ReportToTask | SendToAgent | ToWorkspaces | Emit,
    Field(discriminator="kind"),
]
EFFECTS_ADAPTER: TypeAdapter[tuple[Effect, ...]] = TypeAdapter(tuple[Effect, ...])

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """`state` to save (None: nothing to save), `effects` to perform after saving.

    `replay`: the message was the last one applied; perform `effects` (the saved outbox)
    again without saving. `ignored`: a stale or duplicate message; ack it and do nothing.
    """

    state: S | None
    effects: tuple[Effect, ...] = ()
    replay: bool = False
    ignored: str | None = None
