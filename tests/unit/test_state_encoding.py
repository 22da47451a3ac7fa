"""Stored and wire JSON built from reused parts (thread items, conversations): the documents
are the models' own."""

from __future__ import annotations

import json

from agentops.bus.connection import encode
from agentops.core.agent import STATE_EXCLUDE
from agentops.core.state import AGENT_STATE_ADAPTER, AgentState
from agentops.protocol.messages import WORK_ADAPTER
from agentops.store.kv import ThreadEncoder
from tests.harness import Harness
from tests.unit.test_budget_and_context import WRITES, tool_llm


def states_of_a_run() -> list[AgentState]:
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    _, agent_id = h.submit("backend_developer", budget_usd=10.0)
    seen: list[AgentState] = []
    while h.queue:
        target, msg = h.queue.popleft()
        h._deliver(target, msg)
        if agent_id in h.agents and (not seen or seen[-1] is not h.agents[agent_id]):
            seen.append(h.agents[agent_id])
    assert seen[-1].status == "completed"
    return seen


def test_encoded_state_is_the_model_json_and_round_trips() -> None:
    """Every state of a run encodes to the model's own JSON and decodes back to the same state."""
    encode = ThreadEncoder()
    for state in states_of_a_run():
        data = encode(state)
        assert json.loads(data) == json.loads(state.model_dump_json(exclude=STATE_EXCLUDE))
        again = AGENT_STATE_ADAPTER.validate_json(data)
        assert again.thread == state.thread and again.usage == state.usage


def test_each_item_is_serialised_once_across_a_run() -> None:
    """Encoding every state of a run serialises each thread item exactly once."""
    # A write encodes only the items appended since the agent's previous write.
    encode = ThreadEncoder()
    calls: list[object] = []
    inner = encode._items.fn
    encode._items.fn = lambda item: calls.append(item) or inner(item)  # type: ignore[method-assign,func-returns-value]
    states = states_of_a_run()
    for state in states:
        encode(state)
    assert len(calls) == len(states[-1].thread)
    assert all(a is b for a, b in zip(calls, states[-1].thread, strict=True))


def _less_defaults(short: object, full: object) -> bool:
    """`short` is `full` with some object fields left out, each an empty default."""
    if isinstance(full, dict) and isinstance(short, dict):
        return short.keys() <= full.keys() and all(
            _less_defaults(short[k], v) if k in short else v in ("", [], {}, None)
            for k, v in full.items()
        )
    if isinstance(full, list) and isinstance(short, list):
        return len(short) == len(full) and all(map(_less_defaults, short, full))
    return short == full


def test_llm_requests_encode_to_the_model_json_and_round_trip() -> None:
    """An LLM request's wire JSON is the model's document less message defaults, and round-trips."""
    # The conversation and tool schemas are reused from the agent's previous requests.
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit("backend_developer", budget_usd=10.0)
    h.run()
    assert len(h.llm_requests) > 3
    for request in h.llm_requests:
        data = encode(request)
        document = json.loads(request.model_dump_json())
        sent = json.loads(data)
        assert {**sent, "request": {**sent["request"], "messages": []}} == {
            **document,
            "request": {**document["request"], "messages": []},
        }
        # Messages leave out their default fields, and only those.
        assert _less_defaults(sent["request"]["messages"], document["request"]["messages"])
        assert WORK_ADAPTER.validate_json(data) == request
    last = h.llm_requests[-1]
    sent, full = json.loads(encode(last)), json.loads(last.model_dump_json())
    messages = [json.dumps(doc["request"]["messages"]) for doc in (sent, full)]
    assert len(messages[0]) < 0.9 * len(messages[1])
