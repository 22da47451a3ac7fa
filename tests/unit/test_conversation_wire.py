"""The LLM request's wire form (`bus/conversation.py`): a request carries only the messages the
gateway has not seen, the gateway appends them to the very conversation the request names, and
anything else (another gateway, a forged or changed base) is a miss answered by a whole resend."""

from __future__ import annotations

import json

from agentops.bus.connection import outgoing
from agentops.bus.conversation import ConversationCache, encode_llm_request, forget_sent
from agentops.core import agent
from agentops.core.effects import CallLLM
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import WORK_ADAPTER, LLMFailed, LLMRequested
from tests.harness import Harness
from tests.unit.test_budget_and_context import AGENT, BIG, WRITES, priced_harness, tool_llm


def requests_of(h: Harness) -> list[LLMRequested]:
    h.run()
    assert len(h.llm_requests) > 3
    return list(h.llm_requests)


def on_the_wire(message: LLMRequested) -> LLMRequested:
    """What a gateway decodes from the request as the agent sends it."""
    decoded = WORK_ADAPTER.validate_json(encode_llm_request(message)[0])
    assert isinstance(decoded, LLMRequested)
    return decoded


def same(a: LLMRequested, b: LLMRequested) -> bool:
    plain = {"conversation": None, "whole": False}
    return a.model_copy(update=plain) == b.model_copy(update=plain)


def test_a_run_sends_each_message_once_and_the_gateway_sees_every_request_whole() -> None:
    """After the first request, each carries only its new messages; resolved, each is whole."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    _, agent_id = h.submit(AGENT, budget_usd=10.0)
    forget_sent(agent_id)
    cache = ConversationCache()
    requests = requests_of(h)
    sent = [on_the_wire(r) for r in requests]
    for request, wire in zip(requests, sent, strict=True):
        resolved = cache.resolve(wire)
        assert resolved is not None and same(resolved, request)
    assert sent[0].conversation is not None and sent[0].conversation.base == 0
    assert all(w.conversation is not None and w.conversation.base > 0 for w in sent[1:])
    carried = sum(len(w.request.messages) for w in sent)
    assert carried == len(requests[-1].request.messages)  # each message crossed once
    assert cache.misses == 0


def test_interleaved_agents_and_a_compacted_conversation_resolve_to_themselves() -> None:
    """Two agents alternating, one of them compacting its context, each resolve to itself."""
    reads = [{"tool": "read_file", "args": {"path": "big.txt"}} for _ in range(12)]
    h = priced_harness(tool_llm(reads, cost=0.0), context_window=30_000)
    task_id, _ = h.submit(AGENT, description="Summarise big.txt")
    h.tools.files[task_id] = {"big.txt": BIG}
    compacting = requests_of(h)
    assert compacting[-1].request.metadata["compacted_messages"] > 0
    other = Harness(llm=tool_llm(WRITES, cost=0.01))
    other.submit(AGENT, budget_usd=10.0)
    plain = [r.model_copy(update={"agent_id": "agent_other"}) for r in requests_of(other)]
    cache = ConversationCache()
    for pair in zip(compacting, plain, strict=False):
        for request in pair:
            resolved = cache.resolve(on_the_wire(request))
            assert resolved is not None and same(resolved, request)


def test_another_gateway_misses_and_a_whole_request_then_resolves() -> None:
    """A delta reaching a gateway without its base is a miss; the same call sent whole is not."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    _, agent_id = h.submit(AGENT, budget_usd=10.0)
    forget_sent(agent_id)
    requests = requests_of(h)
    first, second = ConversationCache(), ConversationCache()
    assert first.resolve(on_the_wire(requests[0])) is not None
    delta = on_the_wire(requests[1])
    assert second.resolve(delta) is None and second.misses == 1
    whole = on_the_wire(requests[1].model_copy(update={"whole": True}))
    resolved = second.resolve(whole)
    assert resolved is not None and same(resolved, requests[1])


def test_a_forged_or_changed_base_is_never_spliced() -> None:
    """A base with another digest or count, or a whole whose count is wrong, is a miss."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    _, agent_id = h.submit(AGENT, budget_usd=10.0)
    forget_sent(agent_id)
    requests = requests_of(h)
    cache = ConversationCache()
    assert cache.resolve(on_the_wire(requests[0])) is not None
    delta = on_the_wire(requests[1])
    assert delta.conversation is not None
    for change in (
        {"base_digest": "0" * 32},
        {"base": delta.conversation.base + 1},
        {"count": delta.conversation.count + 1},
    ):
        forged = delta.model_copy(
            update={"conversation": delta.conversation.model_copy(update=change)}
        )
        assert cache.resolve(forged) is None
    assert cache.resolve(delta) is not None


def test_a_miss_makes_the_agent_send_the_same_call_whole() -> None:
    """`conversation_miss` is not an LLM error: the agent sends the same call (same step,
    attempt and call index) again, whole, and records nothing in its thread."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01), hold_llm=True)
    _, agent_id = h.submit(AGENT, budget_usd=10.0)
    h.run()
    state = h.agents[agent_id]
    (call,) = [e for e in state.outbox if isinstance(e, CallLLM)]
    miss = LLMFailed(
        **call.message.reply_header("llm-gateway", state.updated_at),
        step=call.message.step,
        attempt=call.message.attempt,
        error=ErrorInfo(code="conversation_miss", message="send it whole", retryable=True),
    )
    decision = agent.step(h.specs[AGENT], state, miss, state.updated_at)
    assert decision.state is not None
    assert decision.state.thread == state.thread and decision.state.error_count == 0
    (again,) = [e for e in decision.effects if isinstance(e, CallLLM)]
    assert again.message.whole and again.message.id.endswith(".whole")
    assert (again.message.step, again.message.attempt) == (call.message.step, call.message.attempt)
    assert again.message.request == call.message.request
    assert [e for e in decision.effects if not isinstance(e, CallLLM)] == []


def test_published_llm_requests_carry_their_id() -> None:
    """A published LLM request carries its Nats-Msg-Id and decodes with its conversation."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    request = requests_of(h)[-1]
    ((_subject, data, headers),) = outgoing([("agentops.llm.request", request, request.id)])
    assert headers["Nats-Msg-Id"] == request.id
    assert json.loads(data)["conversation"]["count"] == len(request.request.messages)
