"""Each provider adapter, through LLMGateway, against a local server speaking its wire format."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentops.llm.errors import LLMError
from agentops.llm.gateway import LLMGateway
from agentops.llm.settings import load_llm_settings
from agentops.llm.types import LLMRequest, LLMResult, Message, ToolSchema
from tests.fakes import shapes
from tests.fakes.server import FakeServer, Reply

pytestmark = pytest.mark.integration

KEY = "sk-test-SECRET-0123456789"
REQUEST = LLMRequest(
    model="mock-1",
    messages=(
        Message(role="system", content="You are a backend developer."),
        Message(role="user", content="Write hello.py"),
    ),
    tools=(
        ToolSchema(name="write_file", description="Write a file", parameters={"type": "object"}),
        ToolSchema(name="complete_task", description="Finish", parameters={"type": "object"}),
    ),
    metadata={"agent_type": "backend_developer", "call_index": 0},
)


class Sleeps:
    """Backoff sleeps recorded instead of slept, so retry tests take no wall time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_gateway(
    provider: str, url: str, sleeps: Sleeps | None = None, **section: Any
) -> LLMGateway:
    env = {
        "AGENTOPS_LLM_PROVIDER": provider,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": url,
        "OLLAMA_HOST": url,
        "RUNPOD_API_KEY": KEY,
        "RUNPOD_ENDPOINT_ID": "ep1",
        "RUNPOD_BASE_URL": f"{url}/v2",
    }
    section.setdefault("retry", {"max_attempts": 3, "base_delay_s": 0.5, "max_delay_s": 4})
    settings = load_llm_settings(section, env)
    return LLMGateway(settings, sleep=sleeps or Sleeps(), rand=lambda: 0.5)


# ---- OpenAI-compatible ----
async def test_openai_text_reply_with_usage_and_cost() -> None:
    """A plain reply: text, usage from the response, cost from the price table, bearer key."""
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.openai_reply("Hello!", usage=(1000, 500))))
        gateway = make_gateway("openai", server.url, model="gpt-4o")
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert (result.text, result.provider, result.finish_reason) == ("Hello!", "openai", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1000, 500)
    assert result.usage.cost_usd == pytest.approx(0.0075)  # 1000*2.5/1e6 + 500*10/1e6
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert (
        sent.body["model"] == "gpt-4o" and sent.body["tools"][0]["function"]["name"] == "write_file"
    )


async def test_openai_parallel_and_malformed_tool_calls() -> None:
    """Parallel calls come back in order; a malformed one carries arguments_error."""
    calls = [("c1", "write_file", {"path": "a.py"}), ("c2", "write_file", '{"path": ')]
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.openai_reply(None, calls)))
        gateway = make_gateway("openai", server.url)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert [c.id for c in result.tool_calls] == ["c1", "c2"]
    assert result.tool_calls[0].arguments == {"path": "a.py"}
    assert result.tool_calls[1].arguments_error and result.tool_calls[1].arguments == {}


async def test_openai_429_retries_after_the_servers_delay() -> None:
    """429 with Retry-After: 3 waits at least 3 s (jitter would be shorter) and then succeeds."""
    sleeps = Sleeps()
    async with FakeServer() as server:
        server.queue(
            Reply(
                status=429,
                body=shapes.openai_error("Rate limit reached", "requests"),
                headers={"Retry-After": "3"},
            ),
            Reply(body=shapes.openai_reply("ok")),
        )
        gateway = make_gateway("openai", server.url, sleeps)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert result.text == "ok" and sleeps.delays == [3.0] and len(server.requests) == 2


async def test_openai_500_retries_with_backoff_then_fails_clearly() -> None:
    """Repeated 500s are retried max_attempts times with growing jittered backoff, then raise."""
    sleeps = Sleeps()
    async with FakeServer(
        lambda _: Reply(status=500, body=shapes.openai_error("boom", "server_error"))
    ) as server:
        gateway = make_gateway("openai", server.url, sleeps)
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "server_error" and info.value.retryable
    assert "HTTP 500" in info.value.message and "boom" in info.value.message
    assert "after 3 attempts" in info.value.message
    assert len(server.requests) == 3 and sleeps.delays == [0.25, 0.5]


async def test_openai_401_is_not_retried_and_hides_the_key() -> None:
    """A 4xx that will not change is raised at once; a key echoed by the server is masked."""
    body = shapes.openai_error(f"Incorrect API key provided: {KEY}", code="invalid_api_key")
    async with FakeServer() as server:
        server.queue(Reply(status=401, body=body))
        gateway = make_gateway("openai", server.url)
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "auth" and len(server.requests) == 1
    assert KEY not in info.value.message and KEY not in str(info.value.info().model_dump())


async def test_openai_timeout_is_retried_then_reported() -> None:
    """A server slower than timeout_s gives a `timeout` error after the retries."""
    async with FakeServer(lambda _: Reply(body=shapes.openai_reply("late"), delay_s=5)) as server:
        gateway = make_gateway("openai", server.url, timeout_s=0.2, retry={"max_attempts": 2})
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "timeout" and len(server.requests) == 2


