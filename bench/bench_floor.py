"""Benchmark: the floor of one agent step, the NATS operations alone, against a raw hop.

A step in AgentOps is a chain through three processes (agent → LLM gateway → agent → tool
executor → agent) in which every message is durable. This runs the same chain with the same
NATS operations per message and no AgentOps logic at all, each role its own OS process, on
one nats-server (file storage, as `agentops up`):
- agent, per message: one KV compare-and-swap write (its state), three acked publishes
  (the next work message and two events), the ack;
- gateway: one acked publish (the answer), the ack;
- executor: a KV create (the claim), one acked publish (the result), the ack.
It prints the p50 of this step and of a raw work hop (publish → fetch(1) → ack) on the same
server, back to back and one at a time (as in `bench_steps.py`), so the ratios say how much
of the `bench_steps.py` target (step <= 10x the hop) the durable message flow alone uses up
before any decoding, reducing or encoding. It also prints one hand-over alone (a step has
four): a work message published by one process until a push consumer in another process
has it, timed on the machine's monotonic clock.

Usage: python bench/bench_floor.py [--steps 400] [--payload 8000]
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import uvloop
from bench_steps import raw_hop  # this directory: run as `python bench/bench_floor.py`
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from agentops.natsserver import NatsServer

ROLES = ("gateway", "executor", "agent", "receiver")
HANDOVERS = 500
PACED_HOPS = 300  # hops one at a time (each after --hop-gap-ms idle)


async def push_consumer(
    nc: Client, name: str, subject: str, handle: Callable[[Msg], Awaitable[None]]
) -> None:
    js = nc.jetstream()
    deliver = f"_FLOOR.{name}"
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1,
        deliver_subject=deliver,
        deliver_group=name,
    )
    await js.add_consumer("FLOOR_WORK", config)
    await nc.subscribe(deliver, queue=name, cb=handle)


async def role(name: str, url: str, steps: int, payload: bytes, out: Path) -> str:
    nc = await nats.connect(url, name=f"floor-{name}")
    js = nc.jetstream()
    kv = await js.key_value("floor_state")
    count = 0
    revision = 0
    stamps: list[float] = []
    done = asyncio.Event()

    async def agent(msg: Msg) -> None:
        nonlocal count, revision
        if done.is_set():  # the run is over: the chain stops here
            return
        count += 1
        if revision:
            revision = await kv.update("agent", payload, last=revision)
        else:
            revision = await kv.put("agent", payload)
        result = msg.subject.endswith("result")
        target = "floor.llm" if result else "floor.tool"
        acks = [
            await js.publish_async(subject, body, headers={"Nats-Msg-Id": f"a{count}.{i}"})
            for i, (subject, body) in enumerate(
                [(target, payload), ("floor_events.a", b"{}"), ("floor_events.b", b"{}")]
            )
        ]
        await asyncio.gather(*acks)
        await msg.ack()
        if result:
            stamps.append(time.perf_counter())
            if len(stamps) > steps:
                done.set()

    async def gateway(msg: Msg) -> None:
        nonlocal count
        count += 1
        await js.publish("floor.answer", payload, headers={"Nats-Msg-Id": f"g{count}"})
        await msg.ack()

    async def executor(msg: Msg) -> None:
        nonlocal count
        count += 1
        await kv.create(f"claim{count}", b"started")
        await js.publish("floor.result", payload, headers={"Nats-Msg-Id": f"x{count}"})
        await msg.ack()

    async def receiver(msg: Msg) -> None:
        received = time.perf_counter()
        await msg.ack()
        await nc.publish("floor_seen", json.dumps(received).encode())

    if name == "receiver":
        await push_consumer(nc, "receiver", "floor.handover", receiver)
        await asyncio.to_thread(out.write_text, "ready")
        await asyncio.Event().wait()
    elif name == "agent":
        await push_consumer(nc, "agent-results", "floor.result", agent)
        await push_consumer(nc, "agent-answers", "floor.answer", agent)
        await js.publish("floor.llm", payload)
        await done.wait()
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
        await nc.close()
        return json.dumps(gaps[len(gaps) // 10 :])  # drop the warm-up
    else:
        handler, subject = (gateway, "floor.llm") if name == "gateway" else (executor, "floor.tool")
        await push_consumer(nc, name, subject, handler)
        await asyncio.to_thread(out.write_text, "ready")
        await asyncio.Event().wait()
    return ""


async def declare(url: str) -> None:
    nc = await nats.connect(url, name="floor-setup")
    js = nc.jetstream()
    work = StreamConfig(
        name="FLOOR_WORK", subjects=["floor.>"], retention=RetentionPolicy.WORK_QUEUE
    )
    await js.add_stream(work)
    await js.add_stream(StreamConfig(name="FLOOR_EVENTS", subjects=["floor_events.>"]))
    await js.create_key_value(bucket="floor_state", history=1)
    await nc.close()


async def declare_and_hop(url: str, hops: int, gap_s: float) -> tuple[list[float], list[float]]:
    """Declare the streams; time raw hops (`bench_steps.raw_hop`, the same hop) back to back,
    then one at a time `gap_s` apart."""
    await declare(url)
    return await raw_hop(url, hops), await raw_hop(url, PACED_HOPS, gap_s)


async def handovers(url: str, n: int) -> list[float]:
    """Publish a small work message, one at a time; ms until the receiver process has it."""
    nc = await nats.connect(url, name="floor-sender")
    js = nc.jetstream()
    seen = await nc.subscribe("floor_seen")
    out: list[float] = []
    for i in range(n + 50):
        sent = time.perf_counter()
        await js.publish("floor.handover", b'{"n": %d}' % i)
        received = json.loads((await seen.next_msg(timeout=5)).data)
        if i >= 50:
            out.append((received - sent) * 1000)
    await nc.close()
    return out


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{proc.args!r} did not get ready")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--payload", type=int, default=8000, help="bytes of state and work")
    parser.add_argument("--hops", type=int, default=2000, help="hops back to back")
    parser.add_argument(
        "--hop-gap-ms", type=float, default=3.0, help="idle before each of the paced hops"
    )
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    payload = json.dumps({"x": "y" * max(0, args.payload - 10)}).encode()
    if args.role:
        out = Path(args.out)
        out.write_text(uvloop.run(role(args.role, args.url, args.steps, payload, out)))
        return
    with tempfile.TemporaryDirectory(prefix="agentops-floor-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js").start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            hops, paced = asyncio.run(
                declare_and_hop(server.url, args.hops, args.hop_gap_ms / 1000)
            )
            for name in ROLES:
                out = Path(tmp) / f"{name}.out"
                cmd = [sys.executable, __file__, "--role", name, "--url", server.url,
                       "--out", str(out), "--steps", str(args.steps),
                       "--payload", str(args.payload)]  # fmt: skip
                procs.append(subprocess.Popen(cmd))
                wait_for(out, procs[-1], 30 if name != "agent" else 600)
            gaps = json.loads((Path(tmp) / "agent.out").read_text())
            handed = uvloop.run(handovers(server.url, HANDOVERS))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(10)
            server.stop()
    hop50, step50 = statistics.median(hops), statistics.median(gaps)
    paced50 = statistics.median(paced)
    print(f"raw JetStream hop (publish→fetch→ack), back to back, n={len(hops)}: p50 {hop50:.3f} ms")
    print(
        f"raw JetStream hop, one at a time {args.hop_gap_ms:g} ms apart, n={len(paced)}: "
        f"p50 {paced50:.3f} ms"
    )
    print(
        f"floor step (NATS operations of one agent step only, {args.payload}-byte payloads), "
        f"n={len(gaps)}: p50 {step50:.3f} ms = {step50 / hop50:.1f}x the back-to-back hop, "
        f"{step50 / paced50:.1f}x the one-at-a-time hop"
    )
    hand50 = statistics.median(handed)
    print(
        f"one hand-over (publish → another process's push consumer has it), n={len(handed)}: "
        f"p50 {hand50:.3f} ms; a step's four = {4 * hand50 / hop50:.1f}x the back-to-back hop"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
