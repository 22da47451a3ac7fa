"""Long runs in the pure core (DESIGN §4a): items that do not fit one message are cut or
refused, events stay small, a failed message ends agent and task with `internal_error`, a
finished task can be marked for deletion, and a long run's step costs what it adds."""

from __future__ import annotations

import json
from typing import Any

from agentops.core import orchestrator
from agentops.core.items import MAX_EVENT_BYTES, MAX_ITEM_BYTES, item_bytes
from agentops.core.state import AssistantItem, ToolResultItem
from agentops.llm.types import LLMRequest, LLMResult, ToolCall
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import AgentReport, DeleteTask, FailAgent, FailTask, TaskMessage
from tests.harness import Harness
from tests.unit.test_budget_and_context import AGENT, tool_llm

HUGE = "x" * (3 * MAX_ITEM_BYTES)


def huge_results(h: Harness) -> None:
    """The harness's executor answers every read with a 3 MB string."""
    inner = h.tools

    def tools(msg: Any) -> Any:
        if msg.name == "read_file":
            return True, {"path": msg.arguments["path"], "content": HUGE}, None
        return inner(msg)

    h.tools = tools  # type: ignore[assignment]


def test_a_tool_result_too_large_for_a_message_is_cut_with_a_marker() -> None:
    """A 3 MB tool result is stored cut to one message, saying how much was left out; the
    tool.result event carries a small preview."""
    h = Harness(llm=tool_llm([{"tool": "read_file", "args": {"path": "big"}}]))
    huge_results(h)
    _, agent_id = h.submit(AGENT)
    h.run()
    state = h.agents[agent_id]
    assert state.status == "completed"
    (result,) = [i for i in state.thread if isinstance(i, ToolResultItem)]
    assert len(item_bytes(result)) <= MAX_ITEM_BYTES
    content = result.result["content"]
    assert "more characters]" in content and len(content) < len(HUGE)
    (event,) = [e for e in h.events if e.type == "tool.result"]
    assert len(json.dumps(event.data)) <= MAX_EVENT_BYTES


def test_oversized_tool_arguments_are_refused_not_cut() -> None:
    """A write_file whose content does not fit one message never runs: the model reads an
    invalid_arguments error saying to write in parts."""
    big_write = {"tool": "write_file", "args": {"path": "big.txt", "content": HUGE}}
    h = Harness(llm=tool_llm([big_write]))
    _, agent_id = h.submit(AGENT)
    h.run()
    state = h.agents[agent_id]
    assert not h.tools.calls, "a truncated write must never reach the executor"
    assistant = next(i for i in state.thread if isinstance(i, AssistantItem))
    assert len(item_bytes(assistant)) <= MAX_ITEM_BYTES
    (result,) = [i for i in state.thread if isinstance(i, ToolResultItem)]
    assert not result.ok and result.error is not None
    assert result.error.code == "invalid_arguments" and "mode='append'" in result.error.message


def test_fail_agent_ends_the_agent_and_its_task_with_internal_error() -> None:
    """FailAgent fails a running agent; its report fails the task, and task.failed says why."""
    h = Harness(llm=tool_llm([{"tool": "write_file", "args": {"path": "a", "content": "a"}}]))
    h.hold_llm = True
    task_id, agent_id = h.submit(AGENT)
    h.run()
    error = ErrorInfo(code="internal_error", message="a message could not be applied")
    state = h.agents[agent_id]
    h.send(FailAgent(id="f1", task_id=task_id, agent_id=agent_id, ts=state.updated_at, error=error))
    h.run()
    assert h.agents[agent_id].status == "failed" and h.tasks[task_id].status == "failed"
    (failed,) = [e for e in h.events if e.type == "task.failed"]
    assert failed.data["reason"] == "internal_error"
    assert failed.data["error"]["code"] == "internal_error"


def test_fail_task_ends_a_task_whose_inbox_failed_and_fails_its_agent() -> None:
    """FailTask (the orchestrator could not apply a message) ends the task and its agent."""
    h = Harness(llm=tool_llm([]))
    h.hold_llm = True
    task_id, agent_id = h.submit(AGENT)
    h.run()
    error = ErrorInfo(code="internal_error", message="a report could not be applied")
    h.put("task", FailTask(id="t1", task_id=task_id, ts=h.now(), error=error))
    h.run()
    assert h.tasks[task_id].status == "failed" and h.agents[agent_id].status == "failed"
    assert [e.data["reason"] for e in h.events if e.type == "task.failed"] == ["internal_error"]
    # Failing it again, or a task that does not exist, changes nothing.
    again = orchestrator.step(
        h.tasks[task_id], FailTask(id="t2", task_id=task_id, ts=h.now(), error=error), h.now()
    )
    missing = orchestrator.step(
        None, FailTask(id="t3", task_id="task_x", ts=h.now(), error=error), h.now()
    )
    assert again.ignored and missing.ignored


