"""The agent and orchestrator reducers, driven in memory through the harness."""

from __future__ import annotations

from typing import Any

import pytest

from agentops.agents.loader import shipped_specs
from agentops.core.render import render_messages
from agentops.core.state import HumanResponseItem, ToolResultItem
from agentops.llm.types import LLMRequest, LLMResult, ToolCall
from agentops.protocol.errors import AgentOpsError, ErrorInfo
from agentops.protocol.messages import HumanResponse, PauseAgent, ResumeAgent
from tests.harness import Harness


class LLMDown(AgentOpsError):
    code = "server_error"
    retryable = True


def scripted(*entries: dict[str, Any]) -> Any:
    """An LLM that plays one entry per call (by call_index), then completes the task."""

    def llm(request: LLMRequest) -> LLMResult:
        i = request.metadata["call_index"]
        entry = (
            entries[i]
            if i < len(entries)
            else {"tool": "complete_task", "args": {"summary": "done"}}
        )
        if "error" in entry:
            raise LLMDown(entry["error"])
        if "text" in entry:
            return LLMResult(text=entry["text"])
        calls = entry.get("tools", [entry])
        return LLMResult(
            tool_calls=tuple(
                ToolCall(id=f"c{i}_{j}", name=c["tool"], arguments=c.get("args", {}))
                for j, c in enumerate(calls)
            )
        )

    return llm


WRITE = {"tool": "write_file", "args": {"path": "a.txt", "content": "hi"}}
ASK = {"tool": "request_human_input", "args": {"question": "Which database?"}}


def run(*entries: dict[str, Any], **kw: Any) -> tuple[Harness, str, str]:
    h = Harness(llm=scripted(*entries), **kw)
    task_id, agent_id = h.submit("backend_developer", max_steps=kw.pop("max_steps", None))
    h.run()
    return h, task_id, agent_id


def test_scripted_run_writes_files_and_completes() -> None:
    """Tool calls reach the executor, then complete_task finishes agent and task."""
    h, task_id, agent_id = run(WRITE, {"tool": "read_file", "args": {"path": "a.txt"}})
    state = h.agents[agent_id]
    assert state.status == "completed"
    assert state.result is not None and state.result.summary == "done"
    assert h.tools.files[task_id] == {"a.txt": "hi"}
    reads = [i for i in state.thread if isinstance(i, ToolResultItem) and i.name == "read_file"]
    assert reads[0].result["content"] == "hi"
    assert h.tasks[task_id].status == "completed"
    assert h.event_types(agent_id)[-1] == "task.completed"
    assert [e.type for e in h.events].count("agent.step") == 3


def test_invalid_arguments_go_back_to_the_model() -> None:
    """A call with a missing argument is not run; the model sees the validation error."""
    h, _, agent_id = run({"tool": "write_file", "args": {"path": "x"}})
    state = h.agents[agent_id]
    bad = next(i for i in state.thread if isinstance(i, ToolResultItem))
    assert not bad.ok and bad.error is not None and bad.error.code == "invalid_arguments"
    assert "content" in bad.error.message
    assert h.tools.calls == []
    second_request = h.llm_requests[1].request
    assert second_request.messages[-1].role == "tool"
    assert "invalid_arguments" in second_request.messages[-1].content
    assert state.status == "completed"


def test_unknown_tool_and_invented_argument_are_errors() -> None:
    """Unknown tools and extra arguments are refused, not silently dropped."""
    h, _, agent_id = run(
        {"tool": "rm_rf", "args": {}},
        {"tool": "read_file", "args": {"path": "a", "sneaky": True}},
    )
    errors = [i.error for i in h.agents[agent_id].thread if isinstance(i, ToolResultItem)]
    assert errors[0] is not None and "unknown tool 'rm_rf'" in errors[0].message
    assert errors[1] is not None and "sneaky" in errors[1].message


def test_max_steps_without_complete_task_fails() -> None:
    """A run that uses up max_steps without complete_task ends failed, not completed."""
    h = Harness(llm=scripted(*[WRITE] * 10))
    task_id, agent_id = h.submit("backend_developer", max_steps=3)
    h.run()
    state = h.agents[agent_id]
    assert state.status == "failed"
    assert state.error is not None and state.error.code == "max_steps"
    assert len(h.llm_requests) == 3
    assert h.tasks[task_id].status == "failed"
    assert h.event_types()[-1] == "task.failed"


