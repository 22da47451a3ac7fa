"""Benchmark: raw JetStream hop vs. one agent step, and steps/s with many concurrent tasks.

Runs the real thing: `agentops up` (embedded nats-server + every process) in a temporary data
dir on free ports, then prints, in one run:
1. p50/p99 of one raw JetStream work hop (publish → fetch(1) → ack) on that server, measured
   two ways: one hop at a time, `--hop-gap-ms` apart (default 3 ms, about one step: in a
   step every hand-over reaches a process that has been idle that long), and back to back
   (a busy loop in which neither the client nor the server ever idles);
2. p50/p99 of one agent step (LLM call + tool call, mock LLM at zero delay) for one task,
   measured between consecutive `agent.step` events, and its ratio to each hop; hops and
   single tasks are measured in turns (`--rounds`), so the ratios compare figures taken in
   the same minutes;
3. completed agent steps per second with N concurrent tasks (submitted over HTTP, completion
   seen on the events stream).

Usage: python bench/bench_steps.py [--tasks 100] [--steps 20] [--single-steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from agentops import credentials
from agentops.natsserver import free_port
from agentops.protocol import subjects as s


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def script(steps: int) -> dict[str, object]:
    entries = [
        {
            "tool": "write_file",
            "args": {"path": f"notes/{i % 5}.txt", "content": f"step {i}\n", "mode": "append"},
        }
        for i in range(steps - 1)
    ]
    return {"script": entries, "delay_ms": 0}


async def raw_hop(url: str, n: int, gap_s: float = 0.0, **auth: str) -> list[float]:
    """`n` timed hops; with `gap_s`, the client idles that long before each one."""
    nc = await nats.connect(url, name="agentops-bench", **auth)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="BENCH_HOP", subjects=["bench.hop"], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer(
        "BENCH_HOP",
        ConsumerConfig(durable_name="hop", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1),
    )
    sub = await js.pull_subscribe_bind("hop", "BENCH_HOP")
    out: list[float] = []
    for i in range(n + 50):
        if gap_s:
            await asyncio.sleep(gap_s)
        t0 = time.perf_counter()
        await js.publish("bench.hop", b'{"n": %d}' % i)
        msgs = await sub.fetch(1, timeout=5)
        await msgs[0].ack()
        if i >= 50:
            out.append((time.perf_counter() - t0) * 1000)
    await js.delete_stream("BENCH_HOP")
    await nc.close()
    return out


async def submit(http: httpx.AsyncClient, steps: int) -> str:
    body = {
        "agent_type": "backend_developer",
        "description": "benchmark task",
        "context": {"mock": script(steps)},
        "max_steps": steps + 5,
    }
    resp = await http.post("/tasks", json=body)
    resp.raise_for_status()
    return str(resp.json()["task_id"])


async def wait_done(
    js: nats.js.JetStreamContext,
    task_ids: set[str],
    timeout: float,
    subject: str = s.task_lifecycle_filter(),
) -> dict[str, str]:
    """Follow the events stream until every task has a terminal event. Only task lifecycle
    events are delivered (unless --watch-all-events): the observer must not add the work of
    receiving every step's events to the system it measures."""
    done: dict[str, str] = {}
    sub = await js.subscribe(subject, ordered_consumer=True)
    deadline = time.monotonic() + timeout
    while task_ids - set(done):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(task_ids - set(done))} tasks unfinished")
        msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
        event = json.loads(msg.data)
        if event["type"] in ("task.completed", "task.failed", "task.cancelled"):
            done[event["task_id"]] = event["type"]
    await sub.unsubscribe()
    return done


async def step_times(js: nats.js.JetStreamContext, task_id: str) -> list[float]:
    sub = await js.subscribe(s.events_filter(task_id), ordered_consumer=True)
    stamps: list[datetime] = []
    while True:
        msg = await sub.next_msg(timeout=10)
        event = json.loads(msg.data)
        if event["type"] == "agent.step":
            stamps.append(datetime.fromisoformat(event["ts"]))
        if event["type"].startswith("task.") and event["type"] != "task.created":
            break
    await sub.unsubscribe()
    return [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(stamps)]


