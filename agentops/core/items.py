"""Sizes of what the agent stores and sends: JSON values and thread items fitted into a budget.

Pure. A thread item is stored as one message, so it must fit one (`MAX_ITEM_BYTES`, well under
nats `max_payload`); an event carries a preview, not the whole value (`MAX_EVENT_BYTES`).

Rules:
- `clip` shortens each long string to a head and a marker saying how many characters were
  left out; `fit` clips ever shorter until the value's JSON is within a byte budget, and past
  that replaces the value by a marker saying how large it was. Both keep the value's shape
  (keys, list lengths) whenever they can, so a model still sees what kind of result it got.
- `fit_item` returns an item that fits `MAX_ITEM_BYTES`, unchanged when it already does. What
  is cut is said in the item itself. A tool call whose arguments are too large is refused
  (its arguments emptied and `arguments_error` set, which the model reads as an invalid
  call), never cut: a truncated `write_file` would write a wrong file.
- `item_bytes` is an item's stored JSON (`model_dump_json`), memoised by identity: the reducer
  measures each new item and the store writes the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from agentops.core.memo import IdentityMemo
from agentops.core.state import (
    AssistantItem,
    HumanRequestItem,
    HumanResponseItem,
    LLMErrorItem,
    TaskItem,
    ThreadItem,
    ToolResultItem,
)
from agentops.llm.types import ToolCall
from agentops.protocol.errors import ErrorInfo

MAX_ITEM_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
STRING_PREVIEW = 4000  # characters of a string an event shows


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


def clip(value: Any, limit: int = STRING_PREVIEW) -> Any:
    """`value` with every string longer than `limit` characters cut, with a marker."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {k: clip(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clip(v, limit) for v in value]
    return value


def fit(value: Any, max_bytes: int, size: int | None = None) -> Any:
    """`value` if its JSON is within `max_bytes`, else clipped (or replaced) until it is."""
    size = json_size(value) if size is None else size
    if size <= max_bytes:
        return value
    limit = max(64, max_bytes // 2)
    while limit >= 16:
        clipped = clip(value, limit)
        if json_size(clipped) <= max_bytes:
            return clipped
        limit //= 4
    return f"[cut: a value of {size} bytes, over the {max_bytes}-byte limit]"


def _encode(item: ThreadItem) -> bytes:
    return item.model_dump_json().encode()


item_bytes: IdentityMemo[ThreadItem, bytes] = IdentityMemo(
    _encode, limit=4096, max_weight=64 * 1024 * 1024
)


def fit_item(item: ThreadItem, max_bytes: int = MAX_ITEM_BYTES) -> ThreadItem:
    size = len(item_bytes(item))
    if size <= max_bytes:
        return item
    budget = max_bytes - 4096  # room for the item's other fields and the markers
    match item:
        case ToolResultItem():
            item = item.model_copy(update={"result": fit(item.result, budget)})
        case AssistantItem():
            item = _fit_assistant(item, budget)
        case TaskItem():
            item = item.model_copy(
                update={
                    "description": clip(item.description, budget // 8),
                    "context": fit(item.context, budget // 2),
                }
            )
        case HumanRequestItem():
            item = item.model_copy(
                update={
                    "question": clip(item.question, budget // 8),
                    "context": clip(item.context, budget // 8),
                    "details": fit(item.details, budget // 2),
                }
            )
        case HumanResponseItem():
            item = item.model_copy(update={"response": fit(item.response, budget)})
        case LLMErrorItem():
            error = item.error
            item = item.model_copy(update={"error": _fit_error(error, budget)})
        case _:
            pass
    if len(item_bytes(item)) > max_bytes:  # fields too many to cut: say so, keep the kind
        return _marker_only(item, size, max_bytes)
    return item


def _fit_error(error: ErrorInfo, budget: int) -> ErrorInfo:
    return error.model_copy(
        update={
            "message": clip(error.message, budget // 4),
            "details": fit(error.details, budget // 2),
        }
    )


def _fit_assistant(item: AssistantItem, budget: int) -> AssistantItem:
    """Refuse the largest tool calls until the rest fits, then cut the text."""
    calls = list(item.tool_calls)
    sizes = [json_size(c.arguments) for c in calls]
    total = sum(sizes) + len(item.text.encode())
    for i in sorted(range(len(calls)), key=lambda i: sizes[i], reverse=True):
        if total <= budget:
            break
        calls[i] = _refused(calls[i], sizes[i], budget)
        total -= sizes[i]
    text = item.text
    if total > budget:
        text = clip(text, max(64, budget // 4))
    return item.model_copy(update={"tool_calls": tuple(calls), "text": text})


def _refused(call: ToolCall, size: int, budget: int) -> ToolCall:
    return call.model_copy(
        update={
            "arguments": {},
            "arguments_error": f"the arguments are {size} bytes, over the {budget}-byte limit "
            "of one call; nothing was run. Split the work into smaller calls (for a large "
            "file: write_file in parts with mode='append', or edit_file)",
        }
    )


def _marker_only(item: ThreadItem, size: int, max_bytes: int) -> ThreadItem:
    note = f"[cut: this {item.kind} item was {size} bytes, over the {max_bytes}-byte limit]"
    match item:
        case ToolResultItem():
            return item.model_copy(update={"result": note})
        case AssistantItem():
            calls = tuple(_refused(c, json_size(c.arguments), max_bytes) for c in item.tool_calls)
            return item.model_copy(update={"text": note, "tool_calls": calls})
        case TaskItem():
            return item.model_copy(update={"description": note, "context": {}})
        case HumanRequestItem():
            return item.model_copy(update={"question": note, "context": None, "details": None})
        case HumanResponseItem():
            return item.model_copy(update={"response": note})
        case _:
            return item
