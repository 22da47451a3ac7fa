"""Connecting to NATS, encoding messages, and publishing them durably.

Rules:
- A process connects once, named `agentops-<process>`, and reconnects forever.
- Every JetStream publish sets `Nats-Msg-Id` to the message id, so JetStream drops duplicates
  (a re-publish after a crash, a retried HTTP request).
- Encoding is JSON (readable with `nats sub` / `nats stream view`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel

from agentops.protocol import subjects as s
from agentops.protocol.errors import RetryableError
from agentops.protocol.messages import Event
from agentops.protocol.subjects import connection_name

log = structlog.get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
ERROR_CODE = "Agentops-Error-Code"
ERROR_MESSAGE = "Agentops-Error"
ORIGINAL_SUBJECT = "Agentops-Original-Subject"


async def connect(url: str, process: str, **options: Any) -> Client:
    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    async def on_disconnect() -> None:
        log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    defaults: dict[str, Any] = {
        "name": connection_name(process),
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }
    defaults.update(options)
    return await nats.connect(url, **defaults)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


async def publish(js: JetStreamContext, subject: str, message: BaseModel, msg_id: str) -> PubAck:
    return await js.publish(subject, encode(message), headers={MSG_ID: msg_id})


async def publish_event(js: JetStreamContext, event: Event) -> PubAck:
    return await publish(js, event_subject(event), event, event.id)


def event_subject(event: Event) -> str:
    return s.event(event.task_id, event.agent_id, event.type)


PUBLISH_TIMEOUT_S = 10.0


async def publish_all(js: JetStreamContext, items: list[tuple[str, BaseModel, str]]) -> None:
    """Publish several messages without waiting for each ack in turn, then wait for all.

    Raises RetryableError when JetStream does not confirm them in time (e.g. disconnected),
    so the message that caused them is redelivered and they are published again (same ids).
    """
    futures = [
        await js.publish_async(subject, encode(message), headers={MSG_ID: msg_id})
        for subject, message, msg_id in items
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*futures), PUBLISH_TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as exc:
        raise RetryableError(f"JetStream did not confirm a publish: {exc!r}") from exc
