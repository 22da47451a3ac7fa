"""The dashboard in headless chromium against the real system: submit a task and watch it
complete, answer a yes/no question, approve a held call, raise a budget, and type an answer
while events stream in without losing a character (or causing a request per event)."""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Dashboard
from tests.e2e.conftest import System

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from playwright.sync_api import Request, expect

pytestmark = pytest.mark.browser


def open_inbox(board: Dashboard) -> None:
    board.page.click("nav a[data-view=inbox]")
    expect(board.page.locator("#view-inbox")).to_be_visible()


def test_a_task_submitted_in_the_page_is_watched_to_completion(dashboard: Dashboard) -> None:
    """The form submits a task and opens its page, which follows it live from running to
    completed: timeline (LLM turns, tool calls, results), result and the list's row."""
    page = dashboard.page
    script = [
        {"tool": "write_file", "args": {"path": "hello.py", "content": "print('hello')\n"}},
        {"text": "Written; now I will finish."},
    ]
    page.select_option("form.new-task select[name=agent_type]", "backend_developer")
    page.fill("form.new-task textarea[name=description]", "Write hello.py")
    page.click("form.new-task details summary")
    page.fill(
        "form.new-task textarea[name=context]",
        json.dumps({"mock": {"script": script, "delay_ms": 700}}),
    )
    page.click("form.new-task button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/tasks/task_\w+$"))
    task_id = page.url.rsplit("/", 1)[1]
    status = page.locator(".task-page h2 .badge")
    expect(status).to_have_text("running")
    expect(status).to_have_text("completed")
    timeline = page.locator(".timeline")
    expect(timeline.locator(".k-assistant")).to_have_count(3)  # two scripted turns + complete_task
    expect(timeline.locator(".call", has_text="write_file")).to_contain_text(
        "result of write_file ✓"
    )
    expect(timeline).to_contain_text("Written; now I will finish.")
    expect(page.locator(".result-box")).to_contain_text("Completed the scripted run")
    expect(page.locator(".task-page .facts .tokens")).not_to_have_text("0 in · 0 out")
    page.click("nav a[data-view=tasks]")
    expect(page.locator(f"#task-rows tr[data-key={task_id}] .badge")).to_have_text("completed")
    assert dashboard.api.finished(task_id)["status"] == "completed"


def test_a_yes_no_question_is_answered_with_its_button(dashboard: Dashboard) -> None:
    """A yes/no question shows Yes/No buttons in the inbox; Yes answers "yes" and the agent
    goes on to complete; the entry leaves the inbox."""
    api = dashboard.api
    question = "Deploy to production now?"
    created = api.submit(
        [{"tool": "request_human_input", "args": {"question": question, "format": "yes_no"}}]
    )
    open_inbox(dashboard)
    entry = dashboard.page.locator(".inbox-entry", has_text=question)
    expect(entry.locator("textarea")).to_have_count(0)  # buttons, not a free-text box
    entry.locator("button.yes").click()
    expect(entry).to_have_count(0)
    assert api.finished(created["task_id"])["status"] == "completed"
    answers = [
        i["response"] for i in api.thread(created["agent_id"]) if i["kind"] == "human_response"
    ]
    assert answers == ["yes"]


def test_a_held_call_is_shown_exactly_and_approved(dashboard: Dashboard) -> None:
    """A write held for approval shows the exact call (tool and arguments); Approve lets it
    run: the file is written and the task completes."""
    api = dashboard.api
    created = api.submit(
        [{"tool": "write_file", "args": {"path": "deploy.sh", "content": "echo shipped\n"}}]
    )
    open_inbox(dashboard)
    entry = dashboard.page.locator(
        ".inbox-entry", has=dashboard.page.locator(f"a[href='#/tasks/{created['task_id']}']")
    )
    held = entry.locator(".held-call")
    expect(held).to_contain_text("write_file")
    expect(held).to_contain_text('"path": "deploy.sh"')
    expect(held).to_contain_text('"content": "echo shipped\\n"')
    entry.locator("button.approve").click()
    expect(entry).to_have_count(0)
    assert api.finished(created["task_id"])["status"] == "completed"
    workspace = dashboard.system.data_dir / "workspaces" / created["task_id"]
    assert (workspace / "deploy.sh").read_text() == "echo shipped\n"


