"""The mock LLM: script validation, scripted replies, default plans (run for real through the
tool handlers) and the provider shell."""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentops.agents.loader import shipped_specs
from agentops.llm.mock import (
    MockLLMError,
    MockProvider,
    MockScript,
    TextEntry,
    ToolEntry,
    describe_script_errors,
    mock_reply,
)
from agentops.llm.mock_plans import default_plan, task_line
from agentops.llm.tokens import MESSAGE_OVERHEAD, estimate_request_tokens
from agentops.llm.types import LLMRequest, LLMResult, Message
from agentops.protocol.errors import AgentOpsError
from agentops.tools.handlers import ToolContext, run_tool
from agentops.tools.policy import ToolSettings
from agentops.tools.registry import schemas_for, validate_call
from agentops.tools.sandbox import Sandbox, probe

TASK = "Build a login API with JWT\n\nUse HS256 and keep it small."


def request(
    call_index: int = 0,
    agent_type: str = "backend_developer",
    mock: Any = None,
    task: str = TASK,
) -> LLMRequest:
    meta: dict[str, Any] = {"agent_type": agent_type, "call_index": call_index}
    if mock is not None:
        meta["mock"] = mock
    return LLMRequest(
        model="mock-1",
        messages=(
            Message(role="system", content="You are an agent."),
            Message(role="user", content=task),
        ),
        metadata=meta,
    )


def mock_error(req: LLMRequest) -> MockLLMError:
    with pytest.raises(MockLLMError) as info:
        mock_reply(req)
    return info.value


def script_problems(raw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        MockScript.model_validate(raw)
    return describe_script_errors(info.value)


# ---- MockScript ----
def test_script_accepts_every_entry_kind() -> None:
    """tool (args default {}), tools, error and text entries all validate."""
    script = MockScript.model_validate(
        {
            "script": [
                {"tool": "read_file"},
                {"tools": [{"tool": "read_file", "args": {"path": "a"}}, {"tool": "read_file"}]},
                {"error": "rate_limit"},
                {"text": "thinking"},
            ],
            "delay_ms": 5,
        }
    )
    assert script.script is not None
    assert script.script[0] == ToolEntry(tool="read_file", args={})
    assert script.script[3] == TextEntry(text="thinking")
    assert script.delay_ms == 5


def test_script_defaults() -> None:
    """An empty mock has no script (default plan) and no delay."""
    assert MockScript.model_validate({}) == MockScript(script=None, delay_ms=0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"script": [{"foo": 1}]}, "script[0]: each script entry must have exactly one of"),
        ({"script": [{"tool": "x", "text": "y"}]}, "script[0]: each script entry must have"),
        ({"script": ["read_file"]}, "script[0]: each script entry must have"),
        ({"script": [{"tool": "x", "argz": {}}]}, "script[0].argz: Extra inputs are not permitted"),
        ({"script": [{"text": "a"}, {"error": "boom"}]}, "script[1].error: Input should be"),
        ({"script": [{"tools": []}]}, "script[0].tools: Tuple should have at least 1 item"),
        ({"script": [{"tool": ""}]}, "script[0].tool: String should have at least 1 character"),
        (
            {"script": [{"tool": "x", "args": [1]}]},
            "script[0].args: Input should be a valid dictionary",
        ),
        ({"delay_ms": -1}, "delay_ms: Input should be greater than or equal to 0"),
        ({"delay_ms": 60_001}, "delay_ms: Input should be less than or equal to 60000"),
        ({"delay_ms": "10"}, "delay_ms: Input should be a valid integer"),
        ({"scirpt": []}, "scirpt: Extra inputs are not permitted"),
        ("script", "mock: Input should be a valid dictionary"),
    ],
)
def test_bad_scripts_are_rejected_with_a_clear_message(raw: Any, expected: str) -> None:
    """Each malformed mock fails validation, and the message names where and why."""
    assert expected in script_problems(raw)


# ---- scripted replies ----
def test_tool_entry_becomes_one_tool_call_with_unvalidated_args() -> None:
    """A tool entry is one ToolCall, id call_<i>_0, args passed through even when invalid."""
    mock = {"script": [{"text": "hi"}, {"tool": "write_file", "args": {"path": 5, "bogus": True}}]}
    result = mock_reply(request(call_index=1, mock=mock))
    assert result.text == ""
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_1_0", "write_file", {"path": 5, "bogus": True})
    ]
    assert result.finish_reason == "tool_calls"


