"""JetStream publishes and compare-and-swap writes, acknowledged through one subscription.

Every step publishes several messages in every process (work, events, the agent's state), so
the cost of one acknowledged publish is paid many times per step. nats-py's `js.publish` makes
a fresh reply token, a future with callbacks, a semaphore wait and a parsed `PubAck` for each;
here all acknowledgements arrive on one wildcard subscription under the process's own inbox
prefix (so a least-privilege process may receive them) and resolve plain futures.

Rules:
- `publish_many` sends every message first and then waits for all the acks at once, bounded
  by `PUBLISH_TIMEOUT_S`. A missing ack (disconnected, JetStream down) or a JetStream error
  raises `RetryableError`: the message that caused the publishes is redelivered and they are
  sent again under the same `Nats-Msg-Id`s, which JetStream deduplicates.
- `put` is one publish that returns the stream sequence (a KV revision); with
  `Nats-Expected-Last-Subject-Sequence` a lost compare-and-swap raises `WrongLastSequence`.
- A dropped connection fails every publish still waiting for its ack (`fail_pending`,
  called by the connection's disconnect hook): the same `RetryableError` as a timeout, at once.
- It subscribes on first use, so a `Publisher` can be made before the connection is used.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agentops.protocol.errors import RetryableError

# A publish the stream cannot take (no leader while a cluster elects one, ~5 s) times out and
# is retried by redelivery: 4 s (was 10 s) keeps a node loss's stall short. Acks lost with
# a dropped connection fail at once (`fail_pending`).
PUBLISH_TIMEOUT_S = 4.0
WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code for a failed expected-sequence check
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"

Item = tuple[str, bytes, Mapping[str, str]]  # subject, payload, headers


class WrongLastSequence(RetryableError):
    code = "conflict"


class Publisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        self._starting: asyncio.Lock | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    async def publish_many(self, items: Sequence[Item]) -> list[int]:
        """Publish all, then wait for every ack; the stream sequence of each, in order."""
        if not items:
            return []
        await self._started()
        loop = asyncio.get_running_loop()
        futures: list[tuple[str, asyncio.Future[Msg]]] = []
        try:
            for subject, payload, headers in items:
                reply = f"{self._prefix}{next(self._tokens)}"
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[reply] = future
                futures.append((reply, future))
                await self.nc.publish(subject, payload, reply=reply, headers=dict(headers))
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                acks = [await future for _, future in futures]
        except TimeoutError:
            raise RetryableError("JetStream did not confirm a publish in time") from None
        finally:
            for reply, _ in futures:
                self._waiting.pop(reply, None)
        return [_sequence(ack, subject) for ack, (subject, _, _) in zip(acks, items, strict=True)]

    def fail_pending(self) -> None:
        """The connection dropped: acks of what was sent over it will not come; fail now."""
        for future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(TimeoutError())

    async def put(self, subject: str, payload: bytes, headers: Mapping[str, str]) -> int:
        (sequence,) = await self.publish_many([(subject, payload, headers)])
        return sequence

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _started(self) -> None:
        if self._sub is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sub is None:
                inbox = self.nc.new_inbox()
                self._sub = await self.nc.subscribe(f"{inbox}.*", cb=self._on_ack)
                self._prefix = f"{inbox}."

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)


def _sequence(ack: Msg, subject: str) -> int:
    if not ack.data:  # a status message: no JetStream stream listens on the subject
        status = (ack.headers or {}).get("Status", "?")
        raise RetryableError(f"no JetStream answer for {subject} (status {status})")
    body: dict[str, Any] = json.loads(ack.data)
    error = body.get("error")
    if error:
        detail = f"JetStream refused a publish to {subject}: {error.get('description', error)}"
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            raise WrongLastSequence(detail)
        raise RetryableError(detail)
    return int(body["seq"])
