"""Render the LLM request from the agent's thread (12-factor: own your context window).

Pure. Rules:
- The system prompt comes from the agent type's prompt file; the task and its context (minus
  the mock LLM's steering block) open the conversation.
- Every assistant tool call is followed by exactly one tool message with its result, as the
  providers require; a human's answer to `request_human_input` is that call's result.
- An escalation's answer is a user message, since no tool call asked for it.
- Transport errors of the LLM itself are not shown to the model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.core.context import fit
from agentops.core.memo import GrowingMap, IdentityMemo
from agentops.core.state import (
    AgentState,
    AssistantItem,
    HumanRequestItem,
    HumanResponseItem,
    TaskItem,
    ThreadItem,
    ToolResultItem,
)
from agentops.llm.types import LLMRequest, Message, ToolSchema
from agentops.tools.registry import schemas_for

MOCK_KEY = "mock"


@lru_cache(maxsize=64)
def _tool_schemas(allowed: tuple[str, ...]) -> tuple[ToolSchema, ...]:
    return schemas_for(allowed)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def task_message(item: TaskItem) -> Message:
    context = {k: v for k, v in item.context.items() if k != MOCK_KEY}
    text = f"Task: {item.description}"
    if context:
        text += f"\n\nContext (JSON):\n{_dumps(context)}"
    return Message(role="user", content=text)


def tool_result_content(item: ToolResultItem) -> str:
    if item.ok:
        return _dumps(item.result)
    error = item.error.model_dump(include={"code", "message"}) if item.error else {}
    return _dumps({"error": error})


# Each step renders the thread; items are frozen and the thread only grows, so each item is
# rendered once (and the same Message objects let `fit` reuse their token estimates).
def _render_item(item: ThreadItem) -> Message | HumanResponseItem | None:
    """An item's message; a human's answer is returned as is (it renders only as the answer
    to an escalation, which depends on its request), other items render to nothing."""
    match item:
        case TaskItem():
            return task_message(item)
        case AssistantItem():
            return Message(role="assistant", content=item.text, tool_calls=item.tool_calls)
        case ToolResultItem():
            return Message(
                role="tool",
                content=tool_result_content(item),
                tool_call_id=item.call_id,
                name=item.name,
            )
        case HumanResponseItem():
            return item
        case _:
            return None


_rendered = GrowingMap(_render_item)
_system_message: IdentityMemo[str, Message] = IdentityMemo(
    lambda prompt: Message(role="system", content=prompt)
)


def render_messages(spec: AgentSpec, state: AgentState) -> tuple[Message, ...]:
    messages: list[Message] = [_system_message(spec.system_prompt)]
    escalations: set[str] | None = None
    for rendered in _rendered(state.agent_id, state.thread):
        if rendered is None:
            continue
        if isinstance(rendered, Message):
            messages.append(rendered)
            continue
        if escalations is None:
            escalations = {
                i.request_id
                for i in state.thread
                if isinstance(i, HumanRequestItem) and i.reason == "escalation"
            }
        if rendered.request_id in escalations:
            guidance = f"Guidance from a human: {_dumps(rendered.response)}"
            messages.append(Message(role="user", content=guidance))
    return tuple(messages)


def render_request(spec: AgentSpec, state: AgentState, step: int) -> LLMRequest:
    """The request for `step`; `metadata` carries the context facts (estimated input tokens,
    messages compacted) the agent reports in its `agent.step` event and budget check."""
    task = next((i for i in state.thread if isinstance(i, TaskItem)), None)
    mock = task.context.get(MOCK_KEY) if task else None
    metadata: dict[str, Any] = {
        "agent_type": state.agent_type,
        "agent_id": state.agent_id,
        "task_id": state.task_id,
        "step": step,
        "call_index": state.llm_calls,
    }
    if mock is not None:
        metadata[MOCK_KEY] = mock
    tools = _tool_schemas(spec.allowed_tools)
    if spec.plugin_tools:
        tools += spec.plugin_tools
    fitted = fit(
        render_messages(spec, state),
        tools,
        context_window=spec.context_window,
        max_output_tokens=spec.max_output_tokens,
        owner=state.agent_id,
    )
    metadata["estimated_input_tokens"] = fitted.estimated_tokens
    metadata["compacted_messages"] = fitted.compacted
    return LLMRequest(
        model=spec.model,
        messages=fitted.messages,
        tools=tools,
        temperature=spec.temperature,
        max_output_tokens=spec.max_output_tokens,
        metadata=metadata,
    )