def test_tools_entry_becomes_parallel_tool_calls() -> None:
    """A tools entry is several ToolCalls in one reply, numbered in order."""
    mock = {
        "script": [{"tools": [{"tool": "read_file", "args": {"path": "a"}}, {"tool": "read_file"}]}]
    }
    result = mock_reply(request(mock=mock))
    assert [(c.id, c.arguments) for c in result.tool_calls] == [
        ("call_0_0", {"path": "a"}),
        ("call_0_1", {}),
    ]


def test_text_entry_is_a_text_reply() -> None:
    """A text entry replies with that text and no tool call."""
    result = mock_reply(request(mock={"script": [{"text": "Let me think."}]}))
    assert (result.text, result.tool_calls, result.finish_reason) == ("Let me think.", (), "stop")


@pytest.mark.parametrize(
    ("kind", "code"),
    [("timeout", "timeout"), ("rate_limit", "rate_limit"), ("server", "server_error")],
)
def test_error_entry_raises_a_retryable_error(kind: str, code: str) -> None:
    """An error entry raises MockLLMError whose info() is a retryable ErrorInfo."""
    err = mock_error(request(call_index=0, mock={"script": [{"error": kind}]}))
    assert isinstance(err, AgentOpsError)
    info = err.info()
    assert (info.code, info.retryable, err.code, err.retryable) == (code, True, code, True)
    assert "scripted at call 0" in info.message


def test_failed_calls_consume_script_entries() -> None:
    """call_index counts failed calls, so the call after a scripted error reads the next entry."""
    mock = {"script": [{"error": "server"}, {"tool": "read_file", "args": {"path": "x"}}]}
    mock_error(request(call_index=0, mock=mock))
    assert mock_reply(request(call_index=1, mock=mock)).tool_calls[0].name == "read_file"


def test_after_the_script_it_completes_with_written_files() -> None:
    """Past the last entry it calls complete_task; artifacts are the script's write_file paths."""
    mock = {
        "script": [
            {"tool": "write_file", "args": {"path": "a.py", "content": ""}},
            {"tools": [{"tool": "write_file", "args": {"path": "b/c.txt"}}, {"tool": "read_file"}]},
            {"tool": "write_file", "args": {"path": "a.py", "content": "again"}},
            {"tool": "write_file", "args": {"content": "no path"}},
        ]
    }
    for call_index in (4, 9):
        (call,) = mock_reply(request(call_index=call_index, mock=mock)).tool_calls
        assert (call.id, call.name) == (f"call_{call_index}_0", "complete_task")
        assert call.arguments == {
            "summary": "Completed the scripted run (4 scripted steps)",
            "artifacts": ["a.py", "b/c.txt"],
        }


def test_empty_script_completes_at_once() -> None:
    """{"script": []} calls complete_task on the first call."""
    (call,) = mock_reply(request(mock={"script": []})).tool_calls
    assert call.name == "complete_task"
    assert call.arguments["summary"] == "Completed the scripted run (0 scripted steps)"


def test_bad_script_fails_permanently() -> None:
    """A mock that does not validate fails with bad_mock_script, not retryable."""
    err = mock_error(request(mock={"script": [{"tool": "x", "text": "y"}]}))
    assert (err.info().code, err.info().retryable) == ("bad_mock_script", False)
    assert "invalid context.mock: script[0]: each script entry must have" in err.info().message


def test_a_tasks_script_is_read_again_when_it_changes() -> None:
    """A changed or bad script for a task id is validated anew, never answered from the kept one."""
    # The parsed script is kept per task.

    def for_task(script: list[dict[str, Any]]) -> LLMRequest:
        req = request(mock={"script": script})
        return req.model_copy(update={"metadata": {**req.metadata, "task_id": "t_same"}})

    first = mock_reply(for_task([{"text": "one"}]))
    second = mock_reply(for_task([{"text": "two"}]))
    assert (first.text, second.text) == ("one", "two")
    assert mock_error(for_task([{"tool": "x", "text": "y"}])).info().code == "bad_mock_script"


@pytest.mark.parametrize("bad", [-1, "3", 1.5, True])
def test_bad_call_index_is_refused(bad: Any) -> None:
    """call_index must be a non-negative int."""
    req = LLMRequest(model="m", messages=(), metadata={"call_index": bad})
    assert mock_error(req).info().code == "bad_request"


