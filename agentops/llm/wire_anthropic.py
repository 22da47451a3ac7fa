"""Anthropic Messages API wire format, pure: canonical request -> JSON body -> LLMResult.

Rules:
- System messages become the top-level `system` string; the rest alternate user/assistant,
  so consecutive messages of the same role are merged into one message of content blocks.
- An assistant's tool calls are `tool_use` blocks; canonical `tool` messages become
  `tool_result` blocks (with `tool_use_id`) inside a user message, as the API requires.
- Tools go as `{name, description, input_schema}`; a reply's `tool_use.input` is an object.
- Empty text blocks are dropped (the API rejects them); the conversation starts with a user
  message (the API requires it).
- `stop_reason: "refusal"` becomes a result with `finish_reason="refusal"`.
- Streaming (`stream: true`) is the same mapping: `StreamAccumulator` rebuilds the message from
  the events and reads it with `from_response`.
"""

from __future__ import annotations

from typing import Any

from agentops.llm.errors import error_in_body
from agentops.llm.settings import ModelRoute
from agentops.llm.types import LLMRequest, LLMResult, Message, ToolCall, Usage
from agentops.llm.wire import as_int, fallback_call_id, field, make_tool_call, tool_result_text

PROVIDER = "anthropic"
API_VERSION = "2023-06-01"
_FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def headers(api_key: str | None) -> dict[str, str]:
    out = {"anthropic-version": API_VERSION}
    if api_key:
        out["x-api-key"] = api_key
    return out


def to_request(request: LLMRequest, route: ModelRoute, *, stream: bool = False) -> dict[str, Any]:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    if not messages or messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": "Begin."}]})
    body: dict[str, Any] = {
        "model": route.model,
        "max_tokens": route.max_output_tokens,
        "messages": messages,
        "temperature": request.temperature,
    }
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    return body


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": tool_result_text(message.content),
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        )
    return blocks


def from_response(body: Any, request: LLMRequest) -> LLMResult:
    if isinstance(body, dict) and body.get("type") == "error":
        raise error_in_body(PROVIDER, body)
    content = field(body, "content", provider=PROVIDER)
    if not isinstance(content, list):
        content = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            call_id = block.get("id") or fallback_call_id(request, len(calls))
            calls.append(make_tool_call(call_id, block.get("name"), block.get("input")))
    stop = str(body.get("stop_reason") or "")
    finish = _FINISH.get(stop, stop or "stop")
    text = "".join(texts)
    if stop == "refusal":
        text = text or "The model declined to answer."
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return LLMResult(
        text=text,
        tool_calls=tuple(calls),
        usage=Usage(
            # Cached prompt tokens are reported apart; they are still input.
            input_tokens=sum(
                as_int(usage.get(k))
                for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            ),
            output_tokens=as_int(usage.get("output_tokens")),
        ),
        model=str(body.get("model") or ""),
        provider=PROVIDER,
        finish_reason=finish,
    )


class StreamAccumulator:
    """Reads Messages API stream events (`message_start`, `content_block_start/delta`,
    `message_delta`, `error`); `feed` returns the text delta, `result` the whole reply,
    read by `from_response` like an unstreamed one."""

    def __init__(self, request: LLMRequest) -> None:
        self.request = request
        self.message: dict[str, Any] = {"content": [], "usage": {}}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, list[str]] = {}

    def feed(self, event: Any) -> str:
        if not isinstance(event, dict):
            return ""
        kind = event.get("type")
        if kind == "error":
            raise error_in_body(PROVIDER, event, "stream failed")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            start = event["message"]
            self.message.update(model=start.get("model"), usage=dict(start.get("usage") or {}))
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self.blocks[as_int(event.get("index"))] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            return self._delta(as_int(event.get("index")), event["delta"])
        elif kind == "message_delta":
            delta: dict[str, Any] = event["delta"] if isinstance(event.get("delta"), dict) else {}
            self.message["stop_reason"] = delta.get("stop_reason")
            if isinstance(event.get("usage"), dict):
                self.message["usage"].update(event["usage"])
        return ""

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            block["text"] = block.get("text", "") + delta["text"]
            return str(delta["text"])
        if delta.get("type") == "input_json_delta":
            self.partial_json.setdefault(index, []).append(str(delta.get("partial_json") or ""))
        return ""

    def result(self) -> LLMResult:
        for index, parts in self.partial_json.items():
            raw = "".join(parts)
            # The tool input arrives as JSON text in pieces; parse it as a whole, tolerantly.
            self.blocks[index]["input"] = raw if raw.strip() else {}
        content = [self.blocks[i] for i in sorted(self.blocks)]
        return from_response({**self.message, "content": content}, self.request)
