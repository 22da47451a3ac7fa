"""The agent state's stored JSON: thread items serialised once, the document unchanged."""

from __future__ import annotations

import json

from agentops.core.agent import STATE_EXCLUDE
from agentops.core.state import AGENT_STATE_ADAPTER, AgentState
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
    encode = ThreadEncoder()
    for state in states_of_a_run():
        data = encode(state)
        assert json.loads(data) == json.loads(state.model_dump_json(exclude=STATE_EXCLUDE))
        again = AGENT_STATE_ADAPTER.validate_json(data)
        assert again.thread == state.thread and again.usage == state.usage


def test_items_are_serialised_once_and_the_cache_is_bounded() -> None:
    encode = ThreadEncoder(limit=10)
    states = states_of_a_run()
    for state in states:
        encode(state)
        assert len(encode._item) <= 10
    final = states[-1]
    assert len(final.thread) > 10
    # Only the newest items are still cached, and what is cached is the item's own JSON.
    for item_id, (item, data) in encode._item._entries.items():
        assert id(item) == item_id and data == item.model_dump_json().encode()
