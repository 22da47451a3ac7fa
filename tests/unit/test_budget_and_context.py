"""Budget and context window, in the pure reducer: the agent asks before overspending, and
old tool output is compacted while the task, human answers and recent results stay whole."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agentops.agents.definitions import AGENT_SPECS
from agentops.core.context import KEEP_RECENT, fit
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
        AGENT_SPECS[AGENT], input_usd_per_mtok=0.5, output_usd_per_mtok=2.0, **spec_changes
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
    assert any("[compacted:" in m.content for m in reads_out[:-KEEP_RECENT])
    steps = [e for e in h.events if e.type == "agent.step"]
    assert steps[-1].data["context"]["compacted_messages"] > 0


def test_fit_leaves_a_request_that_fits_untouched() -> None:
    """fit returns a request within the context window unchanged, with nothing compacted."""
    messages = (Message(role="system", content="s"), Message(role="user", content="u" * 100))
    fitted = fit(messages, (), context_window=10_000, max_output_tokens=1000)
    assert fitted.messages == messages and fitted.compacted == 0
    assert fitted.estimated_tokens == sum(message_tokens(m) for m in messages)


def test_fit_replaces_old_output_with_a_marker_when_cutting_is_not_enough() -> None:
    """fit replaces old tool output with a [compacted: …] marker; recent results and pairs stay."""
    call = ToolCall(id="a", name="read_file", arguments={"path": "x"})
    history = [Message(role="system", content="s"), Message(role="user", content="task")]
    for i in range(10):
        history.append(
            Message(role="assistant", tool_calls=(call.model_copy(update={"id": f"{i}"}),))
        )
        history.append(
            Message(role="tool", content="y" * 3000, tool_call_id=f"{i}", name="read_file")
        )
    fitted = fit(history, (), context_window=6000, max_output_tokens=1000)
    assert fitted.estimated_tokens <= 4500
    tools = [m for m in fitted.messages if m.role == "tool"]
    assert all(m.content == "y" * 3000 for m in tools[-KEEP_RECENT:])
    assert tools[0].content.startswith("[compacted: 3000 older characters")
    # Every call is still followed by its result, as the providers require.
    ids = [m.tool_call_id for m in fitted.messages if m.role == "tool"]
    assert ids == [str(i) for i in range(10)]


def test_estimate_is_an_upper_bound_on_bytes_over_three() -> None:
    """estimate_tokens is the text's UTF-8 byte count divided by three, rounded up."""
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("é" * 3) == 2  # 6 bytes
