"""Workflows in the pure core (DESIGN §4c): stages run when what they depend on completed,
independent ones at once, each seeing the summaries it depends on; an approval gate waits for
a human; a refused gate or a failed stage ends the workflow and cancels what runs."""

from __future__ import annotations

from typing import Any

from agentops.protocol.messages import StageSpec, SubmitWorkflow, WorkflowAnswer
from tests.harness import Harness

WF = "wf_test"


def stage(
    sid: str, deps: tuple[str, ...] = (), approval: bool = False, **context: Any
) -> StageSpec:
    return StageSpec(id=sid, agent_type="backend_developer", description=f"stage {sid}",
                     context={"mock": {"script": []}, **context}, depends_on=deps,
                     approval=approval)  # fmt: skip


def submit(h: Harness, *stages: StageSpec) -> None:
    h.put("task", SubmitWorkflow(id=f"{WF}.submit", task_id=WF, ts=h.now(), stages=stages))
    h.run()


def started(h: Harness) -> list[str]:
    return [e.data["stage_id"] for e in h.events if e.type == "workflow.stage_started"]


def answer(h: Harness, stage_id: str, approved: bool) -> None:
    h.put("task", WorkflowAnswer(id=f"{WF}.gate.{stage_id}", task_id=WF, ts=h.now(),
                                 stage_id=stage_id, approved=approved))  # fmt: skip
    h.run()


def test_a_diamond_runs_in_order_and_the_gate_waits_for_a_human() -> None:
    """a, then b and c together, then (after approval) d with b's and c's summaries."""
    h = Harness()
    submit(h, stage("a"), stage("b", ("a",)), stage("c", ("a",)), stage("d", ("b", "c"), True))
    record = h.workflows[WF]
    assert record.status == "awaiting_human" and record.gate == "d"
    assert started(h)[0] == "a" and sorted(started(h)[1:]) == ["b", "c"]
    assert [s.status for s in record.stages] == ["completed", "completed", "completed", "pending"]
    answer(h, "d", True)
    record = h.workflows[WF]
    assert record.status == "completed" and started(h)[-1] == "d"
    d_task = h.tasks["task_test-d"]
    assert set(d_task.context["depends_on"]) == {"b", "c"}
    assert all(h.tasks[f"task_test-{x}"].workspace_id == WF for x in "abcd")
    types = [e.type for e in h.events if e.task_id == WF]
    assert types[0] == "workflow.created" and types[-1] == "workflow.completed"
    assert "workflow.awaiting_approval" in types


def test_a_refused_gate_cancels_the_rest() -> None:
    """Refusing b's gate cancels b, cancels c that runs, skips d: the workflow is cancelled."""
    h = Harness(hold_llm=True)
    submit(h, stage("a"), stage("b", ("a",), True), stage("c", ("a",)), stage("d", ("b", "c")))
    h.release_llm()
    h.run()
    assert h.workflows[WF].gate == "b"
    assert h.tasks["task_test-c"].status == "running"
    answer(h, "b", False)
    h.release_llm()
    h.run()
    record = h.workflows[WF]
    assert record.status == "cancelled"
    assert [s.status for s in record.stages] == ["completed", "cancelled", "cancelled", "skipped"]
    assert h.tasks["task_test-c"].status == "cancelled"


def test_a_failed_stage_fails_the_workflow_and_cancels_what_runs() -> None:
    """A stage that fails (max_steps) fails the workflow; its running sibling is cancelled and
    the stage that depended on it is skipped."""
    h = Harness(hold_llm=True)
    loop = {"mock": {"script": [{"text": "thinking"}] * 5}}
    failing = StageSpec(id="f", agent_type="backend_developer", description="x", context=loop)
    h.put("task", SubmitWorkflow(id=f"{WF}.submit", task_id=WF, ts=h.now(),
                                 stages=(failing, stage("slow"), stage("after", ("f",)))))  # fmt: skip
    h.run()
    h.tasks["task_test-f"] = h.tasks["task_test-f"].model_copy(update={"max_steps": 2})
    agent_f = h.tasks["task_test-f"].agent_id
    h.agents[agent_f] = h.agents[agent_f].model_copy(update={"max_steps": 2})
    while h.held and h.workflows[WF].status not in ("failed", "completed"):
        held, h.held = h.held, []
        for msg in held:  # answer only the failing stage's calls; `slow` stays running
            if msg.task_id == "task_test-f":
                h._answer_llm(msg)
            else:
                h.held.append(msg)
        h.run()
        if all(m.task_id != "task_test-f" for m in h.held):
            break
    record = h.workflows[WF]
    assert record.status == "failed" and record.error is not None
    assert [s.status for s in record.stages] == ["failed", "cancelled", "skipped"]
    assert h.tasks["task_test-slow"].status == "cancelled"
