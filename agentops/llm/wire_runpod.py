"""RunPod serverless wire format, pure: job input, job envelope, and tool calls read from text.

Rules:
- A job is `POST <base>/<endpoint_id>/runsync` (or `/run`) with `{"input": ...}`; the envelope
  says `status` (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT) and carries
  `output` or `error`. `job_state` reads it; unfinished jobs are polled at `/status/<id>`.
- `runpod_input = "openai"`: the input is worker-vllm's OpenAI route
  (`{"openai_route": "/v1/chat/completions", "openai_input": <chat body>}`), native tools,
  and the output is read as a Chat Completions reply.
- `runpod_input = "messages"` (default; any worker that takes chat messages): tools are
  described in the system prompt (`TOOL_PROMPT`), the model answers with plain text or the JSON
  `{"tool_calls": [{"name": ..., "arguments": {...}}]}`, and `parse_tool_reply` reads it
  tolerantly: code fences, text around the JSON, a single call object, `args`/`parameters`
  for `arguments`, arguments as a JSON string. Broken JSON that is clearly a tool call becomes
  a call with `arguments_error` (the model sees why); anything else is the text answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from agentops.llm import wire_openai
from agentops.llm.errors import LLMError
from agentops.llm.settings import ModelRoute
from agentops.llm.types import LLMRequest, LLMResult, Message, ToolCall, Usage
from agentops.llm.wire import as_int, fallback_call_id, make_tool_call, tool_result_text

PROVIDER = "runpod"
PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})

TOOL_PROMPT = """\
# Tools
You can call these tools. To call one or more of them, reply with only this JSON, no other text:
{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments as a JSON object>}}]}
To answer without calling a tool, reply with plain text.

