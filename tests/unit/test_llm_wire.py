"""Pure request/response mapping per provider, against the documented wire shapes (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentops.llm import wire_anthropic, wire_ollama, wire_openai, wire_runpod
from agentops.llm.errors import LLMError
from agentops.llm.settings import load_llm_settings
from agentops.llm.types import LLMRequest, Message, ToolCall, ToolSchema
from agentops.llm.wire import parse_arguments
from tests.fakes import shapes

WRITE = ToolSchema(
    name="write_file",
    description="Write a file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)
DONE = ToolSchema(name="complete_task", description="Finish", parameters={"type": "object"})

# The canonical conversation: system, user, assistant with tool calls, tool results.
CONVERSATION = LLMRequest(
    model="mock-1",
    messages=(
        Message(role="system", content="You are a backend developer."),
        Message(role="user", content="Write hello.py"),
        Message(
            role="assistant",
            content="Writing it.",
            tool_calls=(
                ToolCall(id="call_a", name="write_file", arguments={"path": "hello.py"}),
                ToolCall(id="call_b", name="write_file", arguments={"path": "b.py"}),
            ),
        ),
        Message(role="tool", tool_call_id="call_a", content='{"ok": true}'),
        Message(role="tool", tool_call_id="call_b", content=""),
    ),
    tools=(WRITE, DONE),
    temperature=0.1,
    metadata={"agent_type": "backend_developer", "call_index": 7},
)


def route(provider: str, **env: str) -> Any:
    base = {"AGENTOPS_LLM_PROVIDER": provider, "OPENAI_API_KEY": "sk-test"}
    base |= {"ANTHROPIC_API_KEY": "ak-test", "RUNPOD_API_KEY": "rp", "RUNPOD_ENDPOINT_ID": "ep"}
    return load_llm_settings({}, base | env).default


# ---- OpenAI ----
def test_openai_request_maps_the_conversation_faithfully() -> None:
    """System/user/assistant-with-tool_calls/tool messages and tools map to Chat Completions."""
    body = wire_openai.to_request(CONVERSATION, route("openai", AGENTOPS_LLM_MODEL="gpt-4o"))
    assert body["model"] == "gpt-4o" and body["max_tokens"] == 4096 and body["temperature"] == 0.1
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    call = body["messages"][2]["tool_calls"][0]
    assert call == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "write_file", "arguments": '{"path": "hello.py"}'},
    }
    assert body["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": '{"ok": true}',
    }
    assert body["messages"][4]["content"] == "(empty)"
    assert body["tools"][0]["type"] == "function"
    assert body["tools"][0]["function"]["parameters"] == WRITE.parameters
    assert "stream" not in body


def test_openai_reasoning_models_get_max_completion_tokens() -> None:
    """o-series and gpt-5 models refuse max_tokens, so they get max_completion_tokens."""
    body = wire_openai.to_request(CONVERSATION, route("openai", AGENTOPS_LLM_MODEL="o4-mini"))
    assert "max_tokens" not in body and body["max_completion_tokens"] == 4096


def test_openai_reply_with_parallel_tool_calls() -> None:
    """Parallel tool calls are parsed with their ids, names and JSON-string arguments."""
    reply = shapes.openai_reply(
        None, [("call_1", "write_file", {"path": "a"}), ("call_2", "complete_task", {})]
    )
    result = wire_openai.from_response(reply, CONVERSATION)
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_1", "write_file", {"path": "a"}),
        ("call_2", "complete_task", {}),
    ]
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 5)


def test_openai_malformed_arguments_become_arguments_error() -> None:
    """Arguments that are not a JSON object give a call with `arguments_error`, no crash."""
    reply = shapes.openai_reply(
        None, [("c1", "write_file", '{"path": "a"'), ("c2", "write_file", "[1, 2]")]
    )
    first, second = wire_openai.from_response(reply, CONVERSATION).tool_calls
    assert first.arguments == {} and "not valid JSON" in (first.arguments_error or "")
    assert "must be a JSON object" in (second.arguments_error or "")


def test_openai_refusal_is_a_result_not_an_error() -> None:
    """`message.refusal` gives finish_reason "refusal" and the refusal text."""
    result = wire_openai.from_response(
        shapes.openai_reply(None, refusal="I can't help with that."), CONVERSATION
    )
    assert (result.text, result.finish_reason) == ("I can't help with that.", "refusal")


def test_openai_tolerates_compatible_servers_quirks() -> None:
    """Missing ids and usage, content as parts: read without crashing; ids from call_index."""
    reply = shapes.openai_reply(None, [("", "complete_task", {"summary": "x"})], usage=None)
    reply["choices"][0]["message"]["content"] = [{"type": "text", "text": "done"}]
    result = wire_openai.from_response(reply, CONVERSATION)
    assert result.text == "done" and result.tool_calls[0].id == "call_7_0"
    assert result.usage.input_tokens == 0


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{}]}, [], "text"])
def test_openai_reply_of_the_wrong_shape_is_invalid_response(body: Any) -> None:
    """A reply without choices[0].message is an `invalid_response` error."""
    with pytest.raises(LLMError) as info:
        wire_openai.from_response(body, CONVERSATION)
    assert info.value.code == "invalid_response" and not info.value.retryable


def test_openai_stream_reads_back_to_the_same_result() -> None:
    """Chunks (text deltas, tool-call argument pieces, usage) accumulate to the full reply."""
    acc = wire_openai.StreamAccumulator(CONVERSATION)
    chunks = shapes.openai_chunks(["Hel", "lo"], [("c1", "write_file", {"path": "p.py"})])
    deltas = [acc.feed(c) for c in chunks]
    result = acc.result()
    assert "".join(deltas) == "Hello" == result.text
    assert result.tool_calls == (ToolCall(id="c1", name="write_file", arguments={"path": "p.py"}),)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 5)
    assert result.finish_reason == "tool_calls"


# ---- Anthropic ----
def test_anthropic_request_uses_system_blocks_and_merges_roles() -> None:
    """System goes top-level; tool calls are tool_use, results tool_result in one user turn."""
    body = wire_anthropic.to_request(CONVERSATION, route("anthropic"))
    assert body["system"] == "You are a backend developer."
    assert body["max_tokens"] == 4096
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assistant = body["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Writing it."}
    assert assistant[1] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "write_file",
        "input": {"path": "hello.py"},
    }
    results = body["messages"][2]["content"]
    assert [(b["type"], b["tool_use_id"]) for b in results] == [
        ("tool_result", "call_a"),
        ("tool_result", "call_b"),
    ]
    assert body["tools"][0] == {
        "name": "write_file",
        "description": "Write a file",
        "input_schema": WRITE.parameters,
    }


def test_anthropic_headers_carry_key_and_version() -> None:
    """Requests carry x-api-key and anthropic-version, not a bearer token."""
    assert wire_anthropic.headers("k") == {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def test_anthropic_reply_with_text_and_tool_use() -> None:
    """Text and tool_use blocks map to text and tool calls; usage from input/output tokens."""
    reply = shapes.anthropic_reply("Let me write.", [("toolu_1", "write_file", {"path": "x"})])
    result = wire_anthropic.from_response(reply, CONVERSATION)
    assert result.text == "Let me write." and result.finish_reason == "tool_calls"
    assert result.tool_calls[0] == ToolCall(
        id="toolu_1", name="write_file", arguments={"path": "x"}
    )
    assert (result.usage.input_tokens, result.usage.output_tokens) == (20, 7)


def test_anthropic_refusal_and_malformed_input() -> None:
    """stop_reason refusal is a refusal result; a tool_use whose input is no object is flagged."""
    refused = wire_anthropic.from_response(
        shapes.anthropic_reply(stop_reason="refusal"), CONVERSATION
    )
    assert refused.finish_reason == "refusal" and refused.text
    odd = wire_anthropic.from_response(
        shapes.anthropic_reply(None, [("t", "write_file", ["not", "object"])]), CONVERSATION
    )
    assert odd.tool_calls[0].arguments_error


def test_anthropic_conversation_starting_with_assistant_gets_a_user_turn() -> None:
    """The API requires a first user message; empty text blocks are dropped."""
    request = LLMRequest(
        model="m",
        messages=(Message(role="assistant", content="hi"), Message(role="user", content="")),
    )
    body = wire_anthropic.to_request(request, route("anthropic"))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]


# ---- Ollama ----
def test_ollama_request_and_reply() -> None:
    """Native /api/chat: role tool with tool_name, object arguments, counts from eval fields."""
    body = wire_ollama.to_request(CONVERSATION, route("ollama"))
    assert body["stream"] is False and body["options"]["num_predict"] == 4096
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"path": "hello.py"}
    assert body["messages"][3] == {
        "role": "tool",
        "content": '{"ok": true}',
        "tool_name": "write_file",
    }
    reply = shapes.ollama_reply("", [("write_file", {"path": "y"}), ("complete_task", "{bad")])
    result = wire_ollama.from_response(reply, CONVERSATION)
    assert [c.id for c in result.tool_calls] == ["call_7_0", "call_7_1"]
    assert result.tool_calls[0].arguments == {"path": "y"}
    assert result.tool_calls[1].arguments_error
    assert (result.usage.input_tokens, result.usage.output_tokens) == (30, 9)


# ---- RunPod ----
def test_runpod_messages_input_describes_tools_in_the_prompt() -> None:
    """Without native tools the system prompt carries the JSON tool-call format and schemas."""
    body = wire_runpod.to_request(CONVERSATION, route("runpod"))
    messages = body["input"]["messages"]
    assert messages[0]["role"] == "system" and '{"tool_calls"' in messages[0]["content"]
    assert "write_file" in messages[0]["content"]
    assert (
        json.loads(messages[2]["content"].split("\n", 1)[1])["tool_calls"][0]["name"]
        == "write_file"
    )
    assert messages[3]["role"] == "user" and "call_a" in messages[3]["content"]
    assert body["input"]["sampling_params"]["max_tokens"] == 4096


def test_runpod_openai_input_wraps_a_chat_body() -> None:
    """runpod_input=openai sends worker-vllm's OpenAI route with native tools."""
    section = {"runpod_input": "openai"}
    env = {"AGENTOPS_LLM_PROVIDER": "runpod", "RUNPOD_API_KEY": "k", "RUNPOD_ENDPOINT_ID": "e"}
    r = load_llm_settings(section, env).default
    body = wire_runpod.to_request(CONVERSATION, r)
    assert body["input"]["openai_route"] == "/v1/chat/completions"
    assert body["input"]["openai_input"]["tools"][0]["function"]["name"] == "write_file"
    result = wire_runpod.from_output([shapes.openai_reply("hi")], CONVERSATION, r)
    assert result.text == "hi" and result.provider == "runpod"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"tool_calls": [{"name": "write_file", "arguments": {"path": "a"}}]}',
            [("write_file", {"path": "a"})],
        ),
        (
            'Sure!\n```json\n{"name": "complete_task", "arguments": {"summary": "s"}}\n```',
            [("complete_task", {"summary": "s"})],
        ),
        (
            'I will call {"tool": "write_file", "args": {"path": "b"}} now',
            [("write_file", {"path": "b"})],
        ),
        (
            '[{"name": "a", "arguments": "{\\"x\\": 1}"}, {"name": "b", "parameters": {}}]',
            [("a", {"x": 1}), ("b", {})],
        ),
        ("Just a plain answer with {braces} inside.", []),
        ("", []),
    ],
)
def test_runpod_tolerant_tool_parser(text: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    """The JSON tool-call format is found in fences, prose and lists; plain text is no call."""
    calls = wire_runpod.parse_tool_reply(text, CONVERSATION)
    assert [(c.name, c.arguments) for c in calls] == expected
    assert all(c.arguments_error is None for c in calls)


def test_runpod_broken_tool_json_is_a_call_with_an_error() -> None:
    """Clearly-a-tool-call JSON that does not parse reaches the model as an arguments error."""
    (call,) = wire_runpod.parse_tool_reply(
        '{"tool_calls": [{"name": "write_file", "arguments": {', CONVERSATION
    )
    assert call.name == "write_file" and call.arguments_error


def test_runpod_job_states() -> None:
    """COMPLETED is done, IN_QUEUE/IN_PROGRESS pending; FAILED and TIMED_OUT are clear errors."""
    assert wire_runpod.job_state(shapes.runpod_job("COMPLETED")) == ("done", "job-1")
    assert wire_runpod.job_state(shapes.runpod_job("IN_PROGRESS")) == ("pending", "job-1")
    with pytest.raises(LLMError) as failed:
        wire_runpod.job_state(shapes.runpod_job("FAILED", error="CUDA out of memory"))
    assert failed.value.code == "server_error" and "CUDA out of memory" in failed.value.message
    with pytest.raises(LLMError) as timed_out:
        wire_runpod.job_state(shapes.runpod_job("TIMED_OUT"))
    assert timed_out.value.code == "timeout"


def test_runpod_vllm_output_text_and_usage() -> None:
    """worker-vllm output: tokens joined, usage input/output, a JSON reply parsed as a call."""
    r = route("runpod")
    out = shapes.vllm_output(
        '{"tool_calls": [{"name": "complete_task", "arguments": {"summary": "ok"}}]}'
    )
    result = wire_runpod.from_output(out, CONVERSATION, r)
    assert result.tool_calls[0].name == "complete_task" and result.text == ""
    assert (result.usage.input_tokens, result.usage.output_tokens) == (40, 11)
    plain = wire_runpod.from_output(shapes.vllm_output("hello"), CONVERSATION, r)
    assert plain.text == "hello" and plain.tool_calls == ()


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (None, True),
        ("", True),
        ('{"a": 1}', True),
        ({"a": 1}, True),
        ("1", False),
        (3, False),
        ("{", False),
    ],
)
def test_parse_arguments_never_raises(raw: Any, ok: bool) -> None:
    """Arguments parse to a dict or give a reason; nothing raises."""
    args, error = parse_arguments(raw)
    assert isinstance(args, dict) and (error is None) == ok


def test_anthropic_stream_reads_back_to_the_same_result() -> None:
    """Stream events (text deltas, tool input as JSON pieces, usage) rebuild the full reply."""
    acc = wire_anthropic.StreamAccumulator(CONVERSATION)
    events = shapes.anthropic_events(["On ", "it."], [("toolu_1", "write_file", {"path": "s.py"})])
    deltas = [acc.feed(e) for e in events]
    result = acc.result()
    assert "".join(deltas) == "On it." == result.text
    assert result.tool_calls == (
        ToolCall(id="toolu_1", name="write_file", arguments={"path": "s.py"}),
    )
    assert (result.usage.input_tokens, result.usage.output_tokens) == (20, 7)
    assert result.finish_reason == "tool_calls"


def test_anthropic_stream_error_event_and_broken_tool_json() -> None:
    """An `error` event mid-stream is an LLMError; broken streamed tool JSON is flagged."""
    acc = wire_anthropic.StreamAccumulator(CONVERSATION)
    for event in shapes.anthropic_events([], [("t1", "write_file", '{"path": ')]):
        acc.feed(event)
    assert acc.result().tool_calls[0].arguments_error
    with pytest.raises(LLMError):
        acc.feed(shapes.anthropic_error("overloaded_error", "Overloaded"))
