"""Ollama native chat wire format (`POST /api/chat`, `stream: false`), pure.

Rules:
- Messages keep their roles; an assistant's tool calls go as
  `tool_calls[].function.{name, arguments}` with arguments as an object; tool results are
  `role: "tool"` messages (with `tool_name`, which Ollama uses to match them).
- Tools go in OpenAI's `{"type": "function", "function": ...}` shape, which Ollama accepts.
- Ollama's tool calls carry no ids: they get `call_<call_index>_<i>`.
- Token counts are `prompt_eval_count` / `eval_count`; temperature and the output limit go in
  `options` (`num_predict`).
"""

from __future__ import annotations

from typing import Any

from agentops.llm.errors import error_in_body
from agentops.llm.settings import ModelRoute
from agentops.llm.types import LLMRequest, LLMResult, Message, Usage
from agentops.llm.wire import as_int, field, function_calls, function_tools, tool_result_text

PROVIDER = "ollama"


def to_request(request: LLMRequest, route: ModelRoute) -> dict[str, Any]:
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    body: dict[str, Any] = {
        "model": route.model,
        "messages": [_message(m, names) for m in request.messages],
        "stream": False,
        "options": {"temperature": request.temperature, "num_predict": route.max_output_tokens},
    }
    if request.tools:
        body["tools"] = function_tools(request)
    return body


def _message(message: Message, names: dict[str, str]) -> dict[str, Any]:
    if message.role == "tool":
        out = {"role": "tool", "content": tool_result_text(message.content)}
        name = names.get(message.tool_call_id or "") or message.name
        if name:
            out["tool_name"] = name
        return out
    out_msg: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out_msg["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
        ]
    return out_msg


def from_response(body: Any, request: LLMRequest) -> LLMResult:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        raise error_in_body(PROVIDER, body)
    message = field(body, "message", provider=PROVIDER)
    if not isinstance(message, dict):
        message = {}
    calls = function_calls(message.get("tool_calls"), request)
    content = message.get("content")
    finish = str(body.get("done_reason") or "stop")
    if calls and finish == "stop":
        finish = "tool_calls"
    return LLMResult(
        text=content if isinstance(content, str) else "",
        tool_calls=calls,
        usage=Usage(
            input_tokens=as_int(body.get("prompt_eval_count")),
            output_tokens=as_int(body.get("eval_count")),
        ),
        model=str(body.get("model") or ""),
        provider=PROVIDER,
        finish_reason=finish,
    )