def cpu_ms(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU time of each process so far, in ms (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) * 1000 / tick
    return out


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """Resident memory of each process now, in MB (from /proc)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[name] = int(line.split()[1]) / 1024
    return out


async def run(args: argparse.Namespace, base: str, nats_url: str, data_dir: Path) -> None:
    # The embedded server wants a credential: the operator's.
    admin = {"nkeys_seed": str(credentials.seed_path(data_dir, credentials.ADMIN))}
    nc = await nats.connect(nats_url, name="agentops-bench", **admin)
    js = nc.jetstream()
    watch = s.events_filter() if args.watch_all_events else s.task_lifecycle_filter()
    hops: list[float] = []  # one at a time, from idle
    busy_hops: list[float] = []  # back to back
    steps: list[float] = []
    rounds: list[tuple[float, float]] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        warm = await submit(http, 3)
        await wait_done(js, {warm}, 60, watch)
        # Hops and single-task steps measured in turns, so the figures of each ratio come
        # from the same minutes on a machine whose speed drifts.
        for _ in range(args.rounds):
            gap = args.hop_gap_ms / 1000
            round_hops = await raw_hop(nats_url, args.hops // args.rounds, gap, **admin)
            round_busy = await raw_hop(nats_url, args.busy_hops // args.rounds, **admin)
            single = await submit(http, args.single_steps)
            await wait_done(js, {single}, 120, watch)
            round_steps = await step_times(js, single)
            step50 = pct(round_steps, 50)
            rounds.append((step50 / pct(round_hops, 50), step50 / pct(round_busy, 50)))
            hops += round_hops
            busy_hops += round_busy
            steps += round_steps

        pids = json.loads((data_dir / "processes.json").read_text())
        cpu_before = cpu_ms(pids)
        started = time.perf_counter()
        ids = set(await asyncio.gather(*(submit(http, args.steps) for _ in range(args.tasks))))
        outcome = await wait_done(js, ids, 600, watch)
        wall = time.perf_counter() - started
        cpu_after = cpu_ms(pids)
        memory = rss_mb(pids)
    await nc.close()
    completed = sum(1 for k, v in outcome.items() if k in ids and v == "task.completed")
    total_steps = completed * args.steps

    hop50, busy50, step50 = pct(hops, 50), pct(busy_hops, 50), pct(steps, 50)
    print(
        f"raw JetStream hop (publish→fetch→ack), one at a time {args.hop_gap_ms:g} ms apart, "
        f"n={len(hops)}: p50 {hop50:.3f} ms  p99 {pct(hops, 99):.3f} ms"
    )
    print(
        f"raw JetStream hop, back to back, n={len(busy_hops)}: "
        f"p50 {busy50:.3f} ms  p99 {pct(busy_hops, 99):.3f} ms"
    )
    print(
        f"agent step, single task (LLM + tool, mock 0 ms), n={len(steps)}: "
        f"p50 {step50:.3f} ms  p99 {pct(steps, 99):.3f} ms  mean {statistics.mean(steps):.3f} ms"
    )
    print(
        f"step p50 / hop p50: {step50 / hop50:.1f}x (target <= 10x), by round "
        + ", ".join(f"{r:.1f}x" for r, _ in rounds)
        + f"; against back-to-back hops {step50 / busy50:.1f}x, by round "
        + ", ".join(f"{r:.1f}x" for _, r in rounds)
    )
    print(
        f"{args.tasks} concurrent tasks x {args.steps} steps: {completed} completed in "
        f"{wall:.2f} s -> {total_steps / wall:.0f} steps/s (target >= 300)"
    )
    per_step = {k: (cpu_after[k] - cpu_before.get(k, 0)) / max(1, total_steps) for k in cpu_after}
    print(
        "CPU per step (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_step.items()))
        + f"; total {sum(per_step.values()):.2f}"
    )
    print(
        "memory after the run (RSS, MB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(memory.items()))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--single-steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="hop / single-task turns")
    parser.add_argument(
        "--watch-all-events",
        action="store_true",
        help="the observer receives every event live (as a WebSocket client watching all would)",
    )
    parser.add_argument("--hops", type=int, default=600, help="hops one at a time, in all")
    parser.add_argument(
        "--hop-gap-ms", type=float, default=3.0, help="how long the client idles before each"
    )
    parser.add_argument("--busy-hops", type=int, default=2000, help="hops back to back, in all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentops-bench-") as tmp:
        port, nats_port = free_port(), free_port()
        env = {**os.environ, "AGENTOPS_LOG_LEVEL": "warning"}
        cmd = [
            sys.executable,
            "-m",
            "agentops.cli",
            "up",
            "--port",
            str(port),
            "--nats-port",
            str(nats_port),
            "--data-dir",
            str(Path(tmp) / "data"),
        ]
        up = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
            asyncio.run(run(args, base, f"nats://127.0.0.1:{nats_port}", Path(tmp) / "data"))
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()


if __name__ == "__main__":
    main()
