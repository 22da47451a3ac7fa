"""The agent reducer: `step(spec, state, message, now) -> Decision`. Pure: no I/O, clock or ids.

The control loop, explicitly:
- start → call the LLM for step 1.
- the LLM answers → record it; validate each tool call (invalid ones go back to the model as
  error results); `complete_task` finishes; `request_human_input` waits for a human; the rest
  go to the tool executor. Text without tool calls simply moves on to the next step.
- every result of the step is in (and no human is pending) → `Transition.continue_`: escalate to a
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
from typing import Any, assert_never

from pydantic import ValidationError

from agentops.agents.definitions import AgentSpec
from agentops.core.answers import BadAnswer, RaiseBudget, Stop, answer_json, parse_answer
from agentops.core.calls import call_of, last_assistant, preview
from agentops.core.delegation import DELEGATE, delegated, spent_usd
from agentops.core.effects import CallLLM, Decision, Effect, InvokeTool
from agentops.core.render import render_request
from agentops.core.state import (
    AgentState,
    AssistantItem,
    ControlItem,
    HumanResponseItem,
    Inflight,
    LLMErrorItem,
    TaskItem,
    UserMessageItem,
)
from agentops.core.transition import CONVERSATION_MISS, Transition
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentInbound,
    AgentStatus,
    CancelAgent,
    FailAgent,
    HumanResponse,
    LLMCompleted,
    LLMFailed,
    PauseAgent,
    ResumeAgent,
    StartAgent,
    ToolCompleted,
    UserMessage,
)
from agentops.tools.policy import ApprovalAnswer, rejection_message
from agentops.tools.registry import BUILTIN_TOOLS

# A saved outbox does not store the rendered LLM request (conversation, tool schemas,
# metadata with the mock's script) nor a tool call's arguments: both are pure functions of the
# state and the spec, so a replay derives them again (see `_replay`). Keeps the head small:
# a step's write costs what it adds, whatever the size of the thread or of one call.
STATE_EXCLUDE = {
    "outbox": {
        "__all__": {"message": {"request": {"messages", "tools", "metadata"}, "arguments": True}}
    }
}


def start(spec: AgentSpec, msg: StartAgent, now: datetime) -> Decision[AgentState]:
    if msg.agent_id is None:
        raise PermanentError("agent.start without agent_id")
    state = AgentState(
        agent_id=msg.agent_id,
        task_id=msg.task_id,
        agent_type=spec.agent_type,
        max_steps=msg.max_steps or spec.max_steps,
        budget_usd=msg.budget_usd,
        workspace_id=msg.workspace_id or msg.task_id,
        depth=msg.depth,
        created_at=now,
        updated_at=now,
    )
    run = Transition(spec, state, msg.id, now)
    run.record(TaskItem(at=now, description=msg.description, context=msg.context))
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
    run = Transition(spec, state, msg.id, now)
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
        elif isinstance(effect, InvokeTool) and not effect.message.arguments:
            arguments = tool_arguments(state, effect.message.step, effect.message.call_id)
            effect = InvokeTool(message=effect.message.model_copy(update={"arguments": arguments}))
        out.append(effect)
    return tuple(out)


def tool_arguments(state: AgentState, step: int, call_id: str) -> dict[str, Any]:
    """The arguments a tool call was sent with: a builtin's canonical form (its validated
    model), a plugin's as the model gave them."""
    call = call_of(state, step, call_id)
    if call is None:
        return {}
    builtin = BUILTIN_TOOLS.get(call.name)
    if builtin is None:
        return call.arguments
    try:
        return builtin.args_model.model_validate(call.arguments).model_dump(mode="json")
    except ValidationError:  # it was valid when sent; a model changed since: send as given
        return call.arguments


def _apply(run: Transition, msg: AgentInbound) -> str | None:
    """Apply one message; return why it was ignored, or None when it changed the state."""
    match msg:
        case StartAgent():
            return "already started"
        case LLMCompleted():
            return _llm_completed(run, msg)
        case LLMFailed():
            return _llm_failed(run, msg)
        case ToolCompleted():
            return _tool_completed(run, msg)
        case HumanResponse():
            return _human_response(run, msg)
        case PauseAgent():
            return _pause(run, msg)
        case ResumeAgent():
            return _resume(run, msg)
        case CancelAgent():
            return _cancel(run, msg)
        case FailAgent():
            return _fail(run, msg)
        case UserMessage():
            return _user_message(run, msg)
        case _:
            assert_never(msg)