"""


def to_request(request: LLMRequest, route: ModelRoute) -> dict[str, Any]:
    if route.runpod_input == "openai":
        return {
            "input": {
                "openai_route": "/v1/chat/completions",
                "openai_input": wire_openai.to_request(request, route),
            }
        }
    return {
        "input": {
            "messages": _messages(request),
            "sampling_params": {
                "max_tokens": route.max_output_tokens,
                "temperature": request.temperature,
            },
        }
    }


def tool_prompt(request: LLMRequest) -> str:
    lines = [TOOL_PROMPT]
    for tool in request.tools:
        schema = json.dumps(tool.parameters, separators=(",", ":"))
        lines.append(f"- {tool.name}: {tool.description}\n  arguments schema: {schema}\n")
    return "".join(lines)


def _messages(request: LLMRequest) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    system = [m.content for m in request.messages if m.role == "system"]
    if request.tools:
        system.append(tool_prompt(request))
    if system:
        out.append({"role": "system", "content": "\n\n".join(system)})
    for message in request.messages:
        if message.role != "system":
            out.append(_message(message))
    return out


def _message(message: Message) -> dict[str, str]:
    if message.role == "tool":
        text = f"Result of tool call {message.tool_call_id}:\n{tool_result_text(message.content)}"
        return {"role": "user", "content": text}
    if message.role == "assistant" and message.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
        text = json.dumps({"tool_calls": calls})
        return {"role": "assistant", "content": f"{message.content}\n{text}".strip()}
    return {"role": message.role, "content": message.content}


# ---- the job envelope ----
JobState = Literal["done", "pending", "failed"]


def job_state(body: Any) -> tuple[JobState, str | None]:
    """("done"|"pending"|"failed", job id); `LLMError` for a failed, cancelled or odd job."""
    if not isinstance(body, dict):
        raise LLMError("runpod sent a job reply that is not an object", code="invalid_response")
    status = str(body.get("status") or "")
    job_id = body.get("id") if isinstance(body.get("id"), str) else None
    if status == "COMPLETED":
        return "done", job_id
    if status in PENDING:
        return "pending", job_id
    if status == "TIMED_OUT":
        raise LLMError("runpod job timed out on the worker", code="timeout", provider=PROVIDER)
    if status in ("FAILED", "CANCELLED"):
        detail = str(body.get("error") or "no error message")[:500]
        raise LLMError(
            f"runpod job {status.lower()}: {detail}", code="server_error", provider=PROVIDER
        )
    raise LLMError(
        f"runpod sent a job with unknown status {status!r}",
        code="invalid_response",
        provider=PROVIDER,
    )


def from_output(output: Any, request: LLMRequest, route: ModelRoute) -> LLMResult:
    if route.runpod_input == "openai":
        body = output[0] if isinstance(output, list) and output else output
        return wire_openai.from_response(body, request, provider=PROVIDER)
    text, usage = _text_and_usage(output)
    calls = parse_tool_reply(text, request) if request.tools else ()
    return LLMResult(
        text="" if calls else text,
        tool_calls=calls,
        usage=usage,
        model=route.model,
        provider=PROVIDER,
        finish_reason="tool_calls" if calls else "stop",
    )


def _text_and_usage(output: Any) -> tuple[str, Usage]:
    """worker-vllm: `[{"choices": [{"tokens": [...]}], "usage": {"input", "output"}}]`;
    other workers: a string, `{"text"}`, `{"output"}` or an OpenAI-like `choices` list."""
    item = output[0] if isinstance(output, list) and output else output
    usage = Usage()
    if isinstance(item, dict):
        raw: dict[str, Any] = item["usage"] if isinstance(item.get("usage"), dict) else {}
        usage = Usage(
            input_tokens=as_int(raw.get("input", raw.get("prompt_tokens"))),
            output_tokens=as_int(raw.get("output", raw.get("completion_tokens"))),
        )
    return _text(item), usage


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, list):
        return "".join(_text(x) for x in item)
    if not isinstance(item, dict):
        return ""
    if isinstance(item.get("choices"), list) and item["choices"]:
        choice = item["choices"][0]
        if isinstance(choice, dict):
            for key in ("tokens", "text", "message"):
                if key in choice:
                    value = choice[key]
                    return _text(value.get("content") if isinstance(value, dict) else value)
    for key in ("text", "output", "content", "response"):
        if key in item:
            return _text(item[key])
    return ""


# ---- the tolerant tool-call parser ----
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')


def parse_tool_reply(text: str, request: LLMRequest) -> tuple[ToolCall, ...]:
    """The tool calls in a model's text reply, or () when it is a plain answer."""
    for candidate in _json_candidates(text):
        calls = _calls_from(candidate)
        if calls:
            return tuple(
                make_tool_call(fallback_call_id(request, i), name, args)
                for i, (name, args) in enumerate(calls)
            )
    if '"tool_calls"' in text or ('"name"' in text and '"arguments"' in text):
        match = _NAME.search(text)
        call = make_tool_call(fallback_call_id(request, 0), match.group(1) if match else None, {})
        error = "the tool call is not valid JSON; reply with only the JSON object"
        return (call.model_copy(update={"arguments_error": error}),)
    return ()


def _json_candidates(text: str) -> list[Any]:
    """Parsed JSON values found in `text`: whole, in code fences, then each balanced {...}."""
    sources = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    found: list[Any] = []
    for source in sources:
        try:
            found.append(json.loads(source))
            continue
        except ValueError:
            pass
        decoder = json.JSONDecoder()
        for start in (i for i, ch in enumerate(source) if ch in "{["):
            try:
                value, _ = decoder.raw_decode(source, start)
            except ValueError:
                continue
            found.append(value)
            break
    return found


def _calls_from(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, list):
        return [c for item in value for c in _calls_from(item)]
    if not isinstance(value, dict):
        return []
    for key in ("tool_calls", "tool_call", "calls"):
        if key in value:
            return _calls_from(value[key])
    if "function" in value and isinstance(value["function"], dict):
        return _calls_from(value["function"])
    name = value.get("name", value.get("tool"))
    if not isinstance(name, str):
        return []
    args: Any = next(
        (value[k] for k in ("arguments", "args", "parameters", "input") if k in value), {}
    )
    return [(name, args)]