def test_only_a_finished_task_is_marked_for_deletion() -> None:
    """DeleteTask marks a finished task `deleting`; a running one is left alone."""
    h = Harness(llm=tool_llm([]))
    h.hold_llm = True
    task_id, _ = h.submit(AGENT)
    h.run()
    delete = DeleteTask(id="d1", task_id=task_id, ts=h.now())
    assert orchestrator.step(h.tasks[task_id], delete, h.now()).ignored == "task is running"
    h.release_llm()
    h.run()
    assert h.tasks[task_id].status == "completed"
    decision = orchestrator.step(h.tasks[task_id], delete, h.now())
    assert decision.state is not None and decision.state.deleting
    assert orchestrator.step(None, delete, h.now()).ignored == "no such task"


def test_a_long_run_renders_each_item_once() -> None:
    """Over a 300-step run the items rendered into messages are each rendered once: a step
    costs what it adds, not the thread."""
    from agentops.core import render

    rendered: list[object] = []
    original = render._render_item

    def counting(item: Any, *rest: Any) -> Any:
        rendered.append(item)
        return original(item, *rest)

    render._render_item = counting  # type: ignore[assignment]
    try:
        writes = [
            {"tool": "write_file", "args": {"path": "log", "content": f"{i}\n", "mode": "append"}}
            for i in range(300)
        ]
        h = Harness(llm=long_llm(writes))
        _, agent_id = h.submit(AGENT, max_steps=400)
        h.run()
    finally:
        render._render_item = original  # type: ignore[assignment]
    state = h.agents[agent_id]
    assert state.status == "completed"
    assert len(rendered) == len(state.thread) - 1  # every item but the last answer's result
    assert len({id(i) for i in rendered}) == len(rendered)


def long_llm(calls: list[dict[str, Any]]) -> Any:
    """tool_llm with ids unique over a long run (the mock's own `call_<index>_<i>` form)."""
    inner = tool_llm(calls)

    def llm(request: LLMRequest) -> LLMResult:
        result: LLMResult = inner(request)
        i = request.metadata["call_index"]
        calls_ = tuple(
            ToolCall(id=f"call_{i}_{n}", name=c.name, arguments=c.arguments)
            for n, c in enumerate(result.tool_calls)
        )
        return result.model_copy(update={"tool_calls": calls_})

    return llm


def message(h: Harness, task_id: str, text: str, **context: Any) -> None:
    h.put(
        "task",
        TaskMessage(id=f"{task_id}.msg{len(h.published)}", task_id=task_id, ts=h.now(),
                    message=text, context=context),
    )  # fmt: skip
    h.run()


def test_a_follow_up_runs_a_finished_task_again_with_its_whole_thread() -> None:
    """A message to a completed task starts run 2: task.resumed, the same agent and thread,
    steps and ids going on, max_steps counted from the run's start, the model seeing run 1."""
    h = Harness(llm=tool_llm([{"tool": "write_file", "args": {"path": "a", "content": "1"}}]))
    task_id, agent_id = h.submit(AGENT, max_steps=3)
    h.run()
    first = h.agents[agent_id]
    assert first.status == "completed" and h.tasks[task_id].status == "completed"
    requests_before = len(h.llm_requests)
    message(h, task_id, "now add tests")
    state, record = h.agents[agent_id], h.tasks[task_id]
    assert record.run == 2 and state.run == 2 and record.status == "completed"
    assert "task.resumed" in h.event_types() and h.event_types().count("task.completed") == 2
    assert state.step > first.step and state.run_start_step == first.step
    follow_up = h.llm_requests[requests_before].request
    contents = [m.content for m in follow_up.messages]
    assert "Follow-up: now add tests" in contents
    assert len(follow_up.messages) > len(h.llm_requests[requests_before - 1].request.messages)
    assert follow_up.metadata["run_call_index"] == 0
    ids = [e.id for e in h.events]
    assert len(ids) == len(set(ids)), "an event id repeated across runs"
    commits = sorted(
        m for m in h.published if m.startswith(f"{task_id}.commit") and not m.endswith(".result")
    )
    assert commits == [f"{task_id}.commit", f"{task_id}.commit.r2"]


def test_a_message_to_a_running_task_reaches_its_next_llm_call() -> None:
    """Steering: a message while the agent waits for the model is in the next request."""
    writes = [{"tool": "write_file", "args": {"path": f"f{i}", "content": "x"}} for i in range(3)]
    h = Harness(llm=tool_llm(writes), hold_llm=True)
    task_id, agent_id = h.submit(AGENT)
    h.run()
    message(h, task_id, "use tabs, not spaces")
    assert h.tasks[task_id].run == 1
    h.release_llm()
    h.run()
    h.release_llm()
    h.run()
    later = h.llm_requests[-1].request
    assert any(m.role == "user" and m.content == "use tabs, not spaces" for m in later.messages)
    kinds = [i.kind for i in h.agents[agent_id].thread]
    assert "user_message" in kinds


def test_reports_of_an_earlier_run_are_ignored() -> None:
    """A report of run 1 arriving during run 2 does not end the task."""
    h = Harness(llm=tool_llm([]))
    task_id, agent_id = h.submit(AGENT)
    h.run()
    message(h, task_id, "again")
    record = h.tasks[task_id]
    late = AgentReport(
        id="late", task_id=task_id, agent_id=agent_id, ts=h.now(), agent_type=AGENT, run=1,
        status="failed",
    )  # fmt: skip
    assert orchestrator.step(record, late, h.now()).ignored == "a report of an earlier run"
