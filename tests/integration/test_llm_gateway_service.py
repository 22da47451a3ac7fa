"""The llm-gateway process wiring against a real nats-server and a fake OpenAI server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agentops.bus.connection import publish
from agentops.bus.service import Runtime
from agentops.bus.setup import ensure_jetstream
from agentops.config import load_settings
from agentops.llm.types import LLMRequest, Message, ToolSchema
from agentops.protocol import subjects as s
from agentops.protocol.messages import LLMRequested, ReplyTo
from agentops.services import llm_gateway
from tests.fakes import shapes
from tests.fakes.server import FakeServer, Reply
from tests.helpers import until

pytestmark = pytest.mark.integration

KEY = "sk-service-SECRET-987654"


def requested(n: int) -> LLMRequested:
    request = LLMRequest(
        model="mock-1",
        messages=(Message(role="user", content="Write hello.py"),),
        tools=(ToolSchema(name="write_file", description="Write", parameters={"type": "object"}),),
        metadata={"agent_type": "backend_developer", "agent_id": "agent_x", "task_id": "task_x"},
    )
    return LLMRequested(
        id=f"agent_x.llm{n}", task_id="task_x", agent_id="agent_x", ts=datetime.now(UTC),
        step=n, attempt=0, reply_to=ReplyTo(agent_type="backend_developer", agent_id="agent_x"),
        request=request,
    )  # fmt: skip


async def start_gateway(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, stream: bool
) -> tuple[Runtime, list[dict[str, Any]], list[dict[str, Any]]]:
    config = tmp_path / "agentops.toml"
    config.write_text(f"[llm]\nstream = {str(stream).lower()}\n[llm.retry]\nmax_attempts = 1\n")
    monkeypatch.setenv("AGENTOPS_LLM_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    js = nc.jetstream()
    rt = Runtime(
        process="llm-gateway", nc=nc, js=js, buckets=await ensure_jetstream(js),
        settings=load_settings(data_dir=tmp_path, config_file=str(config)),
    )  # fmt: skip
    replies: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    async def on_reply(msg: Any) -> None:
        replies.append(json.loads(msg.data))

    async def on_event(msg: Any) -> None:
        events.append(json.loads(msg.data))

    await nc.subscribe(s.agent_mailbox_filter("backend_developer", "agent_x"), cb=on_reply)
    await nc.subscribe(s.events_filter(), cb=on_event)
    await llm_gateway.setup(rt)
    return rt, replies, events


async def stop(rt: Runtime) -> None:
    for consumer in rt.consumers:
        await consumer.stop()
    for hook in rt.on_shutdown:
        await hook()


async def test_streamed_reply_publishes_deltas_and_answers_with_usage(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed completion answers LLMCompleted with usage and publishes llm.delta events."""
    chunks = shapes.openai_chunks(["Hello", ", ", "world"], usage=(50, 3))
    async with FakeServer() as server:
        server.queue(Reply(sse=chunks))
        rt, replies, events = await start_gateway(nc, tmp_path, monkeypatch, server.url, True)
        msg = requested(1)
        await publish(rt.js, s.llm_requests(), msg, msg.id)
        await until(lambda: len(replies) == 1, what="gateway reply")
        await stop(rt)
    reply = replies[0]
    assert reply["type"] == "llm.completed" and reply["id"] == "agent_x.llm1.result"
    assert reply["result"]["text"] == "Hello, world" and reply["result"]["provider"] == "openai"
    assert reply["result"]["usage"]["input_tokens"] == 50
    deltas = [e for e in events if e["type"] == "llm.delta"]
    # Coalesced: fewer events than chunks, and together they carry the whole text, in order.
    assert 1 <= len(deltas) <= 3
    assert "".join(d["data"]["text"] for d in deltas) == "Hello, world"
    assert all(d["task_id"] == "task_x" and d["agent_id"] == "agent_x" for d in deltas)


async def test_provider_error_is_an_llm_failed_reply_without_the_key(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 becomes LLMFailed(code=auth) for the agent; the key appears nowhere in it."""
    body = shapes.openai_error(f"Incorrect API key provided: {KEY}", code="invalid_api_key")
    async with FakeServer(lambda _: Reply(status=401, body=body)) as server:
        rt, replies, events = await start_gateway(nc, tmp_path, monkeypatch, server.url, False)
        msg = requested(2)
        await publish(rt.js, s.llm_requests(), msg, msg.id)
        await until(lambda: len(replies) == 1, what="gateway reply")
        status = rt.status()
        await stop(rt)
    assert replies[0]["type"] == "llm.failed" and replies[0]["error"]["code"] == "auth"
    assert KEY not in json.dumps(replies) and KEY not in json.dumps(events)
    assert KEY not in json.dumps(status) and status["provider"] == "openai"


async def test_a_growing_conversation_reaches_the_provider_whole(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway parses only a growing conversation's new messages; the provider gets them all."""
    # An agent's second request repeats its conversation and adds to it; the gateway reports
    # the messages it reused.
    async with FakeServer(lambda _: Reply(body=shapes.openai_reply("ok"))) as server:
        rt, replies, _ = await start_gateway(nc, tmp_path, monkeypatch, server.url, False)
        first = requested(3)
        grown = (
            *first.request.messages,
            Message(role="assistant", content="Which framework?"),
            Message(role="user", content="Flask, please"),
        )
        second = requested(4)
        second = second.model_copy(
            update={"request": second.request.model_copy(update={"messages": grown})}
        )
        for msg in (first, second):
            await publish(rt.js, s.llm_requests(), msg, msg.id)
        await until(lambda: len(replies) == 2, what="gateway replies")
        status = rt.status()
        await stop(rt)
    assert [r["type"] for r in replies] == ["llm.completed", "llm.completed"]
    assert status["conversation_messages_reused"] == 1
    sent = [[m["content"] for m in r.body["messages"]] for r in server.requests]
    assert sent == [["Write hello.py"], ["Write hello.py", "Which framework?", "Flask, please"]]


async def test_a_redelivered_request_is_answered_again_without_calling_the_provider(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request delivered twice costs one provider call; both answers are the same."""
    async with FakeServer(lambda _: Reply(body=shapes.openai_reply("once"))) as server:
        rt, replies, _ = await start_gateway(nc, tmp_path, monkeypatch, server.url, False)
        msg = requested(5)
        await publish(rt.js, s.llm_requests(), msg, msg.id)
        await until(lambda: len(replies) == 1, what="the answer")
        # Stored again under another message id: the gateway is handed the request again, as
        # when its answer could not be published and the request came back.
        await publish(rt.js, s.llm_requests(), msg, f"{msg.id}.again")
        await until(lambda: len(replies) == 2, what="the second answer")
        status = rt.status()
        await stop(rt)
    assert len(server.requests) == 1
    assert replies[0] == replies[1] and replies[0]["result"]["text"] == "once"
    assert status["llm_calls"] == {
        "ok": 1,
        "failed": 0,
        "answered_again": 1,
        "conversation_misses": 0,
    }
