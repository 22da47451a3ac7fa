"""The dashboard in a real browser: Debian's chromium driven by Python playwright, against one
`agentops up` per module (tests/e2e/conftest.py starts it).

Rules:
- The browser is the system's (`/usr/bin/chromium`, or `AGENTOPS_CHROMIUM`), never one that
  `playwright install` downloads; without it (or without playwright) these tests skip and
  say why.
- The system runs with a config that holds `*.sh` writes of the backend developer for
  approval and prices the mock model (so a task's budget can run out before its first call).
- The API needs a token (`AGENTOPS_API_TOKEN`): each test gets a fresh browser context (its
  own sessionStorage) on the dashboard, enters the token when the page asks for it, and fails
  if the page threw an uncaught error.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System, start_system
from tests.helpers import eventually_sync

CHROMIUM = os.environ.get("AGENTOPS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONFIG = """
[tools.approvals]
backend_developer = [{ tool = "write_file", args = { path = "*.sh" }, reason = "shell scripts" }]

[llm.prices."mock-1"]
input_per_mtok = 1000.0
output_per_mtok = 1000.0
"""
FINISHED = ("completed", "failed", "cancelled")
TOKEN = "browser-test-token"  # the system requires it: each page is asked for it once


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


@dataclass
class Api:
    """The edge's API, for setting up what the page then shows and checking what it did."""

    http: httpx.Client

    def submit(self, script: list[dict[str, Any]], delay_ms: int = 0, **body: Any) -> Any:
        resp = self.http.post(
            "/tasks",
            json={
                "agent_type": "backend_developer",
                "description": body.pop("description", "browser test"),
                "context": {"mock": {"script": script, "delay_ms": delay_ms}},
                **body,
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    def finished(self, task_id: str, timeout: float = 60) -> Any:
        def probe() -> Any:
            record = self.http.get(f"/tasks/{task_id}").json()
            return record if record["status"] in FINISHED else None

        return eventually_sync(probe, timeout=timeout, interval=0.1, what=f"{task_id} finished")

    def thread(self, agent_id: str) -> list[Any]:
        items: list[Any] = self.http.get(f"/agents/{agent_id}/thread?limit=1000").json()["items"]
        return items


@dataclass
class Dashboard:
    page: Any  # playwright.sync_api.Page
    system: System
    api: Api
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("browser")
    config = root / "agentops.toml"
    config.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AGENTOPS_CONFIG", str(config))
        env.setenv("AGENTOPS_API_TOKEN", TOKEN)
        sys_ = start_system(root / "data")
    try:
        yield sys_
    finally:
        sys_.stop()


@pytest.fixture(scope="module")
def browser(system: System) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def api(system: System) -> Iterator[Api]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=system.url, timeout=30, headers=auth) as http:
        yield Api(http)


@pytest.fixture
def dashboard(browser: Any, system: System, api: Api) -> Iterator[Dashboard]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    board = Dashboard(page, system, api)
    page.on("pageerror", lambda exc: board.errors.append(str(exc)))
    page.goto(system.url + "/")
    dialog = page.locator("form.token-dialog")  # the API needs a token: asked for once
    dialog.locator("input").fill(TOKEN)
    dialog.locator("button").click()
    expect(page.locator("body[data-tasks-rendered]")).to_have_count(1)
    expect(page.locator("#live")).to_have_text("● live")
    expect(dialog).to_have_count(0)
    try:
        yield board
    finally:
        context.close()
    assert not board.errors, board.errors
