"""Stored and wire JSON: heads without threads, items written once, format-1 documents read,
and LLM requests built from reused parts; the documents are the models' own."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agentops.agents.loader import shipped_specs
from agentops.bus.connection import encode
from agentops.bus.conversation import forget_sent
from agentops.core import agent
from agentops.core.effects import EFFECTS_ADAPTER
from agentops.core.items import item_bytes
from agentops.core.state import AGENT_STATE_ADAPTER, AgentState
from agentops.protocol import subjects as s
from agentops.protocol.messages import WORK_ADAPTER, ConversationRef
from agentops.store.agents import FORMAT, AgentStore, decode_head, encode_head
from agentops.store.kv import CorruptDocument
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


TALLIES = (
    "description", "human_requests", "open_requests", "error_count", "llm_answers",
    "llm_errors", "tool_calls", "tool_results",
)  # fmt: skip


def test_head_round_trips_without_its_thread() -> None:
    """Every head of a run decodes to its state less the thread, with thread_len and format."""
    for state in states_of_a_run():
        data = encode_head(state)
        document = json.loads(data)
        assert document["thread"] is None and document["format"] == FORMAT
        assert document["thread_len"] == len(state.thread)
        head = decode_head(data, 7, state.agent_id)
        assert head.thread_len == len(state.thread) and head.revision == 7 and not head.legacy
        again = head.state.model_copy(update={"thread": state.thread})
        assert again.model_dump(exclude={"outbox"}) == state.model_dump(exclude={"outbox"})
        # What the head leaves out of the outbox (requests, tool arguments) is derived again.
        replayed = agent._replay(shipped_specs()[state.agent_type], again)
        assert EFFECTS_ADAPTER.dump_python(replayed, mode="json") == EFFECTS_ADAPTER.dump_python(
            state.outbox, mode="json"
        )


def test_a_head_does_not_grow_with_the_thread() -> None:
    """The head of the last state is about as large as the head of an early one."""
    states = states_of_a_run()
    first, last = encode_head(states[2]), encode_head(states[-1])
    thread_bytes = sum(len(item_bytes(i)) for i in states[-1].thread)
    assert len(last) < len(first) + 1500 < thread_bytes


def test_each_item_is_written_once_across_a_run() -> None:
    """Writing every state of a run over the previous one sends each thread item exactly once,
    as its model JSON, on its own subject."""
    written: dict[str, bytes] = {}
    stored = 0
    states = states_of_a_run()
    for state in states:
        for subject, data, _ in AgentStore.item_writes(state, stored):
            assert subject not in written
            written[subject] = data
        stored = len(state.thread)
    last = states[-1]
    assert [written[s.thread_item(last.agent_id, i)] for i in range(len(last.thread))] == [
        item.model_dump_json().encode() for item in last.thread
    ]


def test_tallies_kept_by_the_reducer_match_the_thread() -> None:
    """At every state of a run the counters equal what the thread says (`with_tallies`)."""
    for state in states_of_a_run():
        derived = state.with_tallies()
        assert {k: getattr(derived, k) for k in TALLIES} == {k: getattr(state, k) for k in TALLIES}


def test_a_format_1_document_is_read_with_its_tallies() -> None:
    """A state stored whole by the previous version reads as a legacy head with its tallies."""
    state = states_of_a_run()[-1]
    old = state.model_dump_json(exclude={*TALLIES, "outbox"}).encode()
    head = decode_head(old, 3, state.agent_id)
    assert head.legacy and head.thread_len == len(state.thread)
    assert head.state.thread == state.thread
    assert {k: getattr(head.state, k) for k in TALLIES} == {k: getattr(state, k) for k in TALLIES}


def test_an_older_reader_refuses_a_head() -> None:
    """The previous version's model cannot read a head as a state with an empty thread: it is
    refused at `thread` alone, which without the `"thread": null` guard it would read empty."""
    state = states_of_a_run()[-1]
    with pytest.raises(ValidationError) as refused:
        AGENT_STATE_ADAPTER.validate_json(encode_head(state))
    assert [error["loc"] for error in refused.value.errors()] == [("thread",)]
    unguarded = {k: v for k, v in json.loads(encode_head(state)).items() if k != "thread"}
    assert AGENT_STATE_ADAPTER.validate_python(unguarded).thread == () != state.thread


def test_a_head_of_a_newer_format_is_refused_naming_it() -> None:
    """A head of a format newer than this version's is a CorruptDocument naming the format
    and what to do, never a state."""
    state = states_of_a_run()[-1]
    newer = {**json.loads(encode_head(state)), "format": FORMAT + 1, "x_added_later": {"a": 1}}
    with pytest.raises(CorruptDocument, match=rf"format {FORMAT + 1}, newer .*upgrade every"):
        decode_head(json.dumps(newer).encode(), 5, state.agent_id)


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
    """An LLM request sent whole is the model's document less message defaults, plus the
    conversation it carries, and round-trips."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    _, agent_id = h.submit("backend_developer", budget_usd=10.0)
    h.run()
    assert len(h.llm_requests) > 3
    for request in h.llm_requests:
        forget_sent(agent_id)  # sent whole (a delta is `test_conversation_wire`'s)
        data = encode(request)
        document = json.loads(request.model_dump_json())
        sent = json.loads(data)
        ref = sent.pop("conversation")
        assert ref["base"] == 0 and ref["count"] == len(request.request.messages)
        document.pop("conversation")
        assert {**sent, "request": {**sent["request"], "messages": []}} == {
            **document,
            "request": {**document["request"], "messages": []},
        }
        # Messages leave out their default fields, and only those.
        assert _less_defaults(sent["request"]["messages"], document["request"]["messages"])
        decoded = WORK_ADAPTER.validate_json(data)
        assert decoded == request.model_copy(update={"conversation": ConversationRef(**ref)})
    last = h.llm_requests[-1]
    forget_sent(agent_id)
    sent, full = json.loads(encode(last)), json.loads(last.model_dump_json())
    messages = [json.dumps(doc["request"]["messages"]) for doc in (sent, full)]
    assert len(messages[0]) < 0.9 * len(messages[1])
