"""Helpers shared by the pure wire mappers (`wire_*.py`): no I/O, no clock, no randomness.

Rules:
- Tool arguments from a model are untrusted: `parse_arguments` turns a JSON string (or an
  object) into a dict, or returns an `arguments_error` that goes back to the model. It never
  raises.
- A tool call without an id gets `call_<call_index>_<i>` (the mock's scheme), unique within an
  agent's thread and the same on a replay.
- `field(data, *path)` walks parsed JSON and raises `invalid_response` naming the path, so a
  reply of the wrong shape is a clear error, never a KeyError/TypeError crash.
"""

from __future__ import annotations

import json
from typing import Any

from agentops.llm.errors import invalid_response
from agentops.llm.types import LLMRequest, ToolCall

MAX_ARGUMENTS_ERROR_SAMPLE = 200


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """(arguments, None) for a JSON object; ({}, reason) for anything else."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, None
    if isinstance(raw, dict):
        return raw, None
    if not isinstance(raw, str):
        return {}, f"tool arguments must be a JSON object, got {type(raw).__name__}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        sample = raw[:MAX_ARGUMENTS_ERROR_SAMPLE]
        return {}, f"tool arguments are not valid JSON ({exc.msg} at {exc.pos}): {sample}"
    if not isinstance(value, dict):
        return {}, f"tool arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def make_tool_call(call_id: Any, name: Any, raw_arguments: Any) -> ToolCall:
    arguments, error = parse_arguments(raw_arguments)
    if not isinstance(name, str) or not name:
        name, error = "(missing)", "the tool call has no function name"
    return ToolCall(id=str(call_id), name=name, arguments=arguments, arguments_error=error)


def fallback_call_id(request: LLMRequest, index: int) -> str:
    return f"call_{request.metadata.get('call_index', 0)}_{index}"


def field(data: Any, *path: str | int, provider: str) -> Any:
    """`data[p0][p1]...`, or `invalid_response` naming the missing part."""
    current = data
    for i, key in enumerate(path):
        try:
            current = current[key]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{p!r}]" for p in path[: i + 1])
            raise invalid_response(provider, f"no {where} in the reply") from None
    return current


def as_int(value: Any) -> int:
    """A token count from a reply; anything that is not a non-negative integer counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


def tool_result_text(content: str) -> str:
    # Some APIs reject empty tool results; an empty output is still an answer.
    return content if content else "(empty)"


def function_tools(request: LLMRequest) -> list[dict[str, Any]]:
    """Tool schemas in the `{"type": "function", "function": ...}` shape (OpenAI, Ollama)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in request.tools
    ]


def function_calls(raw: Any, request: LLMRequest) -> tuple[ToolCall, ...]:
    """Tool calls in the `[{"id"?, "function": {"name", "arguments"}}]` shape (OpenAI, Ollama)."""
    if not isinstance(raw, list):
        return ()
    calls = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            continue
        fn: dict[str, Any] = c["function"] if isinstance(c.get("function"), dict) else {}
        call_id = c.get("id") or fallback_call_id(request, i)
        calls.append(make_tool_call(call_id, fn.get("name"), fn.get("arguments")))
    return tuple(calls)
