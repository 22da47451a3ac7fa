"""Benchmark: the edge's WebSocket fan-out under load, with real processes.

Runs `agentops up` (embedded nats-server + every process, as the e2e tests start it) in a
temporary data dir on free ports, then:
1. connects `--all-clients` WebSocket clients following every event;
2. submits `--tasks` tasks (mock LLM, `--steps` tool calls each, `delay_ms` `--delay-ms` per
   LLM call), one every `--pace-s` seconds, and connects `--task-clients` clients spread over
   them (each follows one task, from `since=` the stream's position before the first task, so
   nothing is missed while they connect);
3. waits for every task to complete and the clients to go quiet (the reference is the
   benchmark's own ordered consumer of the stream: NATS, not the edge), and prints:
   - event latency p50/p99/max per group (receipt time minus the event's `ts`, for events
     stamped after the client had connected: replayed ones are left out), and from the
     event's arrival at the benchmark's own ordered consumer of the stream (the edge's share),
   - frames delivered and frames/s, events in the run,
   - clients closed by the server (by close code), clients silently stopped (still open but
     missing events of what they follow, against the reference), clients that failed to
     connect, frames received twice and clients that saw sequences out of order (events
     after the reference's end, e.g. a late status, may arrive and are not counted as wrong),
   - the edge's CPU (share of one core over the run) and RSS (peak, from /proc), and the
     `Slow Consumer` lines in the nats-server log; the nats-server's CPU and the consumers on
     the events stream once every client is connected.
Measure the implementation before a change the same way: `PYTHONPATH=<old tree> python
bench/bench_ws.py` runs `agentops up` from the old tree (the children inherit PYTHONPATH).

Usage: python bench/bench_ws.py [--task-clients 900] [--all-clients 100] [--tasks 100]
       [--steps 4] [--delay-ms 200] [--pace-s 0.1] [--timeout-s 600] [--client-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package
from agentops.protocol import subjects as s
from tests.e2e.conftest import System, start_system


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), sum(fields) / os.sysconf("SC_CLK_TCK")


def edge_delays(text: str, follows: str) -> str:
    """p50/p99 of the edge's own histogram (the event's ts to the write), as bucket bounds."""
    buckets: list[tuple[float, float]] = []
    prefix = f'agentops_edge_ws_frame_delay_seconds_bucket{{follows="{follows}",le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, count = line[len(prefix) :].split('"}', 1)
            buckets.append((float(le), float(count)))
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return "no frames"

    def bound(q: float) -> str:
        le = next(le for le, n in buckets if n >= q * total)
        return "> 600 s" if le == float("inf") else f"<= {le * 1000:g} ms"

    within = next((n for le, n in buckets if le == 0.1), 0.0)
    return (
        f"p50 {bound(0.5)}, p99 {bound(0.99)}; {within / total * 100:.1f} % within 100 ms "
        f"(n={total:.0f})"
    )


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Client:
    group: str
    task_id: str | None
    connected_at: float = 0.0
    seqs: list[int] = field(default_factory=list)
    stamps: list[tuple[int, float, str]] = field(default_factory=list)  # (seq, received, ts)
    close_code: int | None = None
    failed: str | None = None

    def latencies(self, arrived: dict[int, float]) -> tuple[list[float], list[float]]:
        """From the event's `ts`, and from its arrival at a NATS subscriber of the stream
        (the edge's own share), for the events stamped after the client connected."""
        from_ts, from_nats = [], []
        for seq, received, ts in self.stamps:
            stamped = datetime.fromisoformat(ts).timestamp()
            if stamped >= self.connected_at:  # replayed events are left out
                from_ts.append(received - stamped)
                if seq in arrived:
                    from_nats.append(received - arrived[seq])
        return from_ts, from_nats


async def until(condition: Callable[[], object]) -> None:
    """Poll a condition another process (or many tasks) changes: no one event to await."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _seq_and_ts(text: str) -> tuple[int, str] | None:
    """`seq` and `ts` of an event frame without a JSON parse (frames start with them)."""
    if not text.startswith('{"seq":'):
        return None
    seq = int(text[7 : text.index(",", 7)])
    at = text.index('"ts":"') + 6
    return seq, text[at : text.index('"', at)]


async def follow(session: aiohttp.ClientSession, base: str, client: Client, since: int) -> None:
    """Read until the server closes or the task is cancelled; as little work per frame as
    possible (the clients share one core with everything else)."""
    params = {"since": str(since)}
    if client.task_id:
        params["task_id"] = client.task_id
    try:
        ws = await session.ws_connect(f"{base}/ws", params=params, heartbeat=None)
    except Exception as exc:
        client.failed = repr(exc)
        return
    client.connected_at = time.time()
    try:
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    client.close_code = ws.close_code
                else:
                    client.close_code = -1
                return
            got = _seq_and_ts(msg.data)
            if got is not None:
                client.seqs.append(got[0])
                client.stamps.append((got[0], time.time(), got[1]))
    finally:
        await ws.close()


async def _all_group(
    base: str, since: int, n: int, ready: Any, stop: Any, last_seq: Any
) -> list[Client]:
    clients = [Client("all", None) for _ in range(n)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(follow(session, base, c, since)) for c in clients]
        await until(lambda: all(c.connected_at or c.failed for c in clients))
        ready.set()
        await until(stop.is_set)
        catch_up = time.monotonic() + 30
        while time.monotonic() < catch_up:  # every open client has the run's last event
            open_ = [c for c in clients if c.close_code is None and c.failed is None]
            if all(c.seqs and c.seqs[-1] >= last_seq.value for c in open_):
                break
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return clients


def all_group(
    base: str, since: int, n: int, ready: Any, stop: Any, last_seq: Any, out: Any
) -> None:
    """Clients following everything, in their own process (their frames are ~90% of all)."""
    clients = asyncio.run(_all_group(base, since, n, ready, stop, last_seq))
    out.put([(c.seqs, c.connected_at, c.stamps, c.close_code, c.failed) for c in clients])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def run(args: argparse.Namespace, system: System) -> None:
    base = system.url
    edge, server = system.pids()["edge"], system.pids().get("nats-server")
    admin = await nats.connect(system.nats_url, **system.admin)  # type: ignore[arg-type]
    js = admin.jetstream()
    since = (await js.stream_info(s.EVENTS_STREAM)).state.last_seq
    arrived: dict[int, float] = {}
    ref: dict[int, str] = {}  # every event of the run (seq -> task id), read over NATS

    async def arrival(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        arrived[seq] = time.time()
        ref[seq] = json.loads(msg.data)["task_id"]

    probe = await js.subscribe(
        s.events_filter(), cb=arrival, ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, config=ConsumerConfig(opt_start_seq=since + 1),
    )  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    stop, last_seq, out = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
    groups = []
    for k in range(args.client_procs):  # the all-clients split over processes
        n = args.all_clients // args.client_procs + (k < args.all_clients % args.client_procs)
        ready = ctx.Event()
        proc = ctx.Process(target=all_group, args=(base, since, n, ready, stop, last_seq, out))
        proc.start()
        groups.append((proc, ready))
    for _, ready in groups:
        await until(ready.is_set)
    steps = [
        {"tool": "write_file", "args": {"path": f"f{i % 3}.txt", "content": f"{i}\n"}}
        for i in range(args.steps)
    ]
    clients: list[Client] = []
    followers: list[asyncio.Task[None]] = []
    cpu0, t0 = cpu_s(edge), time.monotonic()
    busy0, all0 = machine_cpu()
    own0 = time.process_time()
    server0 = cpu_s(server) if server else 0.0
    consumers = 0
    per_task = args.task_clients // args.tasks
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        for i in range(args.tasks):
            body = {
                "agent_type": "backend_developer",
                "description": f"ws benchmark task {i}",
                "context": {"mock": {"script": steps, "delay_ms": args.delay_ms}},
                "max_steps": args.steps + 5,
            }
            resp = await http.post("/tasks", json=body)
            resp.raise_for_status()
            task_id = resp.json()["task_id"]
            for _ in range(per_task):
                clients.append(Client("task", task_id))
                followers.append(asyncio.create_task(follow(session, base, clients[-1], since)))
            await asyncio.sleep(args.pace_s)  # the set pace of task starts
        await until(lambda: all(c.connected_at or c.failed for c in clients))
        consumers = (await js.stream_info(s.EVENTS_STREAM)).state.consumer_count
        deadline = time.monotonic() + args.timeout_s
        while True:
            page = await http.get("/tasks", params={"status": "completed", "limit": 1})
            done = page.json()["total"]
            if done >= args.tasks or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        last = (await js.stream_info(s.EVENTS_STREAM)).state.last_seq
        last_seq.value = last
        await until(lambda: bool(ref) and max(ref) >= last)
        by_task: dict[str, list[int]] = {}
        for seq, task in ref.items():
            by_task.setdefault(task, []).append(seq)
        catch_up = time.monotonic() + 30
        while time.monotonic() < catch_up:  # every open client has its last event, or 30 s
            behind = [c for c in clients if c.close_code is None and c.failed is None
                      and c.seqs[-1:] != by_task.get(c.task_id or "", [])[-1:]]  # fmt: skip
            if not behind:
                break
            await asyncio.sleep(0.2)
        stop.set()
        metrics_text = (await http.get("/metrics")).text
        busy1, all1 = machine_cpu()
        own = time.process_time() - own0
        results = [r for _ in groups for r in out.get(timeout=120)]
        for proc, _ in groups:
            proc.join(30)
        wall = time.monotonic() - t0
        cpu = cpu_s(edge) - cpu0
        server_cpu = cpu_s(server) - server0 if server else 0.0
        peak = rss_mb(edge)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    await probe.unsubscribe()
    await admin.close()

    print(f"tasks: {done}/{args.tasks} completed; events in the run: {len(ref)}; wall {wall:.1f} s")
    silent, closed, failed, total = 0, Counter[int](), 0, 0
    for seqs, connected_at, stamps, code, error in results:
        clients.append(Client("all", None, connected_at, seqs, stamps, code, error))
    rows = [("all" if c.task_id is None else "task", c.task_id, c.seqs, c.latencies(arrived),
             c.close_code, c.failed) for c in clients]  # fmt: skip
    for name in ("task", "all"):
        members = [r for r in rows if r[0] == name]
        lat = [x for r in members for x in r[3][0]]
        edge_lat = [x for r in members for x in r[3][1]]
        frames = sum(len(r[2]) for r in members)
        total += frames
        print(
            f"{name:>4} clients ({len(members)}): latency from ts p50 {pct(lat, 0.5):.1f} ms, "
            f"p99 {pct(lat, 0.99):.1f} ms, max {pct(lat, 1.0):.1f} ms (n={len(lat)}); "
            f"from NATS p50 {pct(edge_lat, 0.5):.1f} ms, p99 {pct(edge_lat, 0.99):.1f} ms; "
            f"{frames} frames, {frames / wall:.0f}/s"
        )
    duplicated = disordered = 0
    for _, task_id, seqs, _, code, error in rows:
        duplicated += len(seqs) - len(set(seqs))
        disordered += seqs != sorted(seqs)
        if error is not None:
            failed += 1
        elif code is not None:
            closed[code] += 1
        else:  # open to the end: it must have every event of the run it follows
            expected = sorted(ref) if task_id is None else by_task.get(task_id, [])
            silent += not set(expected) <= set(seqs)
    reasons = Counter(r[5][:120] for r in rows if r[5] is not None)
    if reasons:
        print("failed to connect, by error:", dict(reasons))
    print(
        f"delivered {total} frames, {total / wall:.0f}/s; closed by the server: "
        f"{dict(closed) or 'none'}; failed to connect: {failed}; silently stopped: {silent}; "
        f"frames twice: {duplicated}; clients out of order: {disordered}"
    )
    log = system.nats_log.read_text(errors="replace") if system.nats_log.exists() else ""
    print(
        f"edge CPU {cpu / wall * 100:.0f} % of a core over {wall:.1f} s "
        f"({cpu / max(total, 1) * 1e6:.0f} us per frame delivered); RSS peak {peak:.0f} MB; "
        f"nats-server 'Slow Consumer' lines: {log.count('Slow Consumer')}"
    )
    cores = os.cpu_count() or 1
    print(
        f"the edge's own timing (event ts to its write, `agentops_edge_ws_frame_delay_seconds`)"
        f": per-task clients {edge_delays(metrics_text, 'task')}; all-event clients "
        f"{edge_delays(metrics_text, 'all')}"
    )
    print(
        f"machine: {(busy1 - busy0) / (all1 - all0) * cores:.2f} of {cores} cores busy over "
        f"the run; this benchmark's main process (per-task clients, reference) "
        f"{own / wall * 100:.0f} % of a core"
    )
    print(
        f"nats-server CPU {server_cpu / wall * 100:.0f} % of a core; consumers on the events "
        f"stream with every client connected: {consumers} (the benchmark's own probe included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task-clients", type=int, default=900)
    parser.add_argument("--all-clients", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--delay-ms", type=int, default=200)
    parser.add_argument("--pace-s", type=float, default=0.1)
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument("--client-procs", type=int, default=2, help="processes for all-clients")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        system = start_system(Path(tmp) / "data")
        try:
            asyncio.run(run(args, system))
        finally:
            system.stop()


if __name__ == "__main__":
    main()
