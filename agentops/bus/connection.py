"""Connecting to NATS, encoding messages, and publishing them durably.

Rules:
- A process connects once, named `agentops-<process>`, and reconnects forever (to any seed
  URL of a comma-separated cluster list, or a node the cluster announced), with the
  credential and TLS `bus/auth.py` found for it (never logged).
- Every JetStream publish sets `Nats-Msg-Id` to the message id, so JetStream drops duplicates
  (a re-publish after a crash, a retried HTTP request).
- Encoding is JSON (readable with `nats sub` / `nats stream view`). An LLM request's JSON is
  assembled from the parts an agent sent before (`bus/conversation.py`).
- Publishes on the step path go through `bus/publisher.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel

from agentops.bus.auth import Auth
from agentops.bus.conversation import encode_llm_request
from agentops.bus.publisher import Item, Publisher
from agentops.config import nats_servers
from agentops.protocol import subjects as s
from agentops.protocol.messages import Event, LLMRequested
from agentops.protocol.subjects import connection_name

log = structlog.get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
ERROR_CODE = "Agentops-Error-Code"
ERROR_MESSAGE = "Agentops-Error"
ORIGINAL_SUBJECT = "Agentops-Original-Subject"


# A server that refuses the credential this many times in a row before the first connection
# will not change its mind by itself: stop retrying (`CredentialRefused`).
AUTH_REFUSALS = 5


class CredentialRefused(Exception):
    """The server refused this process's credential at start-up (not a network failure)."""


async def cancel_and_wait(task: asyncio.Task[Any], within_s: float) -> bool:
    """Cancel `task` and wait, bounded, until it ends; True if it did. The cancel is sent
    again while it runs: a task cancelled inside one of nats-py's requests may not see it
    (Python 3.11's `wait_for` drops a cancel that meets its future's result) and go on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not task.done() and (left := deadline - loop.time()) > 0:
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.05, left))
    return task.done()


def fail_requests(nc: Client) -> int:
    """Fail every request still waiting for an answer on `nc` (called as it disconnects):
    an answer to a request sent over a connection that died (a cluster node killed) never
    comes, and waiting out the timeout would stall its caller for seconds. The caller sees a
    timeout at once and retries over the new connection; every request here is idempotent
    (message ids, expected sequences). nats-py keeps these futures private (`_resp_map`)."""
    pending: dict[str, asyncio.Future[Any]] = getattr(nc, "_resp_map", None) or {}
    failed = 0
    for future in list(pending.values()):
        if not future.done():
            future.set_exception(nats.errors.TimeoutError())
            failed += 1
    return failed


async def connect(
    url: str, process: str, auth: Auth | None = None,
    on_lost: Sequence[Callable[[], object]] = (), **options: Any,
) -> Client:  # fmt: skip
    """Connect as `process`. `on_lost`: called (with `fail_requests`) when the connection
    drops, before nats-py reconnects: whatever waits for answers over it fails fast."""
    seen = {"connected": False, "refused": 0}
    holder: list[Client] = []

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))
        if not seen["connected"] and "authorization violation" in str(exc).lower():
            seen["refused"] += 1
            if seen["refused"] >= AUTH_REFUSALS:  # raised out of nats-py's connect loop
                raise CredentialRefused(str(exc))

    async def on_disconnect() -> None:
        failed = fail_requests(holder[0]) if holder else 0
        for hook in on_lost:
            hook()
        log.warning("nats.disconnected", requests_failed=failed)

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    defaults: dict[str, Any] = {
        "name": connection_name(process),
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        # A connection whose server stopped answering, or whose reader died, is found stale
        # after three unanswered PINGs (~60 s) and reconnected (nats-py's default: ~6 min).
        "ping_interval": 20,
        "max_outstanding_pings": 3,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }
    if auth is not None:
        defaults.update(auth.options)
    defaults.update(options)
    nc = Client()
    holder.append(nc)
    await nc.connect(servers=nats_servers(url), **defaults)
    seen["connected"] = True  # later refusals (a rotation) are reconnects: keep trying
    return nc


def encode(message: BaseModel) -> bytes:
    return wire(message)[0]


def wire(message: BaseModel) -> tuple[bytes, dict[str, str]]:
    """A message's JSON and the headers that describe it (besides its id)."""
    if isinstance(message, LLMRequested):
        return encode_llm_request(message)
    return message.model_dump_json().encode(), {}


async def publish(js: JetStreamContext, subject: str, message: BaseModel, msg_id: str) -> PubAck:
    data, headers = wire(message)
    return await js.publish(subject, data, headers={MSG_ID: msg_id, **headers})


async def publish_event(js: JetStreamContext, event: Event) -> PubAck:
    return await publish(js, event_subject(event), event, event.id)


def event_subject(event: Event) -> str:
    return s.event(event.task_id, event.agent_id, event.type)


def outgoing(items: list[tuple[str, BaseModel, str]]) -> list[Item]:
    """Messages (subject, message, message id) as the Publisher sends them."""
    out: list[Item] = []
    for subject, message, msg_id in items:
        data, headers = wire(message)
        out.append((subject, data, {MSG_ID: msg_id, **headers}))
    return out


async def publish_all(publisher: Publisher, items: list[tuple[str, BaseModel, str]]) -> None:
    """Publish several messages (subject, message, message id) and wait for all their acks.

    Raises RetryableError when JetStream does not confirm them in time (e.g. disconnected),
    so the message that caused them is redelivered and they are published again (same ids).
    """
    await publisher.publish_many(outgoing(items))
