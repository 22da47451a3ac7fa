"""The agent's tool calls, one transition's part of them: validate an LLM answer's calls and
send each where it goes (the tool executor, a plugin, a human, a child task), hold what the
approval policy holds, record results. A base of `Transition` (`core/transition.py`); pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentops.core.delegation import delegation, refusal, refused_error
from agentops.core.effects import InvokeTool, ReportToTask
from agentops.core.items import MAX_EVENT_BYTES, clip, fit
from agentops.core.state import (
    AgentState,
    AssistantItem,
    HumanRequestItem,
    Inflight,
    ToolResultItem,
)
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import TaskResult, ToolRequested
from agentops.tools.policy import approval_question
from agentops.tools.registry import (
    BUILTIN_TOOLS,
    CompleteTaskArgs,
    DelegateTaskArgs,
    RequestHumanInputArgs,
    ToolArgs,
    ToolArgsError,
    is_idempotent,
    validate_call,
)

if TYPE_CHECKING:
    from agentops.core.transition import Transition

PLUGIN_TIMEOUT_S = 60.0


def preview(value: Any) -> Any:
    """What an event shows of a value the thread keeps whole: long strings cut, the whole
    bounded (`core/items.py`)."""
    return fit(clip(value), MAX_EVENT_BYTES // 2)


def dispatch(run: Transition, assistant: AssistantItem) -> None:
    """Validate and send out the tool calls of one LLM answer."""
    pending: list[str] = []
    for call in assistant.tool_calls:
        run.emit(
            "tool.call",
            {
                "step": assistant.step,
                "call_id": call.id,
                "name": call.name,
                "arguments": preview(call.arguments),
            },
        )
        try:
            if call.arguments_error:
                raise ToolArgsError(f"arguments are not valid JSON: {call.arguments_error}")
            if run.spec.plugin_tool(call.name) is not None:
                invoke_or_hold(run, assistant.step, call, call.arguments, None)
                pending.append(call.id)
                continue
            args = validate_call(call.name, call.arguments, allowed_tools(run))
        except ToolArgsError as exc:
            tool_result(
                run,
                assistant.step,
                call,
                ok=False,
                error=ErrorInfo(code="invalid_arguments", message=str(exc)),
            )
            continue
        if isinstance(args, CompleteTaskArgs):
            result = TaskResult(summary=args.summary, artifacts=tuple(args.artifacts))
            run.update(result=result, inflight=None)
            run.set_status("completed", result=result.model_dump())
            return
        if isinstance(args, DelegateTaskArgs):
            if not delegate(run, assistant.step, call, args):
                continue
        elif isinstance(args, RequestHumanInputArgs):
            ask_human(run, assistant.step, call, args)
        else:
            invoke_or_hold(run, assistant.step, call, args.model_dump(mode="json"), args)
        pending.append(call.id)
    if pending:
        run.update(inflight=Inflight(kind="tools", step=assistant.step, pending=tuple(pending)))
    else:
        run.update(inflight=None)
        if run.state.status == "running":
            run.continue_()


def delegate(run: Transition, step: int, call: ToolCall, args: DelegateTaskArgs) -> bool:
    """Ask the task's orchestrator for a child task (`core/delegation.py`); False when
    refused here (the refusal is the call's result)."""
    st = run.state
    reason = refusal(st, run.spec.max_delegation_depth, run.spec.max_children)
    if reason is not None:
        tool_result(run, step, call, ok=False, error=refused_error(reason))
        return False
    header = run.header(f"delegate{step}.{call.id}")
    message, changes = delegation(st, header, step, call, args)
    run.effects.append(ReportToTask(message=message))
    run.update(**changes)
    return True


def ask_human(run: Transition, step: int, call: ToolCall, args: RequestHumanInputArgs) -> None:
    hold_for_human(
        run,
        HumanRequestItem(
            at=run.now,
            request_id=f"{run.state.agent_id}.h{step}.{call.id}",
            step=step,
            call_id=call.id,
            reason="tool",
            question=args.question,
            context=args.context,
            urgency=args.urgency,
            format=args.format,
            choices=tuple(args.choices) if args.choices else None,
        ),
    )


def allowed_tools(run: Transition) -> tuple[str, ...]:
    return run.spec.allowed_tools + tuple(t.name for t in run.spec.plugin_tools)


def invoke_or_hold(
    run: Transition,
    step: int,
    call: ToolCall,
    arguments: dict[str, Any],
    args: ToolArgs | None,
) -> None:
    """Send the call to the executor, unless the approval policy holds it for a human."""
    check = run.spec.needs_approval
    reason = check(call.name, arguments) if check is not None else None
    if reason is None:
        invoke_tool(run, step, call, arguments, args)
        return
    hold_for_human(
        run,
        HumanRequestItem(
            at=run.now,
            request_id=f"{run.state.agent_id}.ap{step}.{call.id}",
            step=step,
            call_id=call.id,
            reason="approval",
            question=approval_question(call.name, arguments, reason),
            format="yes_no",
            details={"tool": call.name, "arguments": arguments, "policy": reason},
        ),
    )


def hold_for_human(run: Transition, request: HumanRequestItem) -> None:
    """A tool call waits for a human; other calls of the same answer go on meanwhile."""
    run.record(request)
    run.emit("human.request", human_request_data(request))
    if run.state.status == "running":
        run.set_status("awaiting_human", reason=request.reason, request_id=request.request_id)
    elif run.state.status == "paused":
        run.update(paused_from="awaiting_human")


def invoke_approved(run: Transition, step: int, call: ToolCall) -> None:
    """A call a human approved: it was validated when it was held."""
    builtin = BUILTIN_TOOLS.get(call.name)
    if builtin is None:
        invoke_tool(run, step, call, call.arguments, None)
    else:
        args = builtin.args_model.model_validate(call.arguments)
        invoke_tool(run, step, call, args.model_dump(mode="json"), args)


def invoke_tool(
    run: Transition,
    step: int,
    call: ToolCall,
    arguments: dict[str, Any],
    args: ToolArgs | None,
) -> None:
    """Send a validated call to the executor: a builtin's `args` model and its canonical
    `arguments`, or a plugin's raw `arguments` (the executor checks them) and None."""
    if args is not None:
        timeout_s, idempotent = (
            BUILTIN_TOOLS[call.name].timeout_s,
            is_idempotent(call.name, args),
        )
    else:
        timeout_s, idempotent = PLUGIN_TIMEOUT_S, False
    message = ToolRequested(
        **run.header(f"tool{step}.{call.id}"),
        step=step,
        call_id=call.id,
        name=call.name,
        arguments=arguments,
        reply_to=run.reply_to(),
        timeout_s=timeout_s,
        idempotent=idempotent,
        workspace_id=run.state.workspace_id or None,
    )
    run.effects.append(InvokeTool(message=message))


def tool_result(
    run: Transition,
    step: int,
    call: ToolCall,
    *,
    ok: bool,
    result: Any = None,
    error: ErrorInfo | None = None,
    duration_ms: float = 0.0,
) -> None:
    run.record(
        ToolResultItem(
            at=run.now,
            step=step,
            call_id=call.id,
            name=call.name,
            ok=ok,
            result=result,
            error=error,
        )
    )
    run.emit(
        "tool.result",
        {
            "step": step,
            "call_id": call.id,
            "name": call.name,
            "ok": ok,
            "result": preview(result),
            "error": error.model_dump() if error else None,
            "duration_ms": duration_ms,
        },
    )


def human_request_data(item: HumanRequestItem) -> dict[str, Any]:
    data: dict[str, Any] = preview(item.model_dump(mode="json", exclude={"at"}))
    return data


def call_of(state: AgentState, step: int, call_id: str) -> ToolCall | None:
    for item in reversed(state.thread):  # the call asked for is almost always the last one
        if isinstance(item, AssistantItem) and item.step == step:
            for call in item.tool_calls:
                if call.id == call_id:
                    return call
    return None


def last_assistant(state: AgentState) -> AssistantItem | None:
    for item in reversed(state.thread):
        if isinstance(item, AssistantItem):
            return item
    return None
