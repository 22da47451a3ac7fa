"""Budget and context window, in the pure reducer: the agent asks before overspending, and
old tool output is compacted while the task, human answers and recent results stay whole."""

from __future__ import annotations

from dataclasses import replace
from operator import is_
from typing import Any

import pytest

from agentops.agents.loader import shipped_specs
from agentops.core.context import CHECKPOINT, KEEP_RECENT, fit
from agentops.llm.tokens import estimate_tokens, message_tokens, tools_tokens
from agentops.llm.types import LLMRequest, LLMResult, Message, ToolCall, Usage
from tests.harness import Harness

AGENT = "backend_developer"
CALL_COST = 0.01


def tool_llm(calls: list[dict[str, Any]], cost: float = CALL_COST) -> Any:
    """Plays one tool call per LLM call, then complete_task; every call costs `cost`."""

    def llm(request: LLMRequest) -> LLMResult:
        i = request.metadata["call_index"]
        entry = calls[i] if i < len(calls) else {"tool": "complete_task", "args": {"summary": "ok"}}
        usage = Usage(input_tokens=100, output_tokens=10, cost_usd=cost)
        call = ToolCall(id=f"c{i}", name=entry["tool"], arguments=entry["args"])
        return LLMResult(tool_calls=(call,), usage=usage)

    return llm


def priced_harness(llm: Any, **spec_changes: Any) -> Harness:
    h = Harness(llm=llm)
    # $0.5 per million input tokens: the first request (~2k tokens) is estimated at ~$0.001.
    h.specs[AGENT] = replace(
        shipped_specs()[AGENT], input_usd_per_mtok=0.5, output_usd_per_mtok=2.0, **spec_changes
    )
    return h


WRITES = [{"tool": "write_file", "args": {"path": f"f{i}.txt", "content": "x"}} for i in range(8)]


def test_a_call_that_would_exceed_the_budget_asks_a_human_first() -> None:
    """A call that could overspend waits for a human; a raised budget lets the run complete."""
    h = priced_harness(tool_llm(WRITES))
    task_id, agent_id = h.submit(AGENT, budget_usd=0.022)
    h.run()
    state = h.agents[agent_id]
    request = state.open_human_request()
    assert state.status == "awaiting_human" and request is not None
    assert request.reason == "budget"
    details = request.details or {}
    # Two calls fit ($0.02 spent); the third (~$0.005 estimated) would go over $0.022, so it was not made.
    assert len(h.llm_requests) == 2
    assert details["spent_usd"] == pytest.approx(0.02)
    assert details["spent_usd"] + details["next_call_estimate_usd"] > 0.022
    assert "budget.exceeded" in h.event_types(agent_id)
    assert h.tasks[task_id].status == "awaiting_human"

    h.answer(agent_id, {"budget_usd": 1.0})
    state = h.agents[agent_id]
    assert state.status == "completed"
    assert state.budget_usd == 1.0
    assert state.usage.cost_usd == pytest.approx(CALL_COST * len(h.llm_requests))
    assert h.tasks[task_id].usage.cost_usd == pytest.approx(state.usage.cost_usd)


def test_stop_at_the_budget_ends_the_task() -> None:
    """Answering the budget question with "stop" cancels agent and task as budget_exceeded."""
    h = priced_harness(tool_llm(WRITES))
    task_id, agent_id = h.submit(AGENT, budget_usd=0.015)
    h.run()
    h.answer(agent_id, {"stop": True, "comment": "too expensive"})
    state = h.agents[agent_id]
    assert state.status == "cancelled"
    assert state.error is not None and state.error.code == "budget_exceeded"
    assert "too expensive" in state.error.message
    assert h.tasks[task_id].status == "cancelled"


@pytest.mark.parametrize("bad", [{"approved": True}, "more please", {"budget_usd": 0.001}])
def test_an_answer_that_does_not_fit_the_budget_question_is_rejected(bad: Any) -> None:
    """An answer that is neither a higher budget nor a stop is rejected; the question stays open."""
    h = priced_harness(tool_llm(WRITES))
    _, agent_id = h.submit(AGENT, budget_usd=0.015)
    h.run()
    before = h.agents[agent_id]
    h.answer(agent_id, bad)
    after = h.agents[agent_id]
    assert after.status == "awaiting_human"
    assert after.open_human_request() == before.open_human_request()
    assert h.events[-1].type == "command.rejected"
    assert "budget" in h.events[-1].data["reason"]


def test_without_prices_a_budget_never_stops_the_run() -> None:
    """Without token prices even a tiny budget never stops the agent: the run completes."""
    h = Harness(llm=tool_llm(WRITES, cost=0.0))
    _, agent_id = h.submit(AGENT, budget_usd=0.0001)
    h.run()
    assert h.agents[agent_id].status == "completed"


BIG = "0123456789abcdef" * 1000  # 16 000 characters, ~5.3k estimated tokens


