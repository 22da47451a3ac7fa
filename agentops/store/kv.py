"""JetStream KV store of JSON documents, written with compare-and-swap on the revision.

Rules:
- `load` returns the document and its revision (0 when absent).
- `save(key, doc, revision)` creates when revision is 0 and otherwise updates only if the
  stored revision is still `revision`; a lost race raises `Conflict` (retryable), so the
  message that caused the write is redelivered and handled against the fresh state.
- A document that fails validation is reported as `CorruptDocument`, never returned half-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, TypeAdapter, ValidationError

from agentops.core.agent import STATE_EXCLUDE
from agentops.core.state import (
    AGENT_STATE_ADAPTER,
    TASK_RECORD_ADAPTER,
    AgentState,
    TaskRecord,
)
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, RetryableError

T = TypeVar("T", bound=BaseModel)


class Conflict(RetryableError):
    code = "conflict"


class CorruptDocument(AgentOpsError):
    code = "corrupt_document"


class DocumentStore(Generic[T]):
    def __init__(self, kv: KeyValue, adapter: TypeAdapter[T], exclude: Any = None) -> None:
        self.kv = kv
        self.adapter = adapter
        self.exclude = exclude  # fields not worth storing (pydantic `exclude` spec)

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

    async def save(self, key: str, doc: T, revision: int) -> int:
        data = doc.model_dump_json(exclude=self.exclude).encode()
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


def task_records(buckets: Mapping[str, KeyValue]) -> DocumentStore[TaskRecord]:
    """Task records (`nats kv get agentops_tasks <task_id>`); the orchestrator writes them."""
    return DocumentStore(buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER)


def agent_states(buckets: Mapping[str, KeyValue]) -> DocumentStore[AgentState]:
    """Agent states (`nats kv get agentops_agents <agent_id>`); each agent process writes its own."""
    return DocumentStore(buckets[s.AGENTS_BUCKET], AGENT_STATE_ADAPTER, exclude=STATE_EXCLUDE)