def test_usage_is_the_systems_token_estimate() -> None:
    """The mock's usage is the system's own token estimate for input and output, at cost 0."""
    # Input tokens are the agent's estimate when the request carries one, else the estimate of
    # the request (UTF-8 bytes / 3 plus framing); output tokens estimate the reply.
    req = request(mock={"script": [{"text": "abcdefg"}]})
    result = mock_reply(req)
    assert result.usage.input_tokens == estimate_request_tokens(req)
    assert result.usage.input_tokens == 2 * MESSAGE_OVERHEAD + math.ceil(
        len("You are an agent.") / 3
    ) + math.ceil(len(TASK.encode()) / 3)
    assert result.usage.output_tokens == 3
    assert result.usage.cost_usd == 0.0
    told = req.model_copy(update={"metadata": {**req.metadata, "estimated_input_tokens": 1234}})
    assert mock_reply(told).usage.input_tokens == 1234
    assert (result.model, result.provider) == ("mock-1", "mock")


def test_replies_are_deterministic() -> None:
    """The same request always gets the same reply."""
    for i in range(5):
        assert mock_reply(request(call_index=i)) == mock_reply(request(call_index=i))


# ---- default plans ----
@pytest.mark.parametrize(
    ("agent_type", "plan"),
    [
        (
            "backend_developer",
            "list_files write_file write_file execute_code search_files read_file edit_file "
            "edit_file execute_code complete_task",
        ),
        (
            "devops_engineer",
            "list_files write_file write_file write_file execute_code search_files edit_file "
            "execute_code complete_task",
        ),
        (
            "frontend_developer",
            "list_files write_file write_file execute_code search_files edit_file execute_code "
            "complete_task",
        ),
    ],
)
def test_default_plan_is_one_valid_tool_call_per_call(agent_type: str, plan: str) -> None:
    """Without a script each call is one tool call whose arguments pass the registry."""
    allowed = shipped_specs()[agent_type].allowed_tools
    tools = plan.split()
    seen = []
    for i in range(len(tools) + 2):  # two calls past the plan: complete_task again
        (call,) = mock_reply(request(call_index=i, agent_type=agent_type)).tool_calls
        validate_call(call.name, call.arguments, allowed)
        assert call.id == f"call_{i}_0"
        seen.append(call.name)
    assert seen == [*tools, "complete_task", "complete_task"]


def test_delay_only_mock_plays_the_default_plan() -> None:
    """A mock with only delay_ms still plays the agent type's default plan."""
    result = mock_reply(request(call_index=1, mock={"delay_ms": 1}))
    assert result.tool_calls[0].arguments["path"] == "auth_service.py"


def offered(req: LLMRequest, tools: tuple[str, ...]) -> LLMRequest:
    return req.model_copy(update={"tools": schemas_for(tools)})


def test_a_type_without_a_plan_plays_the_generic_run() -> None:
    """A type without a plan looks, writes notes/<type>.md, reads it and completes naming it."""
    tools = ("list_files", "read_file", "write_file", "complete_task")
    calls = [
        mock_reply(offered(request(i, agent_type="qa_engineer"), tools)).tool_calls[0]
        for i in range(5)
    ]
    assert [c.name for c in calls] == [
        "list_files",
        "write_file",
        "read_file",
        "complete_task",
        "complete_task",
    ]
    for call in calls:
        validate_call(call.name, call.arguments, tools)
    assert calls[1].arguments["path"] == "notes/qa_engineer.md"
    assert "Task: Build a login API with JWT" in calls[1].arguments["content"]
    done = calls[3].arguments
    assert "qa_engineer" in done["summary"] and done["artifacts"] == ["notes/qa_engineer.md"]


def test_the_generic_run_uses_only_the_tools_offered() -> None:
    """A type that may not write files still looks and completes, without a write_file call."""
    tools = ("list_files", "complete_task")
    names = [
        mock_reply(offered(request(i, agent_type="reviewer"), tools)).tool_calls[0].name
        for i in range(3)
    ]
    assert names == ["list_files", "complete_task", "complete_task"]


def test_task_line_is_the_first_printable_line() -> None:
    """task_line keeps the first non-blank line, control characters turned into spaces."""
    assert task_line("\n  Build\tthe\x00API  \nsecond") == "Build the API"
    assert task_line("") == ""
    assert len(task_line("x" * 1000)) == 160


def test_task_line_appears_in_the_main_file() -> None:
    """The first line of the task description is a comment in the main file written."""
    (call,) = mock_reply(request(call_index=1)).tool_calls
    assert "# Task: Build a login API with JWT\n" in call.arguments["content"]


