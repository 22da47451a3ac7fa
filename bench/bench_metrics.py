"""Benchmark: `GET /metrics` with 1,000 tasks in the store.

Runs the real thing: `agentops up` (embedded nats-server + every process) in a temporary data
dir on free ports, as the e2e tests start it; creates `--tasks` tasks with the mock LLM (each
completes at once; `--steps` steps each, so the histograms have data), then prints:
1. the first scrape after start (it waits for the first read of NATS: `$SRV.STATS`, the tasks
   bucket, every agent head, the streams), which is what every scrape cost before the figures
   were served ready;
2. `--scrapes` scrapes one after another, `--gap-s` apart (each serves the last refresh and,
   when it is older than 5 s, starts the next in the background): median, p95 and max, as
   the client sees them (httpx, keep-alive);
3. the edge's CPU (utime+stime from /proc) over those scrapes, as a share of one core;
4. the families' sample counts (series) and the body's size.

Usage: python bench/bench_metrics.py [--tasks 1000] [--steps 3] [--scrapes 60] [--gap-s 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package
from tests.e2e.conftest import start_system

WRITE = {"tool": "write_file", "args": {"path": "notes.txt", "content": "x"}}
KINDS = ("backend_developer", "devops_engineer", "frontend_developer")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_tasks(base: str, n: int, steps: int) -> None:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def one(i: int) -> None:
            body = {
                "agent_type": KINDS[i % 3],
                "description": f"benchmark task {i}",
                "context": {"mock": {"script": [WRITE] * (steps - 1)}},
            }
            async with sem:
                (await http.post("/tasks", json=body)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            page = await http.get("/tasks", params={"status": "completed", "limit": 1})
            if page.json()["total"] >= n:
                return
            await asyncio.sleep(1)  # a benchmark's progress poll, not a test
        raise SystemExit("tasks did not complete in 15 minutes")


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values):.1f} ms, p95 {p95:.1f} ms, max {values[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=60)
    parser.add_argument("--gap-s", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        system = start_system(Path(tmp) / "data")
        try:
            t0 = time.monotonic()
            asyncio.run(create_tasks(system.url, args.tasks, args.steps))
            print(f"{args.tasks} tasks of {args.steps} steps in {time.monotonic() - t0:.0f} s")
            edge = system.pids()["edge"]
            with httpx.Client(base_url=system.url, timeout=60) as http:
                t = time.perf_counter()
                first = http.get("/metrics")
                print(f"first scrape (reads NATS): {(time.perf_counter() - t) * 1000:.0f} ms")
                times: list[float] = []
                cpu0, wall0 = cpu_s(edge), time.monotonic()
                for _ in range(args.scrapes):
                    t = time.perf_counter()
                    http.get("/metrics").raise_for_status()
                    times.append((time.perf_counter() - t) * 1000)
                    time.sleep(args.gap_s)  # the scrape interval
                share = (cpu_s(edge) - cpu0) / (time.monotonic() - wall0)
            print(f"{args.scrapes} scrapes, {args.gap_s} s apart: {ms(times)}")
            print(f"edge CPU meanwhile: {share * 100:.1f} % of a core")
            lines = [ln for ln in first.text.splitlines() if ln and not ln.startswith("#")]
            print(f"body: {len(first.content)} bytes, {len(lines)} samples")
        finally:
            system.stop()


if __name__ == "__main__":
    main()
