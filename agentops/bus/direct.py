"""Batched direct gets: many stored messages of a stream in one request (nats-server ≥ 2.11).

A JetStream direct get with `batch` answers with up to that many messages on the request's
reply subject, each with its stream headers, then an end-of-batch status (204 `EOB`). It needs
no consumer (nothing to create or delete, only the stream's DIRECT.GET permission) and it can
be sent to any replica of an R3 stream. Two forms are used:
- `next_by_subj` from a sequence: every message on a subject filter in stream order, continued
  from the last sequence seen while the end-of-batch says more are pending;
- `multi_last`: the last message of each subject in a list (at most `MULTI_LAST_SUBJECTS` per
  request).

Rules:
- A batch is collected on a private inbox (under the process's inbox prefix) until its
  end-of-batch or `DIRECT_TIMEOUT_S`; a 404 means nothing matched. Any other status, or no
  end in time, raises `RetryableError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agentops.protocol.errors import RetryableError

DIRECT_TIMEOUT_S = 10.0
BATCH = 512
BATCH_BYTES = 4 * 1024 * 1024
MULTI_LAST_SUBJECTS = 256
_STATUS = "Status"


@dataclass(frozen=True, slots=True)
class Stored:
    subject: str
    sequence: int
    data: bytes


def api_prefix(js: JetStreamContext) -> str:
    """`$JS.API`, or `$JS.<domain>.API` for a JetStream reached through a leaf node."""
    prefix: str = js._prefix  # nats-py keeps the domain's prefix here and nowhere public
    return prefix


_IN_FLIGHT: set[asyncio.Queue[Msg | None]] = set()


def fail_batches() -> None:
    """The connection dropped: the rest of a batch in flight will not come (a connection hook,
    `connection.connect(on_lost=...)`); each fails at once instead of after its timeout."""
    for queue in _IN_FLIGHT:
        queue.put_nowait(None)


async def _batch(nc: Client, subject: str, request: dict[str, Any]) -> tuple[list[Stored], int]:
    """One batched request: the messages, and how many more match (0 when done)."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg | None] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=queue.put)
    out: list[Stored] = []
    _IN_FLIGHT.add(queue)
    try:
        await nc.publish(subject, json.dumps(request).encode(), reply=inbox)
        async with asyncio.timeout(DIRECT_TIMEOUT_S):
            while True:
                msg = await queue.get()
                if msg is None:
                    raise RetryableError(f"direct get on {subject}: the connection dropped")
                headers = msg.headers or {}
                status = headers.get(_STATUS)
                if status == "204":
                    return out, int(headers.get("Nats-Num-Pending", "0") or 0)
                if status == "404":
                    return out, 0
                if status is not None:
                    raise RetryableError(f"direct get on {subject}: status {status}")
                out.append(Stored(headers["Nats-Subject"], int(headers["Nats-Sequence"]), msg.data))
    except TimeoutError:
        raise RetryableError(f"direct get on {subject} did not finish in time") from None
    finally:
        _IN_FLIGHT.discard(queue)
        await sub.unsubscribe()


async def scan(
    nc: Client, js: JetStreamContext, stream: str, subject_filter: str
) -> AsyncIterator[list[Stored]]:
    """Every stored message on `subject_filter`, in stream order, a batch at a time."""
    sequence = 1
    while True:
        found, pending = await next_by_subject(nc, js, stream, subject_filter, sequence)
        if found:
            yield found
            sequence = found[-1].sequence + 1
        if not found or not pending:
            return


async def next_by_subject(
    nc: Client,
    js: JetStreamContext,
    stream: str,
    subject_filter: str,
    sequence: int,
    size: int = BATCH,
    max_bytes: int = BATCH_BYTES,
) -> tuple[list[Stored], int]:
    """Up to `size` stored messages on `subject_filter` from `sequence` on, and how many more
    match (0: none up to the stream's last message when the request was served)."""
    subject = f"{api_prefix(js)}.DIRECT.GET.{stream}"
    request = {"next_by_subj": subject_filter, "seq": sequence, "batch": size}
    return await _batch(nc, subject, {**request, "max_bytes": max_bytes})


async def last_of(
    nc: Client, js: JetStreamContext, stream: str, subjects: list[str]
) -> list[Stored]:
    """The last message of each subject (those that have one), in stream order."""
    api = f"{api_prefix(js)}.DIRECT.GET.{stream}"
    out: list[Stored] = []
    for start in range(0, len(subjects), MULTI_LAST_SUBJECTS):
        chunk = subjects[start : start + MULTI_LAST_SUBJECTS]
        while chunk:  # a batch cut short by its byte limit says how many more are pending
            request = {"multi_last": chunk, "batch": len(chunk), "max_bytes": BATCH_BYTES}
            found, pending = await _batch(nc, api, request)
            out.extend(found)
            if not pending or not found:
                break
            seen = {f.subject for f in found}
            chunk = [c for c in chunk if c not in seen]
    out.sort(key=lambda stored: stored.sequence)
    return out
