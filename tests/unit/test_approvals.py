"""Approvals in the pure reducer: a call the policy holds waits for a human, exactly as asked;
approval sends it to the executor, rejection goes back to the model as the call's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from agentops.agents.loader import shipped_specs
from agentops.core.answers import BadAnswer, parse_answer
from tests.harness import Harness
from tests.unit.test_budget_and_context import tool_llm

AGENT = "devops_engineer"
BASH = {"tool": "execute_code", "args": {"language": "bash", "code": "rm -rf build"}}
PY = {"tool": "execute_code", "args": {"language": "python", "code": "print(1)"}}


def bash_needs_approval(tool: str, arguments: Mapping[str, Any]) -> str | None:
    if tool == "execute_code" and arguments.get("language") == "bash":
        return "devops bash needs approval"
    return None


def held(*calls: dict[str, Any]) -> tuple[Harness, str]:
    h = Harness(llm=tool_llm(list(calls), cost=0.0))
    h.specs[AGENT] = replace(shipped_specs()[AGENT], needs_approval=bash_needs_approval)
    _, agent_id = h.submit(AGENT)
    h.run()
    return h, agent_id


def test_a_held_call_waits_for_a_human_with_the_exact_call_shown() -> None:
    """A held bash call awaits approval showing the exact call and policy; the python one ran."""
    h, agent_id = held(PY, BASH)
    state = h.agents[agent_id]
    request = state.open_human_request()
    assert state.status == "awaiting_human" and request is not None
    assert request.reason == "approval"
    assert request.details == {
        "tool": "execute_code",
        "arguments": {"language": "bash", "code": "rm -rf build", "timeout": None},
        "policy": "devops bash needs approval",
    }
    # The python call ran; the bash one did not reach the executor.
    assert [c.arguments["language"] for c in h.tools.calls] == ["python"]
    shown = [e for e in h.events if e.type == "human.request"][-1]
    assert shown.data["details"]["arguments"]["code"] == "rm -rf build"


def test_approval_runs_the_call_and_the_loop_goes_on() -> None:
    """Approving a held call sends it to the executor, and the agent goes on to complete."""
    h, agent_id = held(BASH)
    h.answer(agent_id, {"approved": True, "comment": "fine"})
    assert [c.arguments["language"] for c in h.tools.calls] == ["bash"]
    assert h.agents[agent_id].status == "completed"


def test_rejection_is_the_tool_result_the_model_sees() -> None:
    """A rejected call never runs; the model's tool result is rejected_by_human with the comment."""
    h, agent_id = held(BASH)
    calls_before = len(h.llm_requests)
    h.answer(agent_id, {"approved": False, "comment": "not on prod"})
    assert h.tools.calls == []
    result = h.llm_requests[calls_before].request.messages[-1]
    assert result.role == "tool" and result.name == "execute_code"
    assert "rejected_by_human" in result.content and "not on prod" in result.content
    assert "refused to approve this execute_code call" in result.content
    assert h.agents[agent_id].status == "completed"


def test_approval_survives_redelivery_without_running_twice() -> None:
    """With every message redelivered, an approved call still runs once and the task completes."""
    h = Harness(llm=tool_llm([BASH], cost=0.0), redeliver=True)
    h.specs[AGENT] = replace(shipped_specs()[AGENT], needs_approval=bash_needs_approval)
    _, agent_id = h.submit(AGENT)
    h.run()
    h.answer(agent_id, {"approved": True})
    assert len(h.tools.calls) == 1
    assert h.agents[agent_id].status == "completed"


def test_a_free_text_answer_to_an_approval_is_rejected() -> None:
    """A free-text answer to an approval question is rejected, and the agent keeps waiting."""
    h, agent_id = held(BASH)
    h.answer(agent_id, "maybe later")
    assert h.agents[agent_id].status == "awaiting_human"
    assert h.events[-1].type == "command.rejected"
    assert "approved" in h.events[-1].data["reason"]


@pytest.mark.parametrize(
    ("response", "approved"),
    [({"approved": True}, True), ({"approved": False, "comment": "no"}, False)],
)
def test_approval_answers(response: Any, approved: bool) -> None:
    """{"approved": true} parses as an approval, {"approved": false, ...} as a rejection."""
    h, agent_id = held(BASH)
    request = h.agents[agent_id].open_human_request()
    assert request is not None
    answer = parse_answer(request, response)
    assert getattr(answer, "approved", None) is approved


@pytest.mark.parametrize("vague", ["ok", "sure", {"approved": "yes"}, {"approved": 1}, None])
def test_only_an_explicit_approval_counts(vague: Any) -> None:
    """Anything but an object with a boolean "approved" or a plain yes/no is a BadAnswer."""
    h, agent_id = held(BASH)
    request = h.agents[agent_id].open_human_request()
    assert request is not None
    with pytest.raises(BadAnswer, match="approved"):
        parse_answer(request, vague)


def test_approval_comment_must_be_text() -> None:
    """An approval whose comment is not a string is a BadAnswer naming the comment."""
    h, agent_id = held(BASH)
    request = h.agents[agent_id].open_human_request()
    assert request is not None
    with pytest.raises(BadAnswer, match="comment"):
        parse_answer(request, {"approved": True, "comment": 3})