async def test_openai_refusal_is_a_result() -> None:
    """A refusal is an LLMResult with finish_reason refusal, not an exception."""
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.openai_reply(None, refusal="I can't assist with that.")))
        gateway = make_gateway("openai", server.url)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert (result.finish_reason, result.text) == ("refusal", "I can't assist with that.")


async def test_openai_non_json_body_is_invalid_response() -> None:
    """A 200 whose body is not JSON fails clearly as invalid_response, without retries."""
    async with FakeServer() as server:
        server.queue(Reply(raw=b"<html>proxy error</html>"))
        gateway = make_gateway("openai", server.url)
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "invalid_response" and len(server.requests) == 1


async def test_openai_unreachable_server_is_unavailable() -> None:
    """Connection refused is `unavailable` (retryable) and names where it tried."""
    async with FakeServer() as server:
        url = server.url
    gateway = make_gateway("openai", url, retry={"max_attempts": 1})
    with pytest.raises(LLMError) as info:
        await gateway.complete(REQUEST)
    await gateway.aclose()
    assert info.value.code == "unavailable" and info.value.retryable and url in info.value.message


async def streamed(provider: str, reply: Reply) -> tuple[LLMResult, list[str], FakeServer]:
    """One call with stream = true; the text deltas on_delta received, in order."""
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    async with FakeServer() as server:
        server.queue(reply)
        gateway = make_gateway(provider, server.url, stream=True)
        result = await gateway.complete(REQUEST, on_delta=on_delta)
        await gateway.aclose()
    return result, deltas, server


async def test_openai_streaming_sends_deltas_and_the_same_result() -> None:
    """stream = true: SSE deltas reach on_delta in order; the result is the whole reply."""
    chunks = shapes.openai_chunks(["Wri", "ting"], [("c1", "write_file", {"path": "x"})])
    result, deltas, server = await streamed("openai", Reply(sse=chunks))
    assert deltas == ["Wri", "ting"] and result.text == "Writing"
    assert result.tool_calls[0].arguments == {"path": "x"}
    assert server.requests[0].body["stream"] is True


async def test_openrouter_headers_and_missing_usage_is_estimated() -> None:
    """Extra headers (OpenRouter) are sent; a reply without usage gets estimated counts."""
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.openai_reply("hi", usage=None)))
        gateway = make_gateway("openai", server.url, headers={"X-Title": "AgentOps"})
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert server.requests[0].headers["X-Title"] == "AgentOps"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 1


async def test_concurrency_limit_holds_against_a_real_server() -> None:
    """20 concurrent calls with max_concurrency 2 never have more than 2 at the server."""
    in_server = 0
    peak = 0

    async def slow(_: Any) -> Reply:
        nonlocal in_server, peak
        in_server += 1
        peak = max(peak, in_server)
        await asyncio.sleep(0.01)
        in_server -= 1
        return Reply(body=shapes.openai_reply("ok"))

    async with FakeServer(slow) as server:
        gateway = make_gateway("openai", server.url, limits={"openai": {"max_concurrency": 2}})
        results = await asyncio.gather(*(gateway.complete(REQUEST) for _ in range(20)))
        await gateway.aclose()
    assert len(results) == 20 and peak == 2


# ---- Anthropic ----
async def test_anthropic_tool_use_reply_and_headers() -> None:
    """Messages API: x-api-key + anthropic-version, tool_use blocks parsed, usage counted."""
    reply = shapes.anthropic_reply(
        "Writing.", [("toolu_1", "write_file", {"path": "a"})], usage=(100, 10)
    )
    async with FakeServer() as server:
        server.queue(Reply(body=reply))
        gateway = make_gateway("anthropic", server.url)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    sent = server.requests[0]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01" and "Authorization" not in sent.headers
    assert sent.body["system"] == "You are a backend developer."
    assert result.tool_calls[0].name == "write_file" and result.text == "Writing."
    assert result.usage.cost_usd == pytest.approx(100 * 3 / 1e6 + 10 * 15 / 1e6)


async def test_anthropic_overloaded_529_is_retried() -> None:
    """529 overloaded_error is retryable; the next attempt's answer is returned."""
    sleeps = Sleeps()
    async with FakeServer() as server:
        server.queue(
            Reply(status=529, body=shapes.anthropic_error("overloaded_error", "Overloaded")),
            Reply(body=shapes.anthropic_reply("fine")),
        )
        gateway = make_gateway("anthropic", server.url, sleeps)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert result.text == "fine" and len(sleeps.delays) == 1


