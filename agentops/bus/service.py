"""The lifecycle every AgentOps process shares: connect, declare, register, serve, drain.

`run_process(process, setup)` reads settings, configures logging, connects as
`agentops-<process>` with its own reply-subject prefix and credential (`bus/auth.py`),
declares the streams and buckets if it is the process that does (`declares`) or waits for
them,
registers a NATS micro service (so `nats micro ls` and `$SRV.PING` find it), calls `setup` to
start consumers, then waits for SIGINT/SIGTERM and shuts down in reverse: consumers finish
their current message, the micro service stops, the connection drains.

A process's own metrics (`rt.metrics`, `bus/metrics.py`) are the `data` of its `status`
endpoint in `$SRV.STATS`, where the edge reads and sums them at scrape time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from agentops import __version__
from agentops.bus import direct
from agentops.bus.auth import nats_auth, principal
from agentops.bus.connection import CredentialRefused, connect
from agentops.bus.consumer import Consumer, GiveUp, Handler
from agentops.bus.metrics import ProcessMetrics
from agentops.bus.publisher import Publisher
from agentops.bus.setup import (
    attach_jetstream,
    cluster_size,
    consistent_buckets,
    ensure_jetstream,
    replicas_for,
)
from agentops.config import Settings, load_nats, load_retention, load_settings, mask_url
from agentops.logging import configure_logging
from agentops.protocol import permissions
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    """What a service's setup function gets: connection, JetStream, buckets, settings."""

    process: str
    settings: Settings
    nc: Client
    js: JetStreamContext
    buckets: dict[str, KeyValue]
    consumers: list[Consumer] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    status_extra: Callable[[], dict[str, Any]] | None = None
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Request/reply endpoints setup adds to the process's micro service: (name, subject, handler).
    # They are registered with it after setup, so `$SRV.PING` finds only processes that work.
    endpoints: list[tuple[str, str, Callable[[Request], Awaitable[None]]]] = field(
        default_factory=list
    )
    replicas: int = 1  # of the streams and buckets (what a re-declaration uses)
    metrics: ProcessMetrics = field(default_factory=ProcessMetrics)  # in $SRV.STATS (status)
    # The step path's JetStream publishes and state writes (acks on one subscription).
    publisher: Publisher = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = Publisher(self.nc)

    def consumer(
        self, durable: str, filter_subject: str, handler: Handler, *, concurrency: int = 1,
        on_give_up: GiveUp | None = None,
    ) -> Consumer:  # fmt: skip
        """A consumer of the work stream, pushed to this process's own deliver subject."""
        return Consumer(
            self.nc,
            self.js,
            stream=s.WORK_STREAM,
            durable=durable,
            filter_subject=filter_subject,
            deliver_subject=s.deliver_subject(self.process, durable),
            handler=handler,
            concurrency=concurrency,
            on_give_up=on_give_up,
        )

    async def add_consumer(self, consumer: Consumer) -> None:
        await consumer.start()
        self.consumers.append(consumer)

    async def serve_pool(
        self, durable: str, filter_subject: str, handler: Handler, on_give_up: GiveUp,
        concurrency: int,
    ) -> None:  # fmt: skip
        """A work pool on the work stream: requests handled concurrently, answered even when
        they have to be dead-lettered."""
        pool = self.consumer(
            durable,
            filter_subject,
            handler,
            concurrency=concurrency,
            on_give_up=on_give_up,
        )
        await self.add_consumer(pool)

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "process": self.process,
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 3),
            "consumers": len(self.consumers),
            "handled": sum(c.handled for c in self.consumers),
            "stalls_kicked": sum(c.kicks for c in self.consumers),
            "consumers_recreated": sum(c.recreated for c in self.consumers),
            "dead_letters": sum(c.dead_lettered for c in self.consumers),
        }
        if self.status_extra is not None:
            info.update(self.status_extra())
        return info


Setup = Callable[[Runtime], Awaitable[None]]


STATUS_ENDPOINT = "status"


