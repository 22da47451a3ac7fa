"""Plugin tools in the pure reducer: offered to the model while the spec lists them, sent to
the executor with their raw arguments, and unknown again once the plugin is gone."""

from __future__ import annotations

from dataclasses import replace

from agentops.agents.loader import shipped_specs
from agentops.llm.types import ToolSchema
from tests.harness import Harness
from tests.unit.test_budget_and_context import tool_llm

AGENT = "backend_developer"
WORD_COUNT = ToolSchema(
    name="word_count",
    description="Count words",
    parameters={"type": "object", "properties": {"text": {"type": "string"}}},
)
CALL = {"tool": "word_count", "args": {"text": "a b c"}}


def test_a_plugin_tool_is_offered_and_sent_to_the_executor() -> None:
    """A plugin tool in the spec is offered to the model; its call goes to the executor as is."""
    h = Harness(llm=tool_llm([CALL], cost=0.0))
    h.specs[AGENT] = replace(shipped_specs()[AGENT], plugin_tools=(WORD_COUNT,))
    h.submit(AGENT)
    h.run()
    assert WORD_COUNT in h.llm_requests[0].request.tools
    [sent] = h.tools.calls
    assert (sent.name, sent.arguments, sent.idempotent) == ("word_count", {"text": "a b c"}, False)


def test_without_the_plugin_the_call_is_an_unknown_tool_error() -> None:
    """Without the plugin, a call to its tool is an "unknown tool" error and the run completes."""
    h = Harness(llm=tool_llm([CALL], cost=0.0))
    _, agent_id = h.submit(AGENT)
    h.run()
    assert h.tools.calls == []
    result = next(e for e in h.events if e.type == "tool.result")
    assert result.data["error"]["code"] == "invalid_arguments"
    assert "unknown tool 'word_count'" in result.data["error"]["message"]
    assert h.agents[agent_id].status == "completed"