async def test_anthropic_refusal_and_context_length() -> None:
    """stop_reason refusal is a result; 'prompt is too long' is a context_length error."""
    too_long = shapes.anthropic_error(
        "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )
    async with FakeServer() as server:
        server.queue(
            Reply(body=shapes.anthropic_reply(stop_reason="refusal")),
            Reply(status=400, body=too_long),
        )
        gateway = make_gateway("anthropic", server.url)
        refused = await gateway.complete(REQUEST)
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert refused.finish_reason == "refusal"
    assert info.value.code == "context_length" and len(server.requests) == 2


async def test_anthropic_streaming_sends_deltas() -> None:
    """stream = true on Anthropic: text deltas reach on_delta; tool_use input is rebuilt."""
    events = shapes.anthropic_events(["Let ", "me"], [("toolu_9", "write_file", {"path": "z"})])
    result, deltas, server = await streamed("anthropic", Reply(sse=events, sse_done=False))
    assert deltas == ["Let ", "me"] and result.tool_calls[0].arguments == {"path": "z"}
    assert server.requests[0].body["stream"] is True and result.usage.output_tokens == 7


# ---- Ollama ----
async def test_ollama_native_chat_with_tools() -> None:
    """POST /api/chat with stream false; object arguments; counts from eval fields."""
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.ollama_reply("", [("write_file", {"path": "o.py"})])))
        gateway = make_gateway("ollama", server.url, model="qwen2.5")
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    sent = server.requests[0]
    assert (
        sent.path == "/api/chat"
        and sent.body["stream"] is False
        and sent.body["model"] == "qwen2.5"
    )
    assert result.tool_calls[0].arguments == {"path": "o.py"} and result.usage.input_tokens == 30


# ---- RunPod ----
async def test_runpod_runsync_with_prompted_tool_call() -> None:
    """/runsync with a bearer key; a JSON tool call in the text becomes a tool call."""
    text = 'Here you go: {"tool_calls": [{"name": "write_file", "arguments": {"path": "r.py"}}]}'
    async with FakeServer() as server:
        server.queue(Reply(body=shapes.runpod_job("COMPLETED", output=shapes.vllm_output(text))))
        gateway = make_gateway("runpod", server.url)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    sent = server.requests[0]
    assert sent.path == "/v2/ep1/runsync" and sent.headers["Authorization"] == f"Bearer {KEY}"
    assert result.tool_calls[0].arguments == {"path": "r.py"} and result.usage.output_tokens == 11


async def test_runpod_run_and_status_polling() -> None:
    """runpod_async: /run, then /status/<id> until COMPLETED."""
    async with FakeServer() as server:
        server.queue(
            Reply(body=shapes.runpod_job("IN_QUEUE", "j9")),
            Reply(body=shapes.runpod_job("IN_PROGRESS", "j9")),
            Reply(body=shapes.runpod_job("COMPLETED", "j9", output=shapes.vllm_output("done"))),
        )
        gateway = make_gateway("runpod", server.url, runpod_async=True, poll_interval_s=0.01)
        result = await gateway.complete(REQUEST)
        await gateway.aclose()
    assert [r.path for r in server.requests] == [
        "/v2/ep1/run",
        "/v2/ep1/status/j9",
        "/v2/ep1/status/j9",
    ]
    assert result.text == "done"


async def test_runpod_job_that_never_finishes_times_out_and_is_cancelled() -> None:
    """A job still queued at the deadline is cancelled and reported as a timeout."""
    async with FakeServer(lambda _: Reply(body=shapes.runpod_job("IN_QUEUE", "j1"))) as server:
        gateway = make_gateway(
            "runpod", server.url, timeout_s=0.3, poll_interval_s=0.05, retry={"max_attempts": 1}
        )
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "timeout"
    assert server.requests[-1].path == "/v2/ep1/cancel/j1"


async def test_runpod_failed_job_is_a_clear_error() -> None:
    """A FAILED job's error text reaches the message (retried as a server error)."""
    failed = shapes.runpod_job("FAILED", error="worker crashed")
    async with FakeServer(lambda _: Reply(body=failed)) as server:
        gateway = make_gateway("runpod", server.url, retry={"max_attempts": 1})
        with pytest.raises(LLMError) as info:
            await gateway.complete(REQUEST)
        await gateway.aclose()
    assert info.value.code == "server_error" and "worker crashed" in info.value.message


# ---- routing ----
async def test_agent_types_route_to_their_own_provider() -> None:
    """devops goes to Anthropic, the rest to OpenAI, each with its own model."""
    async with FakeServer() as openai_server, FakeServer() as anthropic_server:
        openai_server.queue(Reply(body=shapes.openai_reply("from openai")))
        anthropic_server.queue(Reply(body=shapes.anthropic_reply("from anthropic")))
        agents = {"devops_engineer": {"provider": "anthropic", "base_url": anthropic_server.url}}
        gateway = make_gateway("openai", openai_server.url, agents=agents)
        devops = REQUEST.model_copy(update={"metadata": {"agent_type": "devops_engineer"}})
        a, b = await asyncio.gather(gateway.complete(REQUEST), gateway.complete(devops))
        await gateway.aclose()
    assert (a.text, a.provider) == ("from openai", "openai")
    assert (b.text, b.provider) == ("from anthropic", "anthropic")
    assert anthropic_server.requests[0].body["model"].startswith("claude")