def test_a_budget_is_raised_in_its_field(dashboard: Dashboard) -> None:
    """A task whose next call could overspend asks for budget; the budget field raises it
    and the task completes with the new budget."""
    api = dashboard.api
    created = api.submit([], budget_usd=0.01)
    dashboard.page.goto(f"{dashboard.system.url}/#/tasks/{created['task_id']}")
    box = dashboard.page.locator(".question-box .answer[data-reason=budget]")
    expect(box).to_contain_text("budget $0.010")
    box.locator("input.budget").fill("50")
    box.locator("button.raise").click()
    expect(dashboard.page.locator(".task-page h2 .badge")).to_have_text("completed")
    record = api.finished(created["task_id"])
    assert record["status"] == "completed" and record["budget_usd"] == 50


def test_typed_text_survives_streaming_events_without_a_request_per_event(
    dashboard: Dashboard,
) -> None:
    """Half an answer typed into the inbox stays, focused and whole, while other tasks stream
    hundreds of events; the page makes no API request per event meanwhile; the answer, once
    finished and sent, reaches the agent as typed."""
    page, api = dashboard.page, dashboard.api
    question = "What should the service be called?"
    asker = api.submit([{"tool": "request_human_input", "args": {"question": question}}])
    open_inbox(dashboard)
    box = page.locator(".inbox-entry", has_text=question).locator("textarea.free-text")
    box.click()
    box.type("half-typed na")
    requests: list[str] = []

    def seen(request: Request) -> None:
        if "/ui/" not in request.url:
            requests.append(request.url)

    page.on("request", seen)
    steps = [
        {"tool": "write_file", "args": {"path": f"f{i % 3}.txt", "content": f"{i}\n"}}
        for i in range(25)
    ]
    streams = [api.submit(steps, delay_ms=20, max_steps=40) for _ in range(3)]
    for created in streams:  # the rows are patched from the stream (the list is in the page)
        row = page.locator(f"#task-rows tr[data-key={created['task_id']}] .badge")
        expect(row).to_have_text("completed", timeout=60_000)
    page.remove_listener("request", seen)
    expect(box).to_have_value("half-typed na")
    expect(box).to_be_focused()
    assert len(requests) <= 3, requests  # a health check at most, never one per event
    box.type("me")
    page.locator(".inbox-entry", has_text=question).locator("button.send").click()
    assert api.finished(asker["task_id"])["status"] == "completed"
    answers = [
        i["response"] for i in api.thread(asker["agent_id"]) if i["kind"] == "human_response"
    ]
    assert answers == ["half-typed name"]


def test_the_page_resumes_from_its_last_event_after_the_edge_restarts(dashboard: Dashboard) -> None:
    """kill -9 of the edge: the page says it is reconnecting, reconnects with `since=` its
    last sequence once the supervisor has restarted the edge, and goes on showing events.
    (Last in this module: it restarts the shared system's edge.)"""
    page, api, system = dashboard.page, dashboard.api, dashboard.system
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    first = api.submit([])  # an event, so the page has a position to resume from
    expect(page.locator(f"#task-rows tr[data-key={first['task_id']}] .badge")).to_have_text(
        "completed"
    )
    os.kill(system.pids()["edge"], signal.SIGKILL)
    expect(page.locator("#live")).to_have_text(re.compile("reconnecting"))
    expect(page.locator("#live")).to_have_text("● live", timeout=60_000)
    assert any("since=" in url and "token=" in url for url in sockets), sockets
    expect(page.locator("form.token-dialog")).to_have_count(0)  # the token was kept
    after = api.submit([{"text": "after the restart"}])
    expect(page.locator(f"#task-rows tr[data-key={after['task_id']}] .badge")).to_have_text(
        "completed"
    )


def test_the_api_docs_page_renders_every_operation(browser: Any, system: System) -> None:
    """/docs loads without a token and renders every operation of /openapi.json; a schema
    opens on demand; nothing is refused by the CSP (no console error)."""
    doc = httpx.get(f"{system.url}/openapi.json", timeout=30).json()
    operations = sum(len(item) for item in doc["paths"].values())
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{system.url}/docs")
        expect(page.locator("details.op")).to_have_count(operations)
        create = page.locator("details#post_tasks")
        create.locator("summary").first.click()
        create.locator("details.ref", has_text="CreateTask").first.locator("summary").click()
        expect(create.locator("code", has_text="agent_type").first).to_be_visible()
        assert errors == []
    finally:
        page.close()
