"""Teams in the pure core (DESIGN §4c): a tech lead delegates to three types that work in its
workspace one after another; the parent waits and gets each child's result; cancel goes down
the tree; a child's spending counts toward the parent's budget; limits refuse delegation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.agents.loader import shipped_specs
from agentops.core.state import ToolResultItem
from agentops.llm.types import LLMRequest, LLMResult, ToolCall, Usage
from agentops.protocol.messages import CancelTask
from tests.harness import Harness

LEAD = "tech_lead"
TEAM = ("backend_developer", "frontend_developer", "devops_engineer")


def lead_spec(**changes: Any) -> AgentSpec:
    return replace(shipped_specs()[LEAD], **changes)


def team_harness(**changes: Any) -> Harness:
    h = Harness()
    h.specs[LEAD] = lead_spec(**changes)
    h.types = frozenset(h.specs)
    return h


def test_a_tech_lead_delegates_to_three_types_in_its_workspace() -> None:
    """tech_lead's mock run delegates API, page and deployment; each child ran in the lead's
    workspace (which holds all their files), and the lead completes with their summaries."""
    h = team_harness()
    task_id, agent_id = h.submit(LEAD, description="Build a todo app")
    h.run()
    lead = h.agents[agent_id]
    assert lead.status == "completed", lead.error
    record = h.tasks[task_id]
    assert len(record.children) == 3
    children = [h.tasks[c] for c in record.children]
    assert [c.agent_type for c in children] == list(TEAM)
    assert all(c.status == "completed" and c.parent is not None for c in children)
    assert all(c.workspace_id == task_id and c.depth == 1 for c in children)
    files = h.tools.files[task_id]
    assert {"api.py", "test_api.py", "index.html", "Dockerfile", "compose.yaml"} <= set(files)
    assert lead.result is not None
    assert all(c.task_id in lead.result.summary for c in children)
    results = [
        i for i in lead.thread if isinstance(i, ToolResultItem) and i.name == "delegate_task"
    ]
    assert [r.result["status"] for r in results] == ["completed"] * 3
    assert lead.waiting == {}


def test_cancel_of_the_parent_cancels_a_running_child() -> None:
    """Cancelling a task whose child runs cancels the child too."""
    h = team_harness()
    task_id, _ = h.submit(LEAD, description="Build a todo app")
    h.hold_llm = True
    h.run()
    h.release_llm()  # list_files
    h.run()
    h.release_llm()  # the delegation
    h.run()
    child = h.tasks[task_id].children[0]
    h.release_llm()
    h.run()
    assert h.tasks[child].status == "running"
    h.put("task", CancelTask(id="c1", task_id=task_id, ts=h.now()))
    h.run()
    assert h.tasks[task_id].status == "cancelled" and h.tasks[child].status == "cancelled"


def priced(request: LLMRequest) -> LLMResult:
    """The mock's answers, each costing $0.01."""
    from agentops.llm.mock import mock_reply

    result = mock_reply(request)
    return result.model_copy(
        update={"usage": Usage(input_tokens=10, output_tokens=1, cost_usd=0.01)}
    )


def test_a_child_over_the_parents_budget_asks_a_human() -> None:
    """A child gets what is left of its parent's budget; past it, it stops for a human."""
    h = team_harness(input_usd_per_mtok=1.0)
    h.llm = priced
    for name in TEAM:
        h.specs[name] = replace(h.specs[name], input_usd_per_mtok=1.0)
    task_id, agent_id = h.submit(LEAD, description="Build a todo app", budget_usd=0.035)
    h.run()
    child = h.tasks[task_id].children[0]
    child_agent = h.tasks[child].agent_id
    state = h.agents[child_agent]
    assert state.status == "awaiting_human"
    request = state.open_human_request()
    assert request is not None and request.reason == "budget"
    assert state.budget_usd is not None and state.budget_usd < 0.035
    assert h.agents[agent_id].status == "running" and h.agents[agent_id].waiting


def test_delegation_past_the_depth_limit_or_to_an_unknown_type_is_refused() -> None:
    """Past max_delegation_depth the call is refused at once; an unknown type is refused by
    the orchestrator; both come back as errors the model reads."""
    calls = [
        {"tool": "delegate_task", "args": {"agent_type": "qa_engineer", "description": "x"}},
    ]

    def llm(request: LLMRequest) -> LLMResult:
        i = request.metadata["call_index"]
        entry = calls[i] if i < len(calls) else {"tool": "complete_task", "args": {"summary": "ok"}}
        return LLMResult(
            tool_calls=(ToolCall(id=f"c{i}", name=entry["tool"], arguments=entry["args"]),)
        )

    h = team_harness()
    h.llm = llm
    _, agent_id = h.submit(LEAD)
    h.run()
    (unknown,) = [i for i in h.agents[agent_id].thread if isinstance(i, ToolResultItem)][:1]
    assert not unknown.ok and unknown.error is not None
    assert "no agent type 'qa_engineer'" in unknown.error.message
    deep = team_harness(max_delegation_depth=0)
    deep.llm = llm
    _, deep_agent = deep.submit(LEAD)
    deep.run()
    (refused,) = [i for i in deep.agents[deep_agent].thread if isinstance(i, ToolResultItem)][:1]
    assert refused.error is not None and refused.error.code == "delegation_refused"
    assert "limited to 0 levels" in refused.error.message
