"""Reply bodies in each provider's documented wire shape, for the fake servers.

OpenAI Chat Completions (`chat.completion`, `chat.completion.chunk`, `{"error": {...}}`),
Anthropic Messages (`message` with text/tool_use blocks, `{"type": "error", ...}`), Ollama
`/api/chat` (`stream: false`), and RunPod serverless job envelopes (worker-vllm output).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# A tool call as (id, name, arguments); for OpenAI the arguments may be a raw (broken) string.
Call = tuple[str, str, Any]


# ---- OpenAI ----
def openai_reply(
    text: str | None = None,
    calls: Sequence[Call] = (),
    *,
    usage: tuple[int, int] | None = (12, 5),
    refusal: str | None = None,
    finish_reason: str | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
    if calls:
        message["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for cid, name, args in calls
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return body


def openai_chunks(
    text_parts: Sequence[str] = (),
    calls: Sequence[Call] = (),
    *,
    usage: tuple[int, int] = (12, 5),
    model: str = "gpt-4o-mini",
) -> list[dict[str, Any]]:
    """`chat.completion.chunk`s: role, text deltas, tool-call deltas in two pieces, usage."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": part}) for part in text_parts]
    for i, (cid, name, args) in enumerate(calls):
        raw = args if isinstance(args, str) else json.dumps(args)
        half = len(raw) // 2
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": cid,
                            "type": "function",
                            "function": {"name": name, "arguments": raw[:half]},
                        }
                    ]
                }
            )
        )
        out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": raw[half:]}}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    out.append(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
        }
    )
    return out


def openai_error(
    message: str, type_: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# ---- Anthropic ----
def anthropic_reply(
    text: str | None = None,
    calls: Sequence[Call] = (),
    *,
    stop_reason: str | None = None,
    usage: tuple[int, int] = (20, 7),
    model: str = "claude-sonnet-4-5-20250929",
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    content += [
        {"type": "tool_use", "id": cid, "name": name, "input": args} for cid, name, args in calls
    ]
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if calls else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def anthropic_events(
    text_parts: Sequence[str] = (),
    calls: Sequence[Call] = (),
    *,
    usage: tuple[int, int] = (20, 7),
    stop_reason: str | None = None,
    model: str = "claude-sonnet-4-5-20250929",
) -> list[dict[str, Any]]:
    """A Messages API stream: message_start, text and tool_use blocks (input as JSON pieces),
    message_delta with the stop reason and output tokens, message_stop."""
    start = {
        "id": "msg_01", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "usage": {"input_tokens": usage[0], "output_tokens": 1},
    }  # fmt: skip
    out: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    index = 0
    if text_parts:
        out.append(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )
        out += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in text_parts
        ]
        out.append({"type": "content_block_stop", "index": 0})
        index = 1
    for i, (cid, name, args) in enumerate(calls, start=index):
        raw = args if isinstance(args, str) else json.dumps(args)
        block = {"type": "tool_use", "id": cid, "name": name, "input": {}}
        out.append({"type": "content_block_start", "index": i, "content_block": block})
        for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append({"type": "content_block_delta", "index": i, "delta": delta})
        out.append({"type": "content_block_stop", "index": i})
    stop = stop_reason or ("tool_use" if calls else "end_turn")
    out.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop},
            "usage": {"output_tokens": usage[1]},
        }
    )
    out.append({"type": "message_stop"})
    return out


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


# ---- Ollama ----
def ollama_reply(
    text: str = "",
    calls: Sequence[tuple[str, Any]] = (),
    *,
    usage: tuple[int, int] = (30, 9),
    model: str = "llama3.1",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in calls]
    return {
        "model": model,
        "created_at": "2025-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "prompt_eval_count": usage[0],
        "eval_count": usage[1],
    }


# ---- RunPod ----
def runpod_job(
    status: str, job_id: str = "job-1", output: Any = None, error: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": job_id, "status": status}
    if output is not None:
        body["output"] = output
    if error is not None:
        body["error"] = error
    return body


def vllm_output(text: str, usage: tuple[int, int] = (40, 11)) -> list[dict[str, Any]]:
    """worker-vllm's output for a chat input: choices with token strings, usage in/out."""
    return [{"choices": [{"tokens": [text]}], "usage": {"input": usage[0], "output": usage[1]}}]