@functools.cache
def plan_sandbox() -> Sandbox:
    """The plans run where the executor runs them: in bubblewrap when the machine has it."""
    return probe(ToolSettings(sandbox="bwrap" if shutil.which("bwrap") else "none"))


async def play(
    agent_type: str, workspace: Path, task: str = TASK
) -> list[LLMResult | dict[str, Any]]:
    """Run the default plan for real: every executor tool call goes through run_tool."""
    ctx = ToolContext(workspace=workspace, timeout_s=60, sandbox=plan_sandbox())
    spec = shipped_specs()[agent_type]
    outputs: list[LLMResult | dict[str, Any]] = []
    for i in range(len(default_plan(agent_type, task))):
        (call,) = mock_reply(request(call_index=i, agent_type=agent_type, task=task)).tool_calls
        args = validate_call(call.name, call.arguments, spec.allowed_tools)
        if call.name == "complete_task":
            outputs.append(call.arguments)
        else:
            outputs.append(await run_tool(call.name, args, ctx))
    return outputs


async def test_backend_plan_really_passes_its_tests(tmp_path: Path) -> None:
    """The backend plan writes a JWT module and tests, finds and edits the input check, and
    its tests pass before and after the edit."""
    outputs = await play("backend_developer", tmp_path)
    *_, run, done = outputs
    first_run, found, edits = outputs[3], outputs[4], outputs[6:8]
    assert isinstance(run, dict) and isinstance(done, dict) and isinstance(found, dict)
    assert isinstance(first_run, dict) and "all tests passed (7 tests)" in first_run["stdout"]
    assert [m["path"] for m in found["matches"]] == ["auth_service.py"]
    assert [e["replacements"] for e in edits if isinstance(e, dict)] == [1, 1]
    assert run["exit_code"] == 0, run["stderr"]
    assert "all tests passed (8 tests)" in run["stdout"]
    assert done["artifacts"] == ["auth_service.py", "test_auth_service.py"]
    assert all((tmp_path / p).is_file() for p in done["artifacts"])


async def test_devops_plan_really_checks_its_deploy_script(tmp_path: Path) -> None:
    """The devops plan's deploy.sh passes bash -n and a dry run."""
    *_, run, done = await play("devops_engineer", tmp_path)
    assert isinstance(run, dict) and isinstance(done, dict)
    assert run["exit_code"] == 0, run["stderr"]
    assert "deploy.sh syntax ok" in run["stdout"]
    assert "+ docker push" in run["stdout"]
    assert "ci.yml cancels superseded runs" in run["stdout"]
    assert all((tmp_path / p).is_file() for p in done["artifacts"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_frontend_plan_really_passes_its_node_check(tmp_path: Path) -> None:
    """The frontend plan's validation module passes its check under node."""
    *_, run, done = await play("frontend_developer", tmp_path)
    assert isinstance(run, dict) and isinstance(done, dict)
    assert run["exit_code"] == 0, run["stderr"]
    assert "checks passed" in run["stdout"]
    assert done["artifacts"] == ["index.html", "app.js"]


@pytest.mark.parametrize(
    "agent_type", ["backend_developer", "devops_engineer", "frontend_developer"]
)
async def test_hostile_task_line_cannot_break_the_code(agent_type: str, tmp_path: Path) -> None:
    """A task line full of comment terminators and cookies still yields code that runs."""
    if agent_type == "frontend_developer" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    hostile = "-*- coding: latin-1 -*- */ --> <!-- \\ `$(rm -rf /)` '''\"\"\" \x1b[31m\u2028x"
    *_, run, _done = await play(agent_type, tmp_path, task=hostile)
    assert isinstance(run, dict)
    assert run["exit_code"] == 0, run["stderr"]
    html = tmp_path / "index.html"
    if html.exists():
        comment = html.read_text().splitlines()[1]
        assert comment.startswith("<!-- Task: ") and comment.count("--") == 2


# ---- provider shell ----
async def test_provider_waits_delay_ms_and_stamps_latency() -> None:
    """MockProvider sleeps the script's delay_ms before replying and reports the latency."""
    result = await MockProvider().complete(
        request(mock={"script": [{"text": "ok"}], "delay_ms": 50})
    )
    assert result.text == "ok"
    assert result.latency_ms >= 50


async def test_provider_raises_scripted_errors_after_the_delay() -> None:
    """Scripted errors surface from the provider as MockLLMError."""
    with pytest.raises(MockLLMError) as info:
        await MockProvider().complete(
            request(mock={"script": [{"error": "timeout"}], "delay_ms": 1})
        )
    assert info.value.info().code == "timeout"
