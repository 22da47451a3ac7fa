"""One transition of the agent's control loop: the state as it evolves, and what it decides.

`Transition` accumulates the new state, events and effects while the reducer in
`core/agent.py` applies one message. Its methods are the loop's actions (call the LLM,
dispatch tool calls, ask a human, escalate, finish); `continue_` is the loop's decision of
what comes after a step whose results are all in. Pure, like the rest of `core`.

Rules:
- `call_llm` is the last action of any transition (the saved outbox relies on it: see
  `agent._replay`).
- Every event id is `<agent_id>.ev<n>` with n counted in the state; every message id derives
  from the agent id, the step and the call, so a replay publishes the same ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from agentops.agents.definitions import AgentSpec
from agentops.core import calls
from agentops.core.calls import human_request_data
from agentops.core.delegation import spent_usd
from agentops.core.effects import CallLLM, Decision, Effect, Emit, ReportToTask
from agentops.core.items import fit_item
from agentops.core.render import render_request
from agentops.core.state import (
    AgentState,
    AssistantItem,
    HumanRequestItem,
    Inflight,
    LLMErrorItem,
    ThreadItem,
    ToolResultItem,
    tally,
)
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import (
    AgentReport,
    AgentStatus,
    Event,
    EventType,
    LLMRequested,
    ReplyTo,
)

T = TypeVar("T", bound=ThreadItem)
MAX_CONSECUTIVE_ERRORS = 3
# The LLM gateway's answer when it lacks the conversation a request builds on
# (`bus/conversation.py`): the call is sent again whole; not an LLM error.
CONVERSATION_MISS = "conversation_miss"
SOURCE = "agent"


class Transition:
    """Accumulates one transition: the evolving state, its effects and events."""

    def __init__(self, spec: AgentSpec, state: AgentState, msg_id: str, now: datetime) -> None:
        self.spec = spec
        self._state = state
        # Changes not yet applied: a transition makes many small ones, and copying the
        # state for each was a large part of a step; they are applied when it is read.
        self._changes: dict[str, Any] = {}
        self.msg_id = msg_id
        self.now = now
        self.effects: list[Effect] = []

    @property
    def state(self) -> AgentState:
        if self._changes:
            self._state = self._state.model_copy(update=self._changes)
            self._changes = {}
        return self._state

    # ---- state helpers ----
    def update(self, **changes: Any) -> None:
        self._changes.update(changes)

    def _get(self, name: str) -> Any:
        return self._changes[name] if name in self._changes else getattr(self._state, name)

    def record(self, item: T) -> T:
        """Append an item, cut to fit one stored message (the item as appended is returned:
        use it, not the one given), and update the tallies."""
        fitted = fit_item(item)
        thread = (*self._get("thread"), fitted)
        self._changes.update(tally(self._get, thread, len(thread) - 1, fitted, self.tool_names()))
        self._changes["thread"] = thread
        assert isinstance(fitted, type(item))
        return fitted

    def tool_names(self) -> frozenset[str]:
        """The names tool results are tallied under (others count as `other`)."""
        return self.spec.tool_names

    def emit(self, type_: EventType, data: dict[str, Any]) -> None:
        n = self._changes.get("events_emitted", self._state.events_emitted)
        self.update(events_emitted=n + 1)
        st = self._state  # ids only: the agent and task never change within a transition
        event = Event(
            id=f"{st.agent_id}.ev{n}",
            type=type_,
            ts=self.now,
            task_id=st.task_id,
            agent_id=st.agent_id,
            data=data,
        )
        self.effects.append(Emit(event=event))

    def set_status(self, status: AgentStatus, **extra: Any) -> None:
        previous = self.state.status
        self.update(status=status)
        self.emit("agent.status", {"status": status, "previous": previous, **extra})
        st = self.state
        report = AgentReport(
            **self.header(f"report{st.events_emitted}"),
            agent_type=st.agent_type,
            run=st.run,
            status=status,
            step=st.step,
            result=st.result,
            error=st.error,
            usage=st.usage,
        )
        self.effects.append(ReportToTask(message=report))

    def header(self, suffix: str) -> dict[str, Any]:
        """Envelope fields of a message this transition sends; ids derive from the agent id."""
        st = self.state
        return {
            "id": f"{st.agent_id}.{suffix}",
            "source": SOURCE,
            "task_id": st.task_id,
            "agent_id": st.agent_id,
            "causation_id": self.msg_id,
            "ts": self.now,
        }

    def reply_to(self) -> ReplyTo:
        return ReplyTo(agent_type=self.state.agent_type, agent_id=self.state.agent_id)

    def decision(self) -> Decision[AgentState]:
        effects = tuple(self.effects)
        final = self._state.model_copy(
            update={
                **self._changes,
                "last_msg_id": self.msg_id,
                "outbox": effects,
                "updated_at": self.now,
            }
        )
        return Decision(state=final, effects=effects)

    # ---- the loop ----
    def call_llm(self, step: int, attempt: int) -> None:
        st = self.state
        request = render_request(self.spec, st, step)
        estimate = self.spec.call_cost_usd(
            request.metadata["estimated_input_tokens"], request.max_output_tokens
        )
        if st.budget_usd is not None and spent_usd(st) + estimate > st.budget_usd:
            self.ask_budget(estimate)
            return
        if attempt == 0:
            self.update(step=step, step_started_at=self.now)
            self.emit(
                "agent.step",
                {
                    "step": step,
                    "max_steps": st.max_steps,
                    "context": {
                        "estimated_input_tokens": request.metadata["estimated_input_tokens"],
                        "compacted_messages": request.metadata["compacted_messages"],
                        "context_window": self.spec.context_window,
                    },
                },
            )
        message = LLMRequested(
            **self.header(f"llm{step}.{attempt}"),
            step=step,
            attempt=attempt,
            reply_to=self.reply_to(),
            request=request,
        )
        self.effects.append(CallLLM(message=message))
        self.update(
            inflight=Inflight(kind="llm", step=step, attempt=attempt),
            llm_calls=self.state.llm_calls + 1,
        )

    def resend_whole(self, step: int, attempt: int) -> None:
        """The LLM call in flight again, with its whole conversation (the gateway that took
        it did not have the part it left out). The same call: no new attempt, the same
        `call_index`, so the model sees exactly the request it would have."""
        before = self.state.model_copy(update={"llm_calls": self.state.llm_calls - 1})
        message = LLMRequested(
            **self.header(f"llm{step}.{attempt}.whole"),
            step=step,
            attempt=attempt,
            reply_to=self.reply_to(),
            request=render_request(self.spec, before, step),
            whole=True,
        )
        self.effects.append(CallLLM(message=message))

    def continue_(self) -> None:
        """Every result of the current step is in and the agent is running: decide what's next."""
        st = self.state
        if st.consecutive_errors() >= MAX_CONSECUTIVE_ERRORS:
            self.escalate()
        elif st.step > 0 and not _answered(st, st.step):
            self.call_llm(st.step, attempt=_failed_attempts(st, st.step))
        elif st.step - st.run_start_step >= st.max_steps:
            self.finish_failed(
                ErrorInfo(
                    code="max_steps",
                    message=f"reached max_steps ({st.max_steps}) without complete_task",
                )
            )
        else:
            self.call_llm(st.step + 1, attempt=0)

    def escalate(self) -> None:
        st = self.state
        last = _last_error(st)
        self.stop_for_human(
            "escalation",
            "esc",
            f"The agent hit {st.consecutive_errors()} consecutive errors (last: {last}). "
            "Reply with guidance to continue, or cancel the task.",
        )

    def ask_budget(self, estimate_usd: float) -> None:
        """The next LLM call could take the task over its budget: a human raises it or stops."""
        st = self.state
        assert st.budget_usd is not None
        spent = spent_usd(st)
        details = {
            "budget_usd": st.budget_usd,
            "spent_usd": spent,
            "next_call_estimate_usd": round(estimate_usd, 6),
        }
        self.emit("budget.exceeded", dict(details))
        self.stop_for_human(
            "budget",
            "budget",
            f"The next LLM call may cost up to ${estimate_usd:.4f}; ${spent:.4f} of the "
            f'${st.budget_usd:.4f} budget is spent. Answer {{"budget_usd": <new budget>}} '
            'to raise the budget, or {"stop": true} to end the task.',
            details,
        )

    def stop_for_human(
        self,
        reason: Literal["escalation", "budget"],
        tag: str,
        question: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """The loop stops between steps until a human answers an urgent question; requests
        of one kind are numbered `<agent_id>.<tag><n>`."""
        st = self.state
        request = HumanRequestItem(
            at=self.now,
            request_id=f"{st.agent_id}.{tag}{st.human_requests}",
            step=st.step,
            reason=reason,
            question=question,
            urgency="high",
            details=details,
        )
        self.record(request)
        self.update(inflight=None)
        self.emit("human.request", human_request_data(request))
        self.set_status("awaiting_human", reason=request.reason, request_id=request.request_id)

    def finish_failed(self, error: ErrorInfo) -> None:
        self.update(error=error, inflight=None, paused_from=None)
        self.set_status("failed", error=error.model_dump())

    # ---- tool calls (core/calls.py) ----
    def dispatch(self, assistant: AssistantItem) -> None:
        calls.dispatch(self, assistant)

    def invoke_approved(self, step: int, call: ToolCall) -> None:
        calls.invoke_approved(self, step, call)

    def tool_result(
        self,
        step: int,
        call: ToolCall,
        *,
        ok: bool,
        result: Any = None,
        error: ErrorInfo | None = None,
        duration_ms: float = 0.0,
    ) -> None:
        calls.tool_result(
            self, step, call, ok=ok, result=result, error=error, duration_ms=duration_ms
        )

    def hold_for_human(self, request: HumanRequestItem) -> None:
        calls.hold_for_human(self, request)


def _this_step(state: AgentState, step: int) -> list[ThreadItem]:
    """The items of `step` and after, newest first: a walk back from the end that stops at
    the first item of an earlier step, so it costs the step's items, not the thread."""
    out: list[ThreadItem] = []
    for item in reversed(state.thread):
        item_step = getattr(item, "step", None)
        if item_step is not None and item_step < step:
            break
        out.append(item)
    return out


def _answered(state: AgentState, step: int) -> bool:
    return any(isinstance(i, AssistantItem) and i.step == step for i in _this_step(state, step))


def _failed_attempts(state: AgentState, step: int) -> int:
    return sum(1 for i in _this_step(state, step) if isinstance(i, LLMErrorItem) and i.step == step)


def _last_error(state: AgentState) -> str:
    for item in reversed(state.thread):
        if isinstance(item, LLMErrorItem):
            return item.error.message
        if isinstance(item, ToolResultItem) and not item.ok and item.error is not None:
            return item.error.message
    return "unknown error"