def _awaits_llm(state: AgentState, msg: LLMCompleted | LLMFailed) -> bool:
    """Is this the answer to the LLM call in flight (not a stale or duplicate one)?"""
    flight = state.inflight
    return (
        state.status not in TERMINAL
        and flight is not None
        and flight.kind == "llm"
        and (flight.step, flight.attempt) == (msg.step, msg.attempt)
    )


def _llm_completed(run: Transition, msg: LLMCompleted) -> str | None:
    st = run.state
    if not _awaits_llm(st, msg):
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
    item = run.record(item)  # what no longer fits a message is refused or cut here
    run.update(usage=st.usage + result.usage, inflight=None)
    run.emit(
        "llm.response",
        {
            "step": msg.step,
            "attempt": msg.attempt,
            "text": preview(result.text),
            "tool_calls": [{"id": c.id, "name": c.name} for c in result.tool_calls],
            "usage": result.usage.model_dump(),
            "cost_usd": result.usage.cost_usd,
            "model": result.model,
            "provider": result.provider,
            "latency_ms": result.latency_ms,
        },
    )
    if run.state.status == "paused":
        if item.tool_calls:  # sent out on resume
            run.update(inflight=Inflight(kind="dispatch", step=msg.step))
    elif item.tool_calls:
        run.dispatch(item)
    else:
        run.continue_()
    return None


def _llm_failed(run: Transition, msg: LLMFailed) -> str | None:
    if not _awaits_llm(run.state, msg):
        return "stale llm failure"
    if msg.error.code == CONVERSATION_MISS:  # the gateway lacks the conversation: send it all
        run.resend_whole(msg.step, msg.attempt)
        return None
    run.record(LLMErrorItem(at=run.now, step=msg.step, attempt=msg.attempt, error=msg.error))
    run.update(inflight=None)
    run.emit(
        "llm.error", {"step": msg.step, "attempt": msg.attempt, "error": msg.error.model_dump()}
    )
    if run.state.status == "running":
        run.continue_()
    return None


def _tool_completed(run: Transition, msg: ToolCompleted) -> str | None:
    st = run.state
    flight = st.inflight
    if (
        st.status in TERMINAL
        or flight is None
        or flight.kind != "tools"
        or flight.step != msg.step
        or msg.call_id not in flight.pending
    ):
        return "stale tool result"
    call = call_of(st, msg.step, msg.call_id)
    if call is None:
        return "unknown tool call"
    run.tool_result(
        msg.step, call, ok=msg.ok, result=msg.result, error=msg.error,
        duration_ms=msg.duration_ms,
    )  # fmt: skip
    if call.name == DELEGATE:
        run.update(**delegated(run.state, call.id, msg.ok, msg.result))
    _resolve_pending(run, msg.call_id)
    return None


def _pause(run: Transition, msg: PauseAgent) -> str | None:
    st = run.state
    if st.status not in ("running", "awaiting_human"):
        return _reject(run, "pause", f"agent is {st.status}", _actor(msg))
    run.record(ControlItem(at=run.now, action="pause"))
    run.update(paused_from=st.status)
    run.set_status("paused", **_actor(msg))
    return None


def _resume(run: Transition, msg: ResumeAgent) -> str | None:
    st = run.state
    if st.status != "paused":
        return _reject(run, "resume", f"agent is {st.status}", _actor(msg))
    run.record(ControlItem(at=run.now, action="resume"))
    resumed: AgentStatus = st.paused_from or "running"
    run.update(paused_from=None)
    run.set_status(resumed, **_actor(msg))
    if resumed == "running":
        flight = run.state.inflight
        if flight is None:
            run.continue_()
        elif flight.kind == "dispatch":
            assistant = last_assistant(run.state)
            assert assistant is not None, "dispatch in flight without an LLM answer"
            run.dispatch(assistant)
    return None


def _cancel(run: Transition, msg: CancelAgent) -> str | None:
    if run.state.status in TERMINAL:
        return "already finished"
    run.record(ControlItem(at=run.now, action="cancel", reason=msg.reason))
    run.update(
        inflight=None, paused_from=None, error=ErrorInfo(code="cancelled", message=msg.reason)
    )
    run.set_status("cancelled", reason=msg.reason, **_actor(msg))
    return None


