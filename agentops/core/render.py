"""Render the LLM request from the agent's thread (12-factor: own your context window).

Pure. Rules:
- The system prompt comes from the agent type's prompt file; the task and its context (minus
  the mock LLM's steering block) open the conversation, worded by the type's
  `task_prompt_template` (`{description}`, `{context}` as JSON) or, without one, as
  "Task: <description>" plus a "Context (JSON)" block when there is context.
- Every assistant tool call is followed by exactly one tool message with its result, as the
  providers require; a human's answer to `request_human_input` is that call's result.
- An escalation's answer is a user message, since no tool call asked for it.
- Transport errors of the LLM itself are not shown to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from operator import is_
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.core.context import fit
from agentops.core.memo import IdentityMemo
from agentops.core.state import (
    AgentState,
    AssistantItem,
    HumanRequestItem,
    HumanResponseItem,
    TaskItem,
    ThreadItem,
    ToolResultItem,
    UserMessageItem,
)
from agentops.llm.types import LLMRequest, Message, ToolSchema
from agentops.tools.registry import schemas_for

MOCK_KEY = "mock"


@lru_cache(maxsize=64)
def _tool_schemas(allowed: tuple[str, ...]) -> tuple[ToolSchema, ...]:
    return schemas_for(allowed)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def task_message(item: TaskItem, template: str | None = None) -> Message:
    """The task's first user message: `template` filled in (checked when the type was loaded,
    `agents/loader.py`), or the built-in wording."""
    context = {k: v for k, v in item.context.items() if k != MOCK_KEY}
    if template is not None:
        text = template.format(description=item.description, context=_dumps(context))
        return Message(role="user", content=text)
    text = f"Task: {item.description}"
    if context:
        text += f"\n\nContext (JSON):\n{_dumps(context)}"
    return Message(role="user", content=text)


def user_message(item: UserMessageItem) -> Message:
    context = {k: v for k, v in item.context.items() if k != MOCK_KEY}
    text = item.message if not item.starts_run else f"Follow-up: {item.message}"
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
def _render_item(
    item: ThreadItem, escalations: frozenset[str], template: str | None
) -> Message | None:
    """An item's message. A human's answer renders only as guidance after an escalation (a
    tool's answer is its tool result); other items render to nothing."""
    match item:
        case TaskItem():
            return task_message(item, template)
        case AssistantItem():
            return Message(role="assistant", content=item.text, tool_calls=item.tool_calls)
        case ToolResultItem():
            return Message(
                role="tool",
                content=tool_result_content(item),
                tool_call_id=item.call_id,
                name=item.name,
            )
        case UserMessageItem():
            return user_message(item)
        case HumanResponseItem() if item.request_id in escalations:
            return Message(role="user", content=f"Guidance from a human: {_dumps(item.response)}")
        case _:
            return None


@dataclass(frozen=True, slots=True)
class _Rendered:
    items: tuple[ThreadItem, ...]  # the thread these messages were rendered from
    messages: tuple[Message, ...]
    escalations: frozenset[str]  # request ids of escalations seen so far
    template: str | None  # the task prompt template they were rendered with


class _Renderer:
    """The messages of a thread, kept per agent: a thread that extends the one rendered last
    (the very same items, by identity) costs its new items only. At most `owners` agents are
    kept, least recently used first out; an agent evicted is rendered whole again."""

    def __init__(self, owners: int = 4096) -> None:
        self.owners = owners
        self._last: dict[str, _Rendered] = {}

    def __call__(
        self, owner: str, thread: tuple[ThreadItem, ...], template: str | None = None
    ) -> tuple[Message, ...]:
        last = self._last.pop(owner, None)
        if (
            last is None
            or last.template != template
            or len(thread) < len(last.items)
            or not all(map(is_, thread, last.items))
        ):
            last = _Rendered((), (), frozenset(), template)
            if len(self._last) >= self.owners:
                del self._last[next(iter(self._last))]
        messages = list(last.messages)
        escalations = last.escalations
        for item in thread[len(last.items) :]:
            if isinstance(item, HumanRequestItem) and item.reason == "escalation":
                escalations = escalations | {item.request_id}
            message = _render_item(item, escalations, template)
            if message is not None:
                messages.append(message)
        done = _Rendered(thread, tuple(messages), escalations, template)
        self._last[owner] = done
        return done.messages


_rendered = _Renderer()
_system_message: IdentityMemo[str, Message] = IdentityMemo(
    lambda prompt: Message(role="system", content=prompt)
)


def render_messages(spec: AgentSpec, state: AgentState) -> tuple[Message, ...]:
    thread = _rendered(state.agent_id, state.thread, spec.task_prompt_template)
    return (_system_message(spec.system_prompt), *thread)


def render_request(spec: AgentSpec, state: AgentState, step: int) -> LLMRequest:
    """The request for `step`; `metadata` carries the context facts (estimated input tokens,
    messages compacted) the agent reports in its `agent.step` event and budget check."""
    # The run's steering (the mock LLM's script) is on the item that started the run.
    opener = state.thread[state.run_item] if len(state.thread) > state.run_item else None
    mock = opener.context.get(MOCK_KEY) if isinstance(opener, TaskItem | UserMessageItem) else None
    metadata: dict[str, Any] = {
        "agent_type": state.agent_type,
        "agent_id": state.agent_id,
        "task_id": state.task_id,
        "step": step,
        "call_index": state.llm_calls,
        "run_call_index": state.llm_calls - state.run_start_calls,
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
