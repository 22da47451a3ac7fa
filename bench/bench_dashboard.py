"""Benchmark: the dashboard with 1,000 tasks in the store: first paint, the task list, idle CPU.

Runs the real thing: `agentops up` (embedded nats-server + every process) in a temporary data
dir on free ports, started as the e2e tests start it; creates `--tasks` tasks with the mock LLM (each
completes at once; `--open-questions` of them ask a question and stay awaiting an answer, so
the inbox has something to load), then opens the dashboard in headless chromium (Debian's,
through playwright; never a downloaded browser) and prints:
1. over `--loads` cold page loads (a fresh browser context each: no cache): first paint, first
   contentful paint and the task list rendered (the page's `tasks-rendered` mark), all from
   navigation start, and the API requests the page made to get there;
2. the edge's CPU (utime+stime from /proc/<pid>/stat, the pid from <data-dir>/processes.json)
   over `--idle-s` seconds of an idle system with the page open, as a share of one core, and
   the requests the page made meanwhile; the same without a page, as the baseline;
3. with the page open, `--live-tasks` tasks of `--live-steps` steps run to completion: the
   events the page received, the requests it made meanwhile, and the edge's CPU.

Usage: python bench/bench_dashboard.py [--tasks 1000] [--open-questions 20] [--loads 5]
       [--idle-s 30] [--live-tasks 20] [--live-steps 10] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Request, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import start_system

ASK = {"tool": "request_human_input", "args": {"question": "Ship it?", "format": "yes_no"}}


def cpu_s(pid: int) -> float:
    """User+system CPU seconds of `pid` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float, wait: Any = time.sleep) -> float:
    """The share of one core `pid` used over `seconds` (while `wait(seconds)` runs)."""
    before, t0 = cpu_s(pid), time.monotonic()
    wait(seconds)
    return (cpu_s(pid) - before) / (time.monotonic() - t0)


async def create_tasks(base: str, n: int, questions: int) -> None:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def one(i: int) -> None:
            script = [ASK] if i < questions else []
            body = {
                "agent_type": ("backend_developer", "devops_engineer", "frontend_developer")[i % 3],
                "description": f"benchmark task {i}: build and test one small thing",
                "context": {"mock": {"script": script}},
            }
            async with sem:
                (await http.post("/tasks", json=body)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))
        deadline = time.monotonic() + 600
        while True:  # every task done or asking
            done = 0
            for status in ("completed", "awaiting_human"):
                page = await http.get("/tasks", params={"status": status, "limit": 1})
                done += page.json()["total"]
            if done >= n:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done} of {n} tasks settled")
            await asyncio.sleep(0.5)


@contextmanager
def api_requests(page: Page) -> Iterator[list[str]]:
    """The API requests `page` makes while in the block (its own static files left out)."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if "/ui/" not in request.url and request.resource_type != "document":
            seen.append(request.url.split("//", 1)[1].split("/", 1)[1])

    page.on("request", on_request)
    try:
        yield seen
    finally:
        page.remove_listener("request", on_request)


def load_once(browser: Browser, base: str) -> tuple[dict[str, float], list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    with api_requests(page) as seen:
        page.goto(base + "/")
        page.wait_for_selector("body[data-tasks-rendered]")
        page.wait_for_selector("body[data-inbox-loaded]")
        page.wait_for_selector("#live.ok")
    timing = page.evaluate(
        """() => {
          const paint = Object.fromEntries(performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]));
          const rows = document.querySelectorAll("#task-rows tr").length;
          return { fp: paint["first-paint"], fcp: paint["first-contentful-paint"],
                   list: performance.getEntriesByName("tasks-rendered")[0].startTime,
                   inbox: performance.getEntriesByName("inbox-loaded")[0].startTime, rows };
        }"""
    )
    context.close()
    return timing, seen


def run_browser(args: argparse.Namespace, base: str, pid: int) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        loads = [load_once(browser, base) for _ in range(args.loads + 1)][1:]  # one warm-up
        for key, label in (
            ("fp", "first paint"),
            ("fcp", "first contentful paint"),
            ("list", "task list rendered"),
            ("inbox", "inbox loaded (each open question read)"),
        ):
            values = [t[key] for t, _ in loads]
            print(
                f"{label}: median {statistics.median(values):.0f} ms, max {max(values):.0f} ms "
                f"(n={len(values)})"
            )
        rows, requests = loads[-1][0]["rows"], loads[-1][1]
        print(
            f"rows shown: {rows:.0f}; API requests to load: {len(requests)}: {', '.join(requests)}"
        )

        idle_without = cpu_share(pid, args.idle_s)
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_selector("body[data-inbox-loaded]")
        page.wait_for_selector("#live.ok")
        page.wait_for_timeout(1000)  # requests of the load reported late are not counted below
        with api_requests(page) as seen:
            idle_with = cpu_share(pid, args.idle_s, lambda s: page.wait_for_timeout(s * 1000))
        print(
            f"idle edge CPU over {args.idle_s:g} s: {idle_with * 100:.2f} % of a core with the "
            f"page open ({len(seen)} requests: {', '.join(seen) or 'none'}), "
            f"{idle_without * 100:.2f} % without a page"
        )

        if args.live_tasks:
            frames: list[int] = []
            page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(1)))
            page.reload()
            page.wait_for_selector("body[data-inbox-loaded]")
            page.wait_for_selector("#live.ok")
            page.wait_for_timeout(1000)
            steps = [
                {"tool": "write_file", "args": {"path": f"f{i % 3}.txt", "content": f"{i}\n"}}
                for i in range(args.live_steps - 1)
            ]
            with api_requests(page) as seen, httpx.Client(base_url=base, timeout=60) as http:
                before, t0 = cpu_s(pid), time.monotonic()
                ids = [
                    http.post(
                        "/tasks",
                        json={
                            "agent_type": "backend_developer",
                            "description": "live benchmark task",
                            "context": {"mock": {"script": steps, "delay_ms": 50}},
                            "max_steps": args.live_steps + 5,
                        },
                    ).json()["task_id"]
                    for _ in range(args.live_tasks)
                ]
                for task_id in ids:
                    page.wait_for_selector(
                        f"#task-rows tr[data-key={task_id}] .badge.s-completed",
                        state="attached",
                        timeout=120_000,
                    )
                wall = time.monotonic() - t0
                used = cpu_s(pid) - before
            posts = args.live_tasks
            print(
                f"live: {args.live_tasks} tasks x {args.live_steps} steps in {wall:.1f} s with the "
                f"page open: {len(frames)} events received, {len(seen)} API requests by the page "
                f"({', '.join(seen[:8]) or 'none'}); edge CPU {used / wall * 100:.1f} % of a core "
                f"(includes the {posts} POST /tasks)"
            )
        context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--open-questions", type=int, default=20)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--live-tasks", type=int, default=20)
    parser.add_argument("--live-steps", type=int, default=10)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentops-bench-") as tmp:
        system = start_system(Path(tmp) / "data")  # `agentops up`, healthy, as the e2e tests do
        try:
            t0 = time.monotonic()
            asyncio.run(create_tasks(system.url, args.tasks, args.open_questions))
            print(
                f"{args.tasks} tasks in the store ({args.open_questions} awaiting an answer), "
                f"created in {time.monotonic() - t0:.0f} s"
            )
            time.sleep(3)  # let the system settle before measuring idle
            run_browser(args, system.url, system.pids()["edge"])
        finally:
            system.stop()


if __name__ == "__main__":
    main()