def test_three_consecutive_errors_escalate_to_a_human() -> None:
    """Three LLM errors in a row ask a human instead of looping; the answer resumes the run."""
    h, _, agent_id = run({"error": "a"}, {"error": "b"}, {"error": "c"}, WRITE)
    state = h.agents[agent_id]
    assert state.status == "awaiting_human"
    request = state.open_human_request()
    assert request is not None and request.reason == "escalation"
    assert len(h.llm_requests) == 3
    h.send(
        HumanResponse(
            id="r1", task_id=state.task_id, agent_id=agent_id, ts=h.now(), response="try again"
        )
    )
    h.run()
    state = h.agents[agent_id]
    assert state.status == "completed"
    assert any(
        m.content == 'Guidance from a human: "try again"'
        for m in h.llm_requests[3].request.messages
    )


def test_tool_errors_count_towards_escalation() -> None:
    """Invalid tool calls are errors too: three in a row escalate."""
    bad = {"tool": "read_file", "args": {}}
    h, _, agent_id = run(bad, bad, bad)
    assert h.agents[agent_id].status == "awaiting_human"


def test_human_answer_is_the_tool_result_in_the_next_request() -> None:
    """request_human_input waits; the answer is given to the model as that call's result."""
    h, _, agent_id = run(ASK)
    state = h.agents[agent_id]
    assert state.status == "awaiting_human"
    assert "human.request" in h.event_types(agent_id)
    asked = state.open_human_request()
    assert asked is not None and asked.question == "Which database?"
    calls_before = len(h.llm_requests)
    h.send(
        HumanResponse(
            id="r",
            task_id=state.task_id,
            agent_id=agent_id,
            ts=h.now(),
            response={"db": "postgres"},
            request_id=asked.request_id,
        )
    )
    h.run()
    next_request = h.llm_requests[calls_before].request
    tool_msg = next_request.messages[-1]
    assert tool_msg.role == "tool" and tool_msg.tool_call_id == asked.call_id
    assert '"postgres"' in tool_msg.content
    assert h.agents[agent_id].status == "completed"


def test_human_response_in_wrong_state_is_rejected() -> None:
    """A response while not awaiting a human changes nothing but a rejection event."""
    h, _, agent_id = run()
    before = h.agents[agent_id]
    h.send(
        HumanResponse(
            id="late", task_id=before.task_id, agent_id=agent_id, ts=h.now(), response="x"
        )
    )
    h.run()
    after = h.agents[agent_id]
    assert after.status == "completed"
    assert not any(isinstance(i, HumanResponseItem) for i in after.thread)
    assert h.events[-1].type == "command.rejected"


def test_pause_holds_the_loop_and_resume_continues() -> None:
    """While paused no LLM or tool call goes out; resume continues where it stopped."""
    h = Harness(llm=scripted(WRITE, WRITE), hold_llm=True)
    task_id, agent_id = h.submit("backend_developer")
    h.run()
    assert len(h.held) == 1
    h.send(PauseAgent(id="p", task_id=task_id, agent_id=agent_id, ts=h.now()))
    h.run()
    assert h.agents[agent_id].status == "paused"
    h.hold_llm = False
    h.release_llm()  # the in-flight answer arrives while paused
    h.run()
    state = h.agents[agent_id]
    assert state.status == "paused"
    assert h.tools.calls == [] and len(h.llm_requests) == 1
    assert h.tasks[task_id].status == "paused"
    h.send(ResumeAgent(id="r", task_id=task_id, agent_id=agent_id, ts=h.now()))
    h.run()
    assert h.agents[agent_id].status == "completed"
    assert len(h.tools.calls) == 2


def test_redelivered_messages_run_nothing_twice() -> None:
    """Every message delivered twice: same outcome, each step and tool call exactly once."""
    entries = (WRITE, {"tool": "execute_code", "args": {"language": "bash", "code": "ls"}})
    once, _, _a1 = run(*entries)
    twice, _, a2 = run(*entries, redeliver=True)
    assert len(twice.tools.calls) == len(once.tools.calls) == 2
    assert len(twice.llm_requests) == len(once.llm_requests) == 3
    assert twice.agents[a2].status == "completed"
    assert [e.type for e in twice.events] == [e.type for e in once.events]
    steps = [e.data["step"] for e in twice.events if e.type == "agent.step"]
    assert steps == sorted(set(steps))


