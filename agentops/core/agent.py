"""The agent reducer: `step(spec, state, message, now) -> Decision`. Pure: no I/O, clock or ids.

The control loop, explicitly:
- start → call the LLM for step 1.
- the LLM answers → record it; validate each tool call (invalid ones go back to the model as
  error results); `complete_task` finishes; `request_human_input` waits for a human; the rest
  go to the tool executor. Text without tool calls simply moves on to the next step.
- every result of the step is in (and no human is pending) → `_continue`: escalate to a
  human after 3 consecutive errors, retry a step whose LLM call failed, fail at `max_steps`,
  otherwise call the LLM for the next step.
- pause holds the loop between steps: results that arrive while paused are recorded, and
  nothing new is sent until resume. Cancel ends the run; late results are ignored.

Rules:
- A message is applied at most once: the last applied message id is kept, and a redelivery
  of it replays the saved outbox instead of deciding again. Results are matched to what is in
  flight (step, attempt, call id), so stale or duplicate results are ignored.
- Ids of everything emitted derive from the agent id and counters in the state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.core.effects import CallLLM, Decision, Effect, Emit, InvokeTool, ReportToTask
from agentops.core.render import render_request
from agentops.core.state import (
    AgentState,
    AssistantItem,
    ControlItem,
    HumanRequestItem,
    HumanResponseItem,
    Inflight,
    LLMErrorItem,
    TaskItem,
    ThreadItem,
    ToolResultItem,
)
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentInbound,
    AgentReport,
    AgentStatus,
    CancelAgent,
    Event,
    EventType,
    HumanResponse,
    LLMCompleted,
    LLMFailed,
    LLMRequested,
    PauseAgent,
    ReplyTo,
    ResumeAgent,
    StartAgent,
    TaskResult,
    ToolCompleted,
    ToolRequested,
)
from agentops.tools.registry import (
    BUILTIN_TOOLS,
    CompleteTaskArgs,
    RequestHumanInputArgs,
    ToolArgs,
    ToolArgsError,
    is_idempotent,
    validate_call,
)

MAX_CONSECUTIVE_ERRORS = 3
# The rendered conversation in a saved outbox is not stored: it is a pure function of the
# state, so a replay renders it again (see `_replay`). Keeps each state write O(thread).
STATE_EXCLUDE = {"outbox": {"__all__": {"message": {"request": {"messages"}}}}}
EVENT_STRING_LIMIT = 4000
SOURCE = "agent"


def clip(value: Any, limit: int = EVENT_STRING_LIMIT) -> Any:
    """Shorten long strings for events; the state keeps the whole value."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {k: clip(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clip(v, limit) for v in value]
    return value