async def register_micro(rt: Runtime, description: str) -> Service:
    def stats(endpoint: EndpointStats) -> Any:
        if endpoint.name != STATUS_ENDPOINT:
            return None
        return {"metrics": rt.metrics.snapshot()}

    service = await add_service(
        rt.nc,
        name=s.service_name(rt.process),
        version=__version__,
        description=description,
        metadata={"process": rt.process, "pid": str(os.getpid())},
        stats_handler=stats,
    )

    async def status(req: Request) -> None:
        await req.respond(json.dumps(rt.status()).encode())

    await service.add_endpoint(
        name=STATUS_ENDPOINT, subject=s.control_subject(rt.process, "status"), handler=status
    )
    for name, subject, handler in rt.endpoints:
        await service.add_endpoint(name=name, subject=subject, handler=handler)
    return service


async def serve(process: str, description: str, setup: Setup, settings: Settings) -> None:
    configure_logging(process, settings.log_level, settings.log_format)
    replica = os.environ.get("AGENTOPS_REPLICA")  # `up --scale`: replica n of the process
    structlog.contextvars.bind_contextvars(
        process=process, **({"replica": replica} if replica else {})
    )
    nats_url = settings.effective_nats_url
    auth = nats_auth(settings, principal(process, replica))
    lost: list[Callable[[], object]] = [direct.fail_batches]  # + the publisher's, once made
    try:
        nc = await connect(nats_url, process, auth, lost, inbox_prefix=s.inbox_prefix(process))
    except CredentialRefused:
        raise ConfigError(
            f"NATS at {mask_url(nats_url)} refused this process's credential "
            f"({auth.describe()}): a server you run must name its key (`agentops init "
            "--hub-users`, AGENT_OPS_DEPLOY.md), or give NATS_CREDS / NATS_NKEY_SEED / a user "
            "in NATS_URL"
        ) from None
    js = nc.jetstream(domain=settings.jetstream_domain)
    declare = declares(process, settings.jetstream_declare, auth.own)
    replicas = replicas_for(load_nats(settings).replicas, cluster_size(nc))
    try:
        buckets = await (
            ensure_jetstream(js, load_retention(settings).days, replicas)
            if declare
            else attach_jetstream(js, permissions.waits_for(process))
        )
    except ConfigError as exc:
        log.error("process.start_failed", error=exc.message)
        await _bounded(nc.close(), 2)
        raise
    buckets = consistent_buckets(nc, js, buckets)
    rt = Runtime(process=process, settings=settings, nc=nc, js=js, buckets=buckets)
    rt.replicas = replicas
    lost.append(rt.publisher.fail_pending)
    await setup(rt)
    # Discoverable once set up: `$SRV.PING` (and so /health) finds only processes that work.
    micro = await register_micro(rt, description)
    tune_gc()
    log.info(
        "process.started", nats=mask_url(nats_url), pid=os.getpid(), auth=auth.describe(),
        jetstream_domain=settings.jetstream_domain, declare=declare,
    )  # fmt: skip

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("process.stopping")
    # Every step is bounded: with NATS down, drain would otherwise wait for a reconnect forever.
    await _bounded(asyncio.gather(*(c.stop() for c in rt.consumers), return_exceptions=True), 15)
    for hook in rt.on_shutdown:
        await _bounded(hook(), 10)
    await _bounded(micro.stop(), 3)
    if not await _bounded(nc.drain(), 5):
        await _bounded(nc.close(), 2)
    log.info("process.stopped")


def declares(process: str, setting: bool | None, own_credential: bool) -> bool:
    """Does this process create the streams and buckets? As AGENTOPS_JETSTREAM_DECLARE says;
    unset: with its own least-privilege credential only the orchestrator may (the others
    wait for it), with the operator's credentials (or none) every process does."""
    if setting is not None:
        return setting
    return process == permissions.DECLARER or not own_credential


def tune_gc() -> None:
    """Fewer cyclic-GC passes: handling a message allocates many short-lived pydantic objects
    and the default gen-0 threshold (700) made collection ~15% of a service's CPU. Objects
    alive after start-up (modules, schemas) are frozen out of collection entirely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _bounded(step: Awaitable[object], seconds: float) -> bool:
    """Run one shutdown step; give up after `seconds` and carry on stopping."""
    try:
        await asyncio.wait_for(step, seconds)
    except Exception as exc:  # TimeoutError, or the step failed: stopping goes on regardless
        log.warning("process.stop_step_failed", error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def run_process(process: str, description: str, setup: Setup) -> None:
    """Entry point for `services/<name>.py: main()`."""
    settings = load_settings()
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run  # type: ignore[assignment]
    try:
        runner(serve(process, description, setup, settings))
    except ConfigError as exc:  # a message for the operator, not a traceback
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
