"""What the CLI shows: event lines, the progress `watch` folds from frames, the commands that
answer a question, and the tables (fitted to the width, JSON for shapes they do not know)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from agentops import cli_output as out
from agentops.cli_events import Progress, answer_commands, event_line, event_summary

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TS = "2025-01-02T03:04:00Z"


def frame(seq: int, kind: str, task_id: str = "task_1", **data: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "type": kind,
        "ts": TS,
        "task_id": task_id,
        "agent_id": "agent_1",
        "data": data,
    }


def console(width: int = 120) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return out.OutputConsole(file=buffer, width=width, highlight=False), buffer


# ---- progress ----

RUN = [
    frame(1, "task.created", agent_type="backend_developer", description="Build"),
    frame(2, "agent.status", status="running", previous="idle"),
    frame(3, "agent.step", step=1, max_steps=20),
    frame(4, "llm.response", usage={"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.5}),
    frame(5, "tool.call", call_id="c1", name="write_file", arguments={"path": "a.py"}),
]


def test_progress_shows_step_tool_tokens_and_cost() -> None:
    """Frames fold into the step, the tool running now, summed tokens and cost."""
    progress = Progress("task_1")
    for f in RUN:
        progress.apply(f)
    assert (progress.status, progress.step, progress.max_steps, progress.tool) == (
        "running",
        1,
        20,
        "write_file",
    )
    assert (progress.input_tokens, progress.output_tokens, progress.cost_usd) == (100, 20, 0.5)
    assert progress.line() == (
        "task_1  running · step 1/20 · tool write_file · 120 tokens (100 in, 20 out) · $0.5000"
    )
    progress.apply(frame(6, "tool.result", call_id="c1", name="write_file", ok=True))
    assert progress.tool is None and progress.last_seq == 6


def test_progress_ends_with_the_task_and_a_follow_up_reopens_it() -> None:
    """task.completed sets the outcome and totals; the agent running again clears it."""
    progress = Progress("task_1")
    for f in RUN:
        progress.apply(f)
    progress.apply(frame(6, "task.completed", child="x", steps=3, result={"summary": "done"},
                         usage={"input_tokens": 7, "output_tokens": 3, "cost_usd": 1.25}))  # fmt: skip
    assert progress.outcome == "completed" and progress.detail == "done"
    assert (progress.step, progress.input_tokens, progress.cost_usd, progress.tool) == (
        3,
        7,
        1.25,
        None,
    )
    progress.apply(frame(7, "agent.status", status="running", previous="completed"))
    assert progress.outcome is None


def test_another_tasks_end_is_not_this_ones() -> None:
    """A terminal event of a child task does not end the watched task."""
    progress = Progress("task_1")
    progress.apply(frame(1, "task.failed", task_id="task_child", error={"message": "x"}))
    assert progress.outcome is None


def test_the_record_has_the_last_word_when_polling() -> None:
    """A record that runs again clears an earlier end; a finished one sets the outcome."""
    progress = Progress("task_1")
    progress.apply(frame(1, "task.failed", error={"message": "boom"}))
    progress.apply_record({"status": "running", "current_step": 4})
    assert (progress.outcome, progress.step) == (None, 4)
    record = {"status": "failed", "error": {"message": "boom"}, "usage": {"cost_usd": 2.0}}
    progress.apply_record(record)
    assert (progress.outcome, progress.detail, progress.cost_usd) == ("failed", "boom", 2.0)


def test_frames_of_an_unexpected_shape_never_raise() -> None:
    """Missing or mistyped fields are shown as absent."""
    progress = Progress("task_1")
    for junk in (
        {},
        {"type": 3},
        {"type": "llm.response", "data": "x"},
        {"seq": "1", "data": None},
    ):
        progress.apply(junk)
        event_line(junk)
    assert progress.line().startswith("task_1  queued · step 0")


# ---- event lines ----


def test_each_event_reads_as_one_line() -> None:
    """Tool calls show name and arguments, results their outcome, questions their format."""
    assert event_line(RUN[4]) == (
        '03:04:00  #5  tool.call        agent_1  write_file {"path": "a.py"}'
    )
    failed = frame(6, "tool.result", name="execute_code", ok=False,
                   error={"code": "timeout", "message": "took too long"})  # fmt: skip
    assert event_summary(failed) == "execute_code error timeout: took too long"
    ask = frame(7, "human.request", reason="tool", format="multiple_choice", question="Which?",
                choices=["a", "b"])  # fmt: skip
    assert event_summary(ask) == "tool [multiple_choice: a, b] Which?"
    long = frame(8, "human.response", response="x" * 500)
    assert len(event_summary(long)) == 120 and event_summary(long).endswith("…")
    status = frame(9, "agent.status", status="awaiting_human", previous="running", reason="tool")
    assert event_summary(status) == "running → awaiting_human (tool)"


# ---- how to answer ----


def test_answer_commands_fit_the_question() -> None:
    """yes/no, choices, approvals, budgets and free text each get their respond flags."""
    base = "agentops respond agent_1"
    assert answer_commands("agent_1", {"format": "yes_no"}) == [f"{base} --yes", f"{base} --no"]
    assert answer_commands("agent_1", {"format": "multiple_choice", "choices": ["a b", "c"]}) == [
        f"{base} --choice 'a b'",
        f"{base} --choice c",
    ]
    assert answer_commands("agent_1", {"reason": "approval", "format": "free_text"})[0] == (
        f"{base} --approve"
    )
    assert answer_commands("agent_1", {"reason": "budget"}) == [
        f"{base} --budget USD",
        f"{base} --stop",
    ]
    assert answer_commands("agent_1", {"format": "free_text"}) == [f"{base} 'your answer'"]


# ---- tables ----

TASKS = {
    "tasks": [
        {
            "task_id": "task_aaaaaaaaaaaaaaaaaaaa",
            "agent_type": "backend_developer",
            "status": "completed",
            "current_step": 4,
            "cost_usd": 0.25,
            "created_at": "2025-01-02T02:04:05Z",
            "description": "Build a REST API",
        }
    ],
    "total": 7,
}


def test_the_task_table_has_a_row_per_task_and_says_how_to_see_more() -> None:
    """Piped, the table has no trailing spaces, and a footer names the next --offset."""
    con, buffer = console()
    out.render_tasks(con, TASKS, offset=2, now=NOW)
    lines = buffer.getvalue().splitlines()
    assert lines[0].split() == ["TASK", "TYPE", "STATUS", "STEP", "COST", "AGE", "DESCRIPTION"]
    assert lines[1].split()[:6] == [
        "task_aaaaaaaaaaaaaaaaaaaa", "backend_developer", "completed", "4", "$0.2500", "1h"
    ]  # fmt: skip
    assert lines[2] == "3-3 of 7 (--offset 3 for more)"
    assert all(line == line.rstrip() for line in lines)


def test_a_narrow_table_leaves_out_columns_instead_of_cutting_ids() -> None:
    """At 60 columns the optional columns go first; the task id stays whole."""
    con, buffer = console(width=60)
    out.render_tasks(con, TASKS, now=NOW)
    header, row = buffer.getvalue().splitlines()[:2]
    assert header.split() == ["TASK", "TYPE", "STATUS"]
    assert row.split()[0] == "task_aaaaaaaaaaaaaaaaaaaa"


def test_a_body_a_view_does_not_know_is_printed_as_json() -> None:
    """An unexpected shape from another edge version is shown, never an error."""
    for render in (out.render_agents, out.render_health, out.render_inbox, out.render_agent):
        con, buffer = console()
        render(con, {"ok": True})
        assert buffer.getvalue() == '{\n  "ok": true\n}\n'


def test_the_inbox_shows_each_question_with_the_commands_that_answer_it() -> None:
    """One block per open request: who asks, the question, the respond lines."""
    con, buffer = console()
    request = {"reason": "tool", "format": "yes_no", "question": "Deploy now?"}
    body = {
        "requests": [
            {
                "agent_id": "agent_1",
                "agent_type": "devops_engineer",
                "task_id": "task_1",
                "request": request,
                "answer_with": answer_commands("agent_1", request),
            }
        ]
    }
    out.render_inbox(con, body)
    assert buffer.getvalue().splitlines() == [
        "agent_1  devops_engineer  task task_1  [yes_no]",
        "  Deploy now?",
        "  → agentops respond agent_1 --yes",
        "  → agentops respond agent_1 --no",
    ]


def test_age_is_kubectl_style() -> None:
    """Seconds, minutes, hours, days; unknown is a dash."""
    assert [out.age(v, NOW) for v in ("2025-01-02T03:04:00Z", "2025-01-02T02:54:05+00:00")] == [
        "5s",
        "10m",
    ]
    assert out.age("2024-12-30T03:04:05Z", NOW) == "3d"
    assert out.age(None, NOW) == "-"
