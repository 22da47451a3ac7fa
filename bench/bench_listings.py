"""Benchmark: the task and agent listings and `GET /metrics` with 10,000 finished tasks.

Runs the edge's real app (`edge/app.create_app`, served by aiohttp on a loopback port) against
a nats-server from the wheel with the declared streams and buckets. The store is filled
directly, not by running 10,000 tasks: three tasks (one per shipped developer type) run
through the reducers (`tests/harness.py`), and their finished task records, agent heads and summaries are
written `--tasks` times under new ids, each a second apart, as the orchestrator and the agents
would have stored them. Then it prints, as the client sees them (aiohttp, keep-alive):
1. how long the edge took to be ready to list (its index read from the tasks bucket);
2. `GET /tasks?limit=50` pages: the first page, a status filter, an agent_type filter, a page
   at offset 5,000; `GET /agents?limit=50`; `--reps` of each: median / p95 / max;
3. `GET /metrics`: the first scrape, then `--reps` scrapes (served ready).

Usage: python bench/bench_listings.py [--tasks 10000] [--reps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import nats
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package
from agentops.bus.setup import ensure_jetstream
from agentops.edge.app import create_app
from agentops.edge.context import EdgeConfig
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.store.agents import encode_head
from agentops.store.summaries import summary_write
from tests.harness import Harness

KINDS = ("backend_developer", "devops_engineer", "frontend_developer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values):.1f} ms, p95 {p95:.1f} ms, max {values[-1]:.1f} ms"


async def fill(js: nats.js.JetStreamContext, n: int) -> None:
    """`n` finished tasks: records and heads cloned from three real runs."""
    harness = Harness()
    for kind in KINDS:
        harness.submit(kind, f"benchmark task of a {kind}")
    harness.run()
    records = list(harness.tasks.values())
    states = {a.agent_id: a for a in harness.agents.values()}
    start = records[0].created_at
    pending: list[asyncio.Future[object]] = []
    for i in range(n):
        record = records[i % len(records)]
        state = states[record.agent_id]
        task_id, agent_id = f"task_bench{i:08d}", f"agent_bench{i:08d}"
        at = start + timedelta(seconds=i)
        fields = {"task_id": task_id, "agent_id": agent_id, "agent_ids": (agent_id,)}
        rec = record.model_copy(update={**fields, "created_at": at, "updated_at": at})
        head = state.model_copy(update={"task_id": task_id, "agent_id": agent_id, "created_at": at})
        pending.append(
            await js.publish_async(
                s.kv_key(s.TASKS_BUCKET, task_id), rec.model_dump_json().encode()
            )  # type: ignore[arg-type]
        )
        pending.append(
            await js.publish_async(s.kv_key(s.AGENTS_BUCKET, agent_id), encode_head(head))  # type: ignore[arg-type]
        )
        subject, summary, _ = summary_write(head)  # as the agent writes it when it ends
        pending.append(await js.publish_async(subject, summary))  # type: ignore[arg-type]
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def timed(http: aiohttp.ClientSession, url: str, reps: int) -> tuple[float, list[float]]:
    """The first request's time, then `reps` more."""
    times: list[float] = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        async with http.get(url) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status, await resp.text())
        times.append((time.perf_counter() - t) * 1000)
    return times[0], times[1:]


async def run(tasks: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            nc = await nats.connect(server.url, name="agentops-bench")
            js = nc.jetstream()
            buckets = await ensure_jetstream(js)
            t0 = time.monotonic()
            await fill(js, tasks)
            print(
                f"{tasks} finished tasks (records, heads, summaries) written in {time.monotonic() - t0:.1f} s"
            )
            app = create_app(nc, js, buckets, EdgeConfig())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            base = f"http://127.0.0.1:{port}"
            try:
                async with aiohttp.ClientSession(base) as http:
                    t = time.perf_counter()
                    async with http.get("/tasks?limit=1") as resp:
                        total = (await resp.json())["total"]
                    print(f"first listing (edge ready): {(time.perf_counter() - t) * 1000:.0f} ms, "
                          f"total {total}")  # fmt: skip
                    async with http.get("/agents?limit=1") as resp:
                        agents = (await resp.json())["total"]
                    assert total == agents == tasks, f"listed {total} tasks, {agents} agents"
                    for label, url in (
                        ("GET /tasks?limit=50", "/tasks?limit=50"),
                        ("  ?status=completed", "/tasks?limit=50&status=completed"),
                        (
                            "  ?agent_type=devops_engineer",
                            "/tasks?limit=50&agent_type=devops_engineer",
                        ),
                        ("  ?offset=5000", "/tasks?limit=50&offset=5000"),
                        ("GET /agents?limit=50", "/agents?limit=50"),
                        (
                            "GET /agents?status=completed&limit=50",
                            "/agents?status=completed&limit=50",
                        ),
                    ):
                        first, times = await timed(http, url, reps)
                        print(f"{label}: first {first:.1f} ms; {reps}: {ms(times)}")
                    first, times = await timed(http, "/metrics", reps)
                    print(f"GET /metrics: first {first:.0f} ms; {reps}: {ms(times)}")
            finally:
                await runner.cleanup()
                await nc.close()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.tasks, args.reps))


if __name__ == "__main__":
    main()
