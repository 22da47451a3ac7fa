"""Benchmark: long runs. A step must cost what it adds, whatever the length of the run.

Runs the real thing: a nats-server (with its monitoring port, for the bytes it receives) and
`agentops up --nats-url` on it, in a temporary data dir, mock LLM at zero delay. Prints:
1. one task of `--steps` (500) steps whose tool results are `--result-kb` (20) KB each: the
   p50 step time of the first 50 steps against the last 50 (target: last <= 1.2x first), and
   the bytes nats-server received per step over the first and the last 50 steps (flat);
2. one task of `--big-steps` (1,000) steps with `--big-kb` (60) KB results (60 MB of
   thread): that it completes, its step p50 early and late, and how long
   `GET /agents/{id}/state` takes to return the whole thread and how large it is;
3. `--agents` (2,000) tasks live at once, `--agent-steps` each: that the agent process does
   not thrash (state reads per agent, cache evictions) and its memory.

Usage: python bench/bench_long.py [--steps 500] [--result-kb 20] [--big-steps 1000]
       [--big-kb 60] [--agents 2000] [--agent-steps 4] [--skip-big] [--skip-agents]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from bench_steps import (  # this directory: run as `python bench/bench_long.py`
    pct,
    rss_mb,
    wait_done,
)

from agentops.natsserver import NatsServer, free_port
from agentops.protocol import subjects as s

WINDOW = 50


def reading(steps: int, size_kb: int) -> dict[str, Any]:
    """Write a file of `size_kb` KB once, then read it back at every step."""
    content = "0123456789abcdef" * (size_kb * 64)
    write = {"tool": "write_file", "args": {"path": "data.txt", "content": content}}
    read = {"tool": "read_file", "args": {"path": "data.txt"}}
    return {"mock": {"delay_ms": 0, "script": [write] + [read] * (steps - 2)}}


async def submit(
    http: httpx.AsyncClient, context: dict[str, Any], max_steps: int
) -> dict[str, str]:
    body = {
        "agent_type": "backend_developer",
        "description": "long-run benchmark",
        "context": context,
        "max_steps": max_steps,
    }
    resp = await http.post("/tasks", json=body)
    resp.raise_for_status()
    return dict(resp.json())


def varz_in_bytes(monitor: str) -> int:
    return int(httpx.get(f"{monitor}/varz", timeout=5).json()["in_bytes"])


async def one_long_task(
    http: httpx.AsyncClient, js: Any, monitor: str, steps: int, size_kb: int
) -> dict[str, Any]:
    """Follow one task's `agent.step` events; sample the server's received bytes as it goes."""
    sub = await js.subscribe(s.task_lifecycle_filter(), ordered_consumer=True)
    created = await submit(http, reading(steps, size_kb), steps + 5)
    task_id = created["task_id"]
    steps_sub = await js.subscribe(s.events_filter(task_id), ordered_consumer=True)
    stamps: list[datetime] = []
    received: dict[int, int] = {}
    outcome = None
    while outcome is None:
        msg = await steps_sub.next_msg(timeout=120)
        event = json.loads(msg.data)
        if event["type"] == "agent.step":
            stamps.append(datetime.fromisoformat(event["ts"]))
            step = event["data"]["step"]
            if step in (1, WINDOW + 1, steps - WINDOW, steps):
                received[step] = varz_in_bytes(monitor)
        elif event["type"] in ("task.completed", "task.failed", "task.cancelled"):
            outcome = event["type"]
    await steps_sub.unsubscribe()
    await sub.unsubscribe()
    times = [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(stamps)]
    first, last = times[:WINDOW], times[-WINDOW:]
    early = (received[WINDOW + 1] - received[1]) / WINDOW
    late = (received[steps] - received[steps - WINDOW]) / WINDOW
    return {
        "task_id": task_id,
        "agent_id": created["agent_id"],
        "outcome": outcome,
        "steps": len(stamps),
        "first_p50": pct(first, 50),
        "last_p50": pct(last, 50),
        "bytes_early": early,
        "bytes_late": late,
    }


async def state_of(http: httpx.AsyncClient, agent_id: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    resp = await http.get(f"/agents/{agent_id}/state", timeout=300)
    resp.raise_for_status()
    body = resp.content
    elapsed = time.perf_counter() - started
    return elapsed, len(body), len(json.loads(body)["thread"])


async def agent_status(nc: Any) -> dict[str, Any]:
    reply = await nc.request(s.control_subject("agent-backend_developer", "status"), b"", timeout=5)
    return dict(json.loads(reply.data))


async def many_agents(
    http: httpx.AsyncClient, js: Any, nc: Any, data_dir: Path, n: int, steps: int
) -> dict[str, Any]:
    before = await agent_status(nc)
    writes = [
        {"tool": "write_file", "args": {"path": f"f{i}.txt", "content": "x"}}
        for i in range(steps - 1)
    ]
    context = {"mock": {"delay_ms": 300, "script": writes}}
    sem = asyncio.Semaphore(64)

    async def one() -> str:
        async with sem:
            return (await submit(http, context, steps + 2))["task_id"]

    started = time.perf_counter()
    ids = set(await asyncio.gather(*(one() for _ in range(n))))
    outcome = await wait_done(js, ids, 1800)
    wall = time.perf_counter() - started
    after = await agent_status(nc)
    pids = json.loads((data_dir / "processes.json").read_text())
    memory = rss_mb({k: v for k, v in pids.items() if k == "agent-backend_developer"})
    return {
        "completed": sum(1 for k, v in outcome.items() if k in ids and v == "task.completed"),
        "wall_s": wall,
        "state_reads": after["state_reads"] - before["state_reads"],
        "evictions": after["cache_evictions"] - before["cache_evictions"],
        "cached_agents": after["cached_agents"],
        "rss_mb": memory.get("agent-backend_developer", 0.0),
    }


async def run(
    args: argparse.Namespace, base: str, nats_url: str, monitor: str, data_dir: Path
) -> None:
    nc = await nats.connect(nats_url, name="agentops-bench")
    js = nc.jetstream()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        long = await one_long_task(http, js, monitor, args.steps, args.result_kb)
        print(
            f"{long['steps']} steps with {args.result_kb} KB results ({long['outcome']}): step p50 "
            f"first {WINDOW} {long['first_p50']:.2f} ms, last {WINDOW} {long['last_p50']:.2f} ms "
            f"-> {long['last_p50'] / long['first_p50']:.2f}x (target <= 1.2x)"
        )
        print(
            f"  bytes nats-server received per step: first {WINDOW} {long['bytes_early']:,.0f}, "
            f"last {WINDOW} {long['bytes_late']:,.0f} "
            f"({long['bytes_late'] / long['bytes_early']:.2f}x)"
        )
        if not args.skip_big:
            big = await one_long_task(http, js, monitor, args.big_steps, args.big_kb)
            elapsed, size, items = await state_of(http, big["agent_id"])
            print(
                f"{big['steps']} steps with {args.big_kb} KB results ({big['outcome']}): step p50 "
                f"first {WINDOW} {big['first_p50']:.2f} ms, last {WINDOW} {big['last_p50']:.2f} ms"
                f" ({big['last_p50'] / big['first_p50']:.2f}x); GET /agents/{{id}}/state: "
                f"{size / 1e6:.1f} MB, {items} items in {elapsed:.2f} s"
            )
        if not args.skip_agents:
            many = await many_agents(http, js, nc, data_dir, args.agents, args.agent_steps)
            print(
                f"{args.agents} tasks live at once x {args.agent_steps} steps: "
                f"{many['completed']} completed in {many['wall_s']:.1f} s; agent process: "
                f"{many['state_reads']} state reads ({many['state_reads'] / args.agents:.2f} per "
                f"agent; 1 = no thrash), {many['evictions']} cache evictions, "
                f"RSS {many['rss_mb']:.0f} MB"
            )
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--result-kb", type=int, default=20)
    parser.add_argument("--big-steps", type=int, default=1000)
    parser.add_argument("--big-kb", type=int, default=60)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--agent-steps", type=int, default=4)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-agents", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentops-bench-long-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "jetstream").start()
        port = free_port()
        data_dir = Path(tmp) / "data"
        env = {**os.environ, "AGENTOPS_LOG_LEVEL": "warning"}
        cmd = [
            sys.executable, "-m", "agentops.cli", "up", "--port", str(port),
            "--nats-url", server.url, "--data-dir", str(data_dir),
        ]  # fmt: skip
        up = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or up.poll() is not None:
                    raise SystemExit("agentops up did not become healthy")
                time.sleep(0.1)
            asyncio.run(run(args, base, server.url, server.monitor_url, data_dir))
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
            server.stop()


if __name__ == "__main__":
    main()