class _Run:
    """Accumulates one transition: the evolving state, its effects and events."""

    def __init__(self, spec: AgentSpec, state: AgentState, msg_id: str, now: datetime) -> None:
        self.spec = spec
        self.state = state
        self.msg_id = msg_id
        self.now = now
        self.effects: list[Effect] = []

    # ---- state helpers ----
    def update(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)

    def record(self, item: ThreadItem) -> None:
        self.update(thread=(*self.state.thread, item))

    def emit(self, type_: EventType, data: dict[str, Any]) -> None:
        n = self.state.events_emitted
        self.update(events_emitted=n + 1)
        event = Event(
            id=f"{self.state.agent_id}.ev{n}",
            type=type_,
            ts=self.now,
            task_id=self.state.task_id,
            agent_id=self.state.agent_id,
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
        final = self.state.model_copy(
            update={"last_msg_id": self.msg_id, "outbox": effects, "updated_at": self.now}
        )
        return Decision(state=final, effects=effects)

    # ---- the loop ----
    def call_llm(self, step: int, attempt: int) -> None:
        st = self.state
        if attempt == 0:
            self.update(step=step)
            self.emit("agent.step", {"step": step, "max_steps": st.max_steps})
        request = render_request(self.spec, self.state, step)
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

    def continue_(self) -> None:
        """Every result of the current step is in and the agent is running: decide what's next."""
        st = self.state
        if st.consecutive_errors() >= MAX_CONSECUTIVE_ERRORS:
            self.escalate()
        elif st.step > 0 and not _answered(st, st.step):
            self.call_llm(st.step, attempt=_failed_attempts(st, st.step))
        elif st.step >= st.max_steps:
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
        errors = st.errors()
        last = errors[-1]["message"] if errors else "unknown error"
        n = st.count("human_request")
        request = HumanRequestItem(
            at=self.now,
            request_id=f"{st.agent_id}.esc{n}",
            step=st.step,
            reason="escalation",
            question=(
                f"The agent hit {st.consecutive_errors()} consecutive errors (last: {last}). "
                "Reply with guidance to continue, or cancel the task."
            ),
            urgency="high",
        )
        self.record(request)
        self.update(inflight=None)
        self.emit("human.request", _human_request_data(request))
        self.set_status("awaiting_human", reason="escalation")

    def finish_failed(self, error: ErrorInfo) -> None:
        self.update(error=error, inflight=None)
        self.set_status("failed", error=error.model_dump())

    def dispatch(self, assistant: AssistantItem) -> None:
        """Validate and send out the tool calls of one LLM answer."""
        pending: list[str] = []
        for call in assistant.tool_calls:
            self.emit(
                "tool.call",
                {
                    "step": assistant.step,
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": clip(call.arguments),
                },
            )
            try:
                if call.arguments_error:
                    raise ToolArgsError(f"arguments are not valid JSON: {call.arguments_error}")
                args = validate_call(call.name, call.arguments, self.spec.allowed_tools)
            except ToolArgsError as exc:
                self.tool_result(
                    assistant.step,
                    call,
                    ok=False,
                    error=ErrorInfo(code="invalid_arguments", message=str(exc)),
                )
                continue
            if isinstance(args, CompleteTaskArgs):
                result = TaskResult(summary=args.summary, artifacts=tuple(args.artifacts))
                self.update(result=result, inflight=None)
                self.set_status("completed", result=result.model_dump())
                return
            if isinstance(args, RequestHumanInputArgs):
                self.ask_human(assistant.step, call, args)
            else:
                self.invoke_tool(assistant.step, call, args)
            pending.append(call.id)
        if pending:
            self.update(
                inflight=Inflight(kind="tools", step=assistant.step, pending=tuple(pending))
            )
        else:
            self.update(inflight=None)
            if self.state.status == "running":
                self.continue_()

    def ask_human(self, step: int, call: ToolCall, args: RequestHumanInputArgs) -> None:
        request = HumanRequestItem(
            at=self.now,
            request_id=f"{self.state.agent_id}.h{step}.{call.id}",
            step=step,
            call_id=call.id,
            reason="tool",
            question=args.question,
            context=args.context,
            urgency=args.urgency,
            format=args.format,
            choices=tuple(args.choices) if args.choices else None,
        )
        self.record(request)
        self.emit("human.request", _human_request_data(request))
        if self.state.status == "running":
            self.set_status("awaiting_human", reason="tool", request_id=request.request_id)
        elif self.state.status == "paused":
            self.update(paused_from="awaiting_human")

    def invoke_tool(self, step: int, call: ToolCall, args: ToolArgs) -> None:
        tool = BUILTIN_TOOLS[call.name]
        message = ToolRequested(
            **self.header(f"tool{step}.{call.id}"),
            step=step,
            call_id=call.id,
            name=call.name,
            arguments=args.model_dump(mode="json"),
            reply_to=self.reply_to(),
            timeout_s=tool.timeout_s,
            idempotent=is_idempotent(call.name, args),
        )
        self.effects.append(InvokeTool(message=message))

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
        self.record(
            ToolResultItem(
                at=self.now,
                step=step,
                call_id=call.id,
                name=call.name,
                ok=ok,
                result=result,
                error=error,
            )
        )
        self.emit(
            "tool.result",
            {
                "step": step,
                "call_id": call.id,
                "name": call.name,
                "ok": ok,
                "result": clip(result),
                "error": error.model_dump() if error else None,
                "duration_ms": duration_ms,
            },
        )


def _answered(state: AgentState, step: int) -> bool:
    return any(isinstance(i, AssistantItem) and i.step == step for i in state.thread)


def _failed_attempts(state: AgentState, step: int) -> int:
    return sum(1 for i in state.thread if isinstance(i, LLMErrorItem) and i.step == step)


def _human_request_data(item: HumanRequestItem) -> dict[str, Any]:
    return item.model_dump(mode="json", exclude={"at"})


def _call_of(state: AgentState, step: int, call_id: str) -> ToolCall | None:
    for item in state.thread:
        if isinstance(item, AssistantItem) and item.step == step:
            for call in item.tool_calls:
                if call.id == call_id:
                    return call
    return None


def _last_assistant(state: AgentState) -> AssistantItem | None:
    for item in reversed(state.thread):
        if isinstance(item, AssistantItem):
            return item
    return None


def start(spec: AgentSpec, msg: StartAgent, now: datetime) -> Decision[AgentState]:
    if msg.agent_id is None:
        raise PermanentError("agent.start without agent_id")
    state = AgentState(
        agent_id=msg.agent_id,
        task_id=msg.task_id,
        agent_type=spec.agent_type,
        max_steps=msg.max_steps or spec.max_steps,
        budget_usd=msg.budget_usd,
        thread=(TaskItem(at=now, description=msg.description, context=msg.context),),
        created_at=now,
        updated_at=now,
    )
    run = _Run(spec, state, msg.id, now)
    run.set_status("running")
    run.continue_()
    return run.decision()


def step(
    spec: AgentSpec, state: AgentState | None, msg: AgentInbound, now: datetime
) -> Decision[AgentState]:
    if state is None:
        if isinstance(msg, StartAgent):
            return start(spec, msg, now)
        raise PermanentError(f"{msg.type} for unknown agent {msg.agent_id!r}", code="unknown_agent")
    if msg.id == state.last_msg_id:
        return Decision(state=None, effects=_replay(spec, state), replay=True)
    run = _Run(spec, state, msg.id, now)
    reason = _apply(run, msg)
    if reason is not None:
        return Decision(state=None, ignored=reason)
    return run.decision()


def _replay(spec: AgentSpec, state: AgentState) -> tuple[Effect, ...]:
    """The saved outbox, with LLM requests rendered again where the stored copy was trimmed.

    `call_llm` is always the last thing a transition does, so rendering from the saved state
    (with the call counter as it was before that call) gives the same request.
    """
    out: list[Effect] = []
    for effect in state.outbox:
        if isinstance(effect, CallLLM) and not effect.message.request.messages:
            before = state.model_copy(update={"llm_calls": state.llm_calls - 1})
            request = render_request(spec, before, effect.message.step)
            effect = CallLLM(message=effect.message.model_copy(update={"request": request}))
        out.append(effect)
    return tuple(out)


def _apply(run: _Run, msg: AgentInbound) -> str | None:
    """Apply one message; return why it was ignored, or None when it changed the state."""
    st = run.state
    match msg:
        case StartAgent():
            return "already started"
        case LLMCompleted():
            flight = st.inflight
            if (
                st.status in TERMINAL
                or flight is None
                or flight.kind != "llm"
                or (flight.step, flight.attempt) != (msg.step, msg.attempt)
            ):
                return "stale llm result"
            result = msg.result
            item = AssistantItem(
                at=run.now,
                step=msg.step,
                attempt=msg.attempt,
                text=result.text,
                tool_calls=result.tool_calls,
                usage=result.usage,
                model=result.model,
            )
            run.record(item)
            run.update(usage=st.usage + result.usage, inflight=None)
            run.emit(
                "llm.response",
                {
                    "step": msg.step,
                    "attempt": msg.attempt,
                    "text": clip(result.text),
                    "tool_calls": [{"id": c.id, "name": c.name} for c in result.tool_calls],
                    "usage": result.usage.model_dump(),
                    "cost_usd": result.usage.cost_usd,
                    "model": result.model,
                    "provider": result.provider,
                    "latency_ms": result.latency_ms,
                },
            )
            if run.state.status == "paused":
                if item.tool_calls:
                    run.update(inflight=Inflight(kind="dispatch", step=msg.step))
            elif item.tool_calls:
                run.dispatch(item)
            else:
                run.continue_()
        case LLMFailed():
            flight = st.inflight
            if (
                st.status in TERMINAL
                or flight is None
                or flight.kind != "llm"
                or (flight.step, flight.attempt) != (msg.step, msg.attempt)
            ):
                return "stale llm failure"
            run.record(
                LLMErrorItem(at=run.now, step=msg.step, attempt=msg.attempt, error=msg.error)
            )
            run.update(inflight=None)
            run.emit(
                "llm.error",
                {"step": msg.step, "attempt": msg.attempt, "error": msg.error.model_dump()},
            )
            if run.state.status == "running":
                run.continue_()
        case ToolCompleted():
            flight = st.inflight
            if (
                st.status in TERMINAL
                or flight is None
                or flight.kind != "tools"
                or (flight.step != msg.step or msg.call_id not in flight.pending)
            ):
                return "stale tool result"
            call = _call_of(st, msg.step, msg.call_id)
            if call is None:
                return "unknown tool call"
            run.tool_result(
                msg.step,
                call,
                ok=msg.ok,
                result=msg.result,
                error=msg.error,
                duration_ms=msg.duration_ms,
            )
            _resolve_pending(run, msg.call_id)
        case HumanResponse():
            return _human_response(run, msg)
        case PauseAgent():
            if st.status not in ("running", "awaiting_human"):
                return _reject(run, "pause", f"agent is {st.status}")
            run.record(ControlItem(at=run.now, action="pause"))
            run.update(paused_from=st.status)
            run.set_status("paused")
        case ResumeAgent():
            if st.status != "paused":
                return _reject(run, "resume", f"agent is {st.status}")
            run.record(ControlItem(at=run.now, action="resume"))
            resumed: AgentStatus = st.paused_from or "running"
            run.update(paused_from=None)
            run.set_status(resumed)
            if resumed == "running":
                flight = run.state.inflight
                if flight is None:
                    run.continue_()
                elif flight.kind == "dispatch":
                    assistant = _last_assistant(run.state)
                    assert assistant is not None, "dispatch in flight without an LLM answer"
                    run.dispatch(assistant)
        case CancelAgent():
            if st.status in TERMINAL:
                return "already finished"
            run.record(ControlItem(at=run.now, action="cancel", reason=msg.reason))
            run.update(
                inflight=None,
                paused_from=None,
                error=ErrorInfo(code="cancelled", message=msg.reason),
            )
            run.set_status("cancelled", reason=msg.reason)
    return None


def _resolve_pending(run: _Run, call_id: str) -> None:
    flight = run.state.inflight
    assert flight is not None
    pending = tuple(c for c in flight.pending if c != call_id)
    if pending:
        run.update(inflight=flight.model_copy(update={"pending": pending}))
        return
    run.update(inflight=None)
    if run.state.status == "running":
        run.continue_()


def _human_response(run: _Run, msg: HumanResponse) -> str | None:
    st = run.state
    open_request = st.open_human_request()
    if st.status != "awaiting_human" or open_request is None:
        return _reject(run, "human_response", f"agent is {st.status}, not awaiting_human")
    if msg.request_id and msg.request_id != open_request.request_id:
        return _reject(run, "human_response", f"no open request {msg.request_id!r}")
    run.record(
        HumanResponseItem(at=run.now, request_id=open_request.request_id, response=msg.response)
    )
    run.emit(
        "human.response", {"request_id": open_request.request_id, "response": clip(msg.response)}
    )
    still_open = run.state.open_human_request()
    run.set_status("awaiting_human" if still_open else "running")
    if open_request.reason == "tool" and open_request.call_id is not None:
        call = _call_of(st, open_request.step, open_request.call_id)
        assert call is not None, "human request without its tool call"
        run.tool_result(open_request.step, call, ok=True, result={"response": msg.response})
        _resolve_pending(run, call.id)
    else:
        run.continue_()
    return None


def _reject(run: _Run, command: str, reason: str) -> str | None:
    """A command that does not fit the state: answered with an event, the thread unchanged."""
    run.emit("command.rejected", {"command": command, "reason": reason})
    return None
