"""JetStream KV store of JSON documents, written with compare-and-swap on the revision.

Rules:
- `load` returns the document and its revision (0 when absent).
- `save(key, doc, revision)` creates when revision is 0 and otherwise updates only if the
  stored revision is still `revision`; a lost race raises `Conflict` (retryable), so the
  message that caused the write is redelivered and handled against the fresh state.
- A document that fails validation is reported as `CorruptDocument`, never returned half-read.
- Agent states are not stored here but as a head and a thread (`store/agents.py`).
- `scan` reads every current document of a bucket in one pass (a KV watch: one ordered
  consumer, last value per key); an undecodable document is logged and skipped, so one bad
  value never breaks a listing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import structlog
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, TypeAdapter, ValidationError

from agentops.bus.publisher import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    Item,
    Publisher,
    WrongLastSequence,
)
from agentops.core.state import TASK_RECORD_ADAPTER, TaskRecord
from agentops.core.workflow import WORKFLOW_ADAPTER, WorkflowRecord
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, RetryableError

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")
log = structlog.get_logger(__name__)


class Conflict(RetryableError):
    code = "conflict"


class CorruptDocument(AgentOpsError):
    code = "corrupt_document"


class DocumentStore(Generic[T]):
    """Documents in one KV bucket. With a `Publisher`, writes go through it (the processes'
    step path); without one (the edge, tools), through nats-py's KV API."""

    def __init__(
        self,
        kv: KeyValue,
        adapter: TypeAdapter[T],
        encode: Callable[[T], bytes] = lambda doc: doc.model_dump_json().encode(),
        *,
        publisher: Publisher | None = None,
        bucket: str = "",
    ) -> None:
        self.kv = kv
        self.adapter = adapter
        self.encode = encode
        self.publisher = publisher
        self.bucket = bucket

    async def load(self, key: str) -> tuple[T | None, int]:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        try:
            return self.adapter.validate_json(entry.value), entry.revision or 0
        except ValidationError as exc:
            raise CorruptDocument(f"stored document {key!r} is invalid: {exc}") from None

    def cas_item(self, key: str, doc: T, revision: int) -> Item:
        """The compare-and-swap write of `doc` as the Publisher sends it (to batch it with
        other publishes); a lost race surfaces as `WrongLastSequence` (see `conflict`)."""
        assert self.bucket, "a store without a bucket name writes through the KV API"
        # Revision 0 expects no entry at all, as KV create does.
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        return s.kv_key(self.bucket, key), self.encode(doc), headers

    @staticmethod
    def conflict(key: str, revision: int, exc: WrongLastSequence) -> Conflict:
        return Conflict(f"{key!r} changed since revision {revision}: {exc.message}")

    async def save(self, key: str, doc: T, revision: int) -> int:
        if self.publisher is not None and self.bucket:
            try:
                return await self.publisher.put(*self.cas_item(key, doc, revision))
            except WrongLastSequence as exc:
                raise self.conflict(key, revision, exc) from exc
        data = self.encode(doc)
        try:
            if revision == 0:
                return await self.kv.create(key, data)
            return await self.kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(f"{key!r} changed since revision {revision}") from exc

    async def keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except NoKeysError:
            return []


def workflow_records(
    buckets: Mapping[str, KeyValue], publisher: Publisher | None = None
) -> DocumentStore[WorkflowRecord]:
    """Workflow records (`nats kv get agentops_workflows <workflow_id>`); the orchestrator
    writes them."""
    return DocumentStore(
        buckets[s.WORKFLOWS_BUCKET],
        WORKFLOW_ADAPTER,
        publisher=publisher,
        bucket=s.WORKFLOWS_BUCKET,
    )


def task_records(
    buckets: Mapping[str, KeyValue], publisher: Publisher | None = None
) -> DocumentStore[TaskRecord]:
    """Task records (`nats kv get agentops_tasks <task_id>`); the orchestrator writes them."""
    return DocumentStore(
        buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER, publisher=publisher, bucket=s.TASKS_BUCKET
    )


SCAN_TIMEOUT_S = 5.0


async def scan(kv: KeyValue, adapter: TypeAdapter[T]) -> list[T]:
    return await scan_with(kv, lambda data, _key, _revision: adapter.validate_json(data))


async def scan_with(kv: KeyValue, decode: Callable[[bytes, str, int], V]) -> list[V]:
    """`decode(value, key, revision)` of every current entry of the bucket."""
    watcher = await kv.watchall(ignore_deletes=True)
    out: list[V] = []
    try:
        while True:
            entry = await watcher.updates(timeout=SCAN_TIMEOUT_S)  # type: ignore[no-untyped-call]
            if entry is None:  # the watcher's "initial values done" marker
                break
            if not entry.value:
                continue
            try:
                out.append(decode(entry.value, entry.key, entry.revision or 0))
            except (ValidationError, CorruptDocument) as exc:
                log.warning("store.corrupt_document", key=entry.key, error=str(exc))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return out