def _user_message(run: Transition, msg: UserMessage) -> str | None:
    """A follow-up starts a new run of a finished agent; otherwise the message steers the run
    going on (the model reads it before its next call)."""
    st = run.state
    finished = st.status in TERMINAL
    if finished and not msg.new_run:
        return _reject(run, "message", "the task has finished: send the message again to "
                       "start a follow-up run")  # fmt: skip
    if msg.new_run and not finished:  # the run it would follow is still going: steer it
        msg = msg.model_copy(update={"new_run": False})
    item = UserMessageItem(
        at=run.now, message=msg.message, context=msg.context, run=msg.run if msg.new_run else st.run,
        starts_run=msg.new_run,
    )  # fmt: skip
    index = len(st.thread)
    run.record(item)
    run.emit("user.message", {"message": preview(msg.message), "starts_run": msg.new_run})
    if not msg.new_run:
        return None
    run.update(
        run=msg.run, run_start_step=st.step, run_start_calls=st.llm_calls, run_item=index,
        error=None, result=None, inflight=None, paused_from=None,
    )  # fmt: skip
    run.set_status("running", run=msg.run)
    run.continue_()
    return None


def _fail(run: Transition, msg: FailAgent) -> str | None:
    if run.state.status in TERMINAL:
        return "already finished"
    run.record(ControlItem(at=run.now, action="fail", reason=msg.error.message))
    run.finish_failed(msg.error)
    return None


def _resolve_pending(run: Transition, call_id: str) -> None:
    flight = run.state.inflight
    assert flight is not None
    pending = tuple(c for c in flight.pending if c != call_id)
    if pending:
        run.update(inflight=flight.model_copy(update={"pending": pending}))
        return
    run.update(inflight=None)
    if run.state.status == "running":
        run.continue_()


def _human_response(run: Transition, msg: HumanResponse) -> str | None:
    st = run.state
    open_request = st.open_human_request()
    if st.status != "awaiting_human" or open_request is None:
        return _reject(
            run, "human_response", f"agent is {st.status}, not awaiting_human", _actor(msg)
        )
    if msg.request_id and msg.request_id != open_request.request_id:
        return _reject(run, "human_response", f"no open request {msg.request_id!r}", _actor(msg))
    try:
        answer = parse_answer(open_request, msg.response, spent_usd(st))
        response = answer_json(answer)  # normalised ("yes"/"no", the choice as offered)
    except BadAnswer as exc:
        return _reject(run, "human_response", str(exc), _actor(msg))
    run.record(HumanResponseItem(at=run.now, request_id=open_request.request_id, response=response))
    run.emit(
        "human.response",
        {"request_id": open_request.request_id, "response": preview(response), **_actor(msg)},
    )
    if isinstance(answer, Stop):
        reason = "stopped by a human at the budget limit" + (
            f": {answer.comment}" if answer.comment else ""
        )
        run.update(inflight=None, error=ErrorInfo(code="budget_exceeded", message=reason))
        run.set_status("cancelled", reason=reason)
        return None
    if isinstance(answer, RaiseBudget):
        run.update(budget_usd=answer.budget_usd)
    still_open = run.state.open_human_request()
    run.set_status("awaiting_human" if still_open else "running")
    if open_request.call_id is None:  # an escalation or a budget question
        run.continue_()
        return None
    call = call_of(st, open_request.step, open_request.call_id)
    assert call is not None, "human request without its tool call"
    if isinstance(answer, ApprovalAnswer):
        _approval(run, open_request.step, call, answer)
    else:
        run.tool_result(open_request.step, call, ok=True, result={"response": response})
        _resolve_pending(run, call.id)
    return None


def _approval(run: Transition, step: int, call: ToolCall, answer: ApprovalAnswer) -> None:
    if answer.approved:  # still pending: its result continues the loop
        run.invoke_approved(step, call)
        return
    error = ErrorInfo(code="rejected_by_human", message=rejection_message(call.name, answer))
    run.tool_result(step, call, ok=False, error=error)
    _resolve_pending(run, call.id)


def _reject(
    run: Transition, command: str, reason: str, who: dict[str, str] | None = None
) -> str | None:
    """A command that does not fit the state: answered with an event, the thread unchanged."""
    run.emit("command.rejected", {"command": command, "reason": reason, **(who or {})})
    return None


def _actor(msg: PauseAgent | ResumeAgent | CancelAgent | HumanResponse) -> dict[str, str]:
    """`{"actor": name}` for the event of a human's command or answer (DESIGN §4d): who, as
    the edge authenticated them; nothing for one without (an older sender, the system)."""
    return {"actor": msg.actor} if msg.actor else {}
