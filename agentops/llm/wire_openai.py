"""OpenAI Chat Completions wire format, pure: canonical request -> JSON body -> LLMResult.

Rules:
- Serves every OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenRouter, RunPod's
  OpenAI route): only fields all of them accept are sent, and replies are read tolerantly
  (`content` as a string or a list of text parts, tool calls without ids, missing usage).
- Tools go as `{"type": "function", "function": {name, description, parameters}}`; a reply's
  `tool_calls[].function.arguments` is a JSON string, parsed by `wire.parse_arguments`.
- `message.refusal` or `finish_reason: "content_filter"` becomes a result with
  `finish_reason="refusal"` and the refusal text, not an error.
- Streaming is the same mapping fed chunk by chunk (`StreamAccumulator`), so a streamed and an
  unstreamed reply read back to the same result.
"""

from __future__ import annotations

import json
from typing import Any

from agentops.llm.errors import error_in_body
from agentops.llm.settings import ModelRoute
from agentops.llm.types import LLMRequest, LLMResult, Message, Usage
from agentops.llm.wire import as_int, field, function_calls, function_tools, tool_result_text

PROVIDER = "openai"
# Reasoning models refuse `max_tokens`; every other server knows only `max_tokens`.
_COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")


def to_request(request: LLMRequest, route: ModelRoute, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": route.model,
        "messages": [_message(m) for m in request.messages],
        "temperature": request.temperature,
    }
    name = route.model.rsplit("/", 1)[-1]
    limit_key = (
        "max_completion_tokens" if name.startswith(_COMPLETION_TOKENS_MODELS) else "max_tokens"
    )
    body[limit_key] = route.max_output_tokens
    if request.tools:
        body["tools"] = function_tools(request)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _message(message: Message) -> dict[str, Any]:
    match message.role:
        case "assistant":
            out: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                out["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in message.tool_calls
                ]
            return out
        case "tool":
            return {
                "role": "tool",
                "tool_call_id": message.tool_call_id or "",
                "content": tool_result_text(message.content),
            }
        case _:
            return {"role": message.role, "content": message.content}


def from_response(body: Any, request: LLMRequest, provider: str = PROVIDER) -> LLMResult:
    """The result of a non-streamed reply; `LLMError` if it is an error or the wrong shape."""
    if isinstance(body, dict) and "error" in body and "choices" not in body:
        raise error_in_body(provider, body)
    choice = field(body, "choices", 0, provider=provider)
    message = field(choice, "message", provider=provider)
    return _result(message, choice.get("finish_reason"), body, request, provider)


def _result(
    message: Any, finish_reason: Any, body: Any, request: LLMRequest, provider: str
) -> LLMResult:
    if not isinstance(message, dict):
        message = {}
    calls = function_calls(message.get("tool_calls"), request)
    text = _text(message.get("content"))
    finish = str(finish_reason or ("tool_calls" if calls else "stop"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        text, finish = refusal, "refusal"
    elif finish == "content_filter":
        text, finish = text or "The provider's content filter stopped the reply.", "refusal"
    usage = body.get("usage") if isinstance(body, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return LLMResult(
        text=text,
        tool_calls=calls,
        usage=Usage(
            input_tokens=as_int(usage.get("prompt_tokens")),
            output_tokens=as_int(usage.get("completion_tokens")),
        ),
        model=str(body.get("model") or "") if isinstance(body, dict) else "",
        provider=provider,
        finish_reason=finish,
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


class StreamAccumulator:
    """Reads `chat.completion.chunk`s; `feed` returns the text delta, `result` the whole reply."""

    def __init__(self, request: LLMRequest, provider: str = PROVIDER) -> None:
        self.request = request
        self.provider = provider
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.model = ""

    def feed(self, chunk: Any) -> str:
        if not isinstance(chunk, dict):
            return ""
        if "error" in chunk:
            raise error_in_body(self.provider, chunk, "stream failed")
        self.model = str(chunk.get("model") or self.model)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        delta_text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                delta_text += delta["content"]
            if isinstance(delta.get("refusal"), str):
                self.refusal.append(delta["refusal"])
            for part in delta.get("tool_calls") or ():
                self._feed_call(part)
        self.text.append(delta_text)
        return delta_text

    def _feed_call(self, part: Any) -> None:
        if not isinstance(part, dict):
            return
        index = as_int(part.get("index", len(self.calls)))
        call = self.calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        call["id"] = part.get("id") or call["id"]
        fn = part.get("function") or {}
        call["name"] += fn.get("name") or ""
        call["arguments"] += fn.get("arguments") or ""

    def result(self) -> LLMResult:
        message = {
            "content": "".join(self.text),
            "refusal": "".join(self.refusal) or None,
            "tool_calls": [
                {"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(self.calls.items())
            ],
        }
        body = {"model": self.model, "usage": self.usage}
        return _result(message, self.finish_reason, body, self.request, self.provider)