def test_old_tool_output_is_compacted_and_the_rest_stays_whole() -> None:
    """Old tool output is compacted to fit; the task, human answer and recent results stay whole."""
    reads = [{"tool": "read_file", "args": {"path": "big.txt"}} for _ in range(8)]
    reads.insert(3, {"tool": "request_human_input", "args": {"question": "Which one?"}})
    h = priced_harness(tool_llm(reads, cost=0.0), context_window=40_000)
    task_id, agent_id = h.submit(AGENT, description="Summarise big.txt " + "q" * 3000)
    h.tools.files[task_id] = {"big.txt": BIG}
    h.run()
    human_answer = "use the second " + "h" * 4000
    h.answer(agent_id, human_answer)
    assert h.agents[agent_id].status == "completed"

    spec = h.specs[AGENT]
    budget = (spec.context_window - spec.max_output_tokens) * 0.9
    last = h.llm_requests[-1].request
    assert last.metadata["estimated_input_tokens"] <= budget
    assert last.metadata["compacted_messages"] > 0
    sizes = sum(message_tokens(m) for m in last.messages) + tools_tokens(last.tools)
    assert sizes == last.metadata["estimated_input_tokens"]

    messages = last.messages
    assert messages[0].role == "system" and messages[0].content == spec.system_prompt
    assert messages[1].content.startswith("Task: Summarise big.txt " + "q" * 3000)
    reads_out = [m for m in messages if m.role == "tool" and m.name == "read_file"]
    human = [m for m in messages if m.role == "tool" and m.name == "request_human_input"]
    assert len(human) == 1 and human_answer in human[0].content
    for recent in reads_out[-KEEP_RECENT:]:
        assert BIG in recent.content
    # Older reads were cut or dropped (the note after the task says how many).
    assert any("[compacted:" in m.content for m in messages[2 : len(messages) - 2 * KEEP_RECENT])
    steps = [e for e in h.events if e.type == "agent.step"]
    assert steps[-1].data["context"]["compacted_messages"] > 0


def test_fit_leaves_a_request_that_fits_untouched() -> None:
    """fit returns a request within the context window unchanged, with nothing compacted."""
    messages = (Message(role="system", content="s"), Message(role="user", content="u" * 100))
    fitted = fit(messages, (), context_window=10_000, max_output_tokens=1000)
    assert fitted.messages == messages and fitted.compacted == 0
    assert fitted.estimated_tokens == sum(message_tokens(m) for m in messages)


def _turns(
    n: int, content: str = "y" * 3000, human_at: int | None = None, arguments: str = "x" * 300
) -> list[Message]:
    history = [Message(role="system", content="s"), Message(role="user", content="task")]
    for i in range(n):
        name = "request_human_input" if i == human_at else "read_file"
        call = ToolCall(id=f"{i}", name=name, arguments={"path": arguments})
        history.append(Message(role="assistant", content=f"turn {i}", tool_calls=(call,)))
        history.append(Message(role="tool", content=content, tool_call_id=f"{i}", name=name))
    return history


def test_fit_compacts_the_oldest_turns_first_and_keeps_pairs() -> None:
    """fit cuts, then marks, then drops the oldest turns (with a note); recent turns, human
    answers and call/result pairs stay."""
    history = _turns(10, human_at=1)
    fitted = fit(history, (), context_window=9000, max_output_tokens=1000)
    assert fitted.estimated_tokens <= 7200 and fitted.compacted > 0
    assert fitted.estimated_tokens == sum(message_tokens(m) for m in fitted.messages)
    tools = [m for m in fitted.messages if m.role == "tool"]
    assert all(m.content == "y" * 3000 for m in tools[-KEEP_RECENT:])
    # The turn the human answered in is never dropped and its answer never cut.
    human = [m for m in fitted.messages if m.name == "request_human_input"]
    assert [m.content for m in human] == ["y" * 3000]
    note = fitted.messages[2]
    assert note.role == "user" and note.content.startswith("[compacted: the ")
    # Every call is still followed by its result, as the providers require.
    calls = [c.id for m in fitted.messages for c in m.tool_calls]
    assert calls == [m.tool_call_id for m in fitted.messages if m.role == "tool"]


def test_fit_with_a_memo_is_the_same_as_fit_afresh() -> None:
    """fit for an agent (its plan kept between steps) returns what it returns afresh."""
    history = _turns(60, content="z" * 2500, human_at=7)
    for n in range(3, len(history) + 1):
        kept = fit(history[:n], (), context_window=12_000, max_output_tokens=1000, owner="a1")
        fresh = fit(history[:n], (), context_window=12_000, max_output_tokens=1000)
        assert kept == fresh


def test_a_growing_conversation_is_compacted_by_appending_between_checkpoints() -> None:
    """From one request to the next the fitted messages mostly extend the previous ones (the
    same objects), so a request can carry only what is new."""
    history = _turns(120, content="w" * 1500)
    previous: tuple[Message, ...] = ()
    replans = 0
    for n in range(4, len(history) + 1, 2):  # one more turn each time
        out = fit(
            history[:n], (), context_window=40_000, max_output_tokens=1000, owner="b"
        ).messages
        if previous and not (len(out) >= len(previous) and all(map(is_, out, previous))):
            replans += 1
        previous = out
    assert replans <= 120 // CHECKPOINT + 2


def test_estimate_is_an_upper_bound_on_bytes_over_three() -> None:
    """estimate_tokens is the text's UTF-8 byte count divided by three, rounded up."""
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("é" * 3) == 2  # 6 bytes