def test_cancel_ends_run_and_ignores_late_results() -> None:
    """Cancelling a running task stops it; the late LLM answer is ignored."""
    from agentops.protocol.messages import CancelTask

    h = Harness(llm=scripted(WRITE), hold_llm=True)
    task_id, agent_id = h.submit("backend_developer")
    h.run()
    h.put("task", CancelTask(id="c", task_id=task_id, ts=h.now()))
    h.run()
    assert h.agents[agent_id].status == "cancelled"
    h.release_llm()
    h.run()
    assert h.tools.calls == []
    assert h.tasks[task_id].status == "cancelled"
    assert h.event_types()[-1] == "task.cancelled"


def test_parallel_tool_calls_wait_for_all_results() -> None:
    """Two calls in one answer both run before the next LLM call."""
    h, task_id, _ = run(
        {"tools": [WRITE, {"tool": "write_file", "args": {"path": "b.txt", "content": "b"}}]}
    )
    assert set(h.tools.files[task_id]) == {"a.txt", "b.txt"}
    assert len(h.llm_requests) == 2
    assert [m.role for m in h.llm_requests[1].request.messages][-3:] == [
        "assistant",
        "tool",
        "tool",
    ]


def test_render_hides_mock_steering_and_includes_context() -> None:
    """The prompt shows the task's context but not the mock LLM's script."""
    h = Harness(llm=scripted())
    _, agent_id = h.submit(
        "devops_engineer", "Ship it", context={"repo": "x", "mock": {"script": []}}
    )
    h.run()
    messages = render_messages(shipped_specs()["devops_engineer"], h.agents[agent_id])
    assert messages[0].role == "system" and "DevOps" in messages[0].content
    assert '"repo": "x"' in messages[1].content and "script" not in messages[1].content


@pytest.mark.parametrize(
    "agent_type", ["backend_developer", "devops_engineer", "frontend_developer"]
)
def test_default_mock_plan_completes_for_every_type(agent_type: str) -> None:
    """Without a script the mock plays a realistic plan that ends with complete_task."""
    h = Harness()
    task_id, agent_id = h.submit(agent_type, "Build a REST API for user authentication")
    h.run()
    state = h.agents[agent_id]
    assert state.status == "completed", state.error
    assert state.result is not None and state.result.artifacts
    assert set(state.result.artifacts) <= set(h.tools.files[task_id])
    assert any(c.name == "execute_code" for c in h.tools.calls)


def test_llm_error_info_survives_into_state() -> None:
    """An LLM failure is recorded with its code in the thread and the errors list."""
    h, _, agent_id = run({"error": "boom"})
    errors = h.agents[agent_id].errors()
    assert errors[0]["source"] == "llm" and errors[0]["code"] == "server_error"
    assert ErrorInfo.model_validate(errors[0] | {}).message == "boom"


def test_replay_after_reload_republishes_the_same_llm_request() -> None:
    """A redelivery after a crash re-sends the identical LLM request, rendered from saved state."""
    # Identical: conversation, tool schemas and metadata. The saved state does not store the
    # request, so it is rendered again.
    from agentops.core import agent
    from agentops.core.effects import CallLLM
    from agentops.core.state import AGENT_STATE_ADAPTER
    from agentops.protocol.messages import StartAgent

    spec = shipped_specs()["backend_developer"]
    start = StartAgent(
        id="s1",
        task_id="t",
        agent_id="a",
        ts=Harness().now(),
        agent_type=spec.agent_type,
        description="Build it",
    )
    first = agent.step(spec, None, start, start.ts)
    assert first.state is not None
    stored = first.state.model_dump_json(exclude=agent.STATE_EXCLUDE)
    outbox = stored.split('"outbox"')[1]
    assert not [f for f in ('"messages"', '"tools"', '"metadata"') if f in outbox]
    reloaded = AGENT_STATE_ADAPTER.validate_json(stored)
    again = agent.step(spec, reloaded, start, start.ts)
    assert again.replay and again.state is None
    original = [e for e in first.effects if isinstance(e, CallLLM)]
    replayed = [e for e in again.effects if isinstance(e, CallLLM)]
    assert replayed == original and original[0].message.request.messages
