"""The edge's indexes: a small summary of every task record and agent, kept in memory from
one KV watch per bucket (task records; agent summaries, which agents write at status changes,
`store/summaries.py`, so a step costs the edge nothing), so a listing, a count by status or a
scrape never reads every document.

Rules:
- One watch per bucket and edge process (an ordered consumer from each key's last value,
  then live): each entry is decoded into a summary of the few fields listings filter and
  sort by (`TaskSummary`, `AgentSummary`); a deleted key leaves the index. Reading a page
  then costs the page: its documents are read by key (`edge/tasks.py`, `edge/agents.py`).
- `sync()` before a listing: the bucket stream's last sequence (one STREAM.INFO) and a wait,
  bounded by `SYNC_WAIT_S`, until the watch has delivered it, so whatever was written before
  the request is listed (read your writes), from whichever edge replica.
- A watch that breaks (NATS restarted, the bucket deleted and declared again, a sequence
  behind the stream's) is started again from scratch: the index is rebuilt, never left stale
  in silence. Until its first pass is done, `sync()` waits for it (bounded).
- Records removed by a stream purge (deleting a task's data) send no delete marker: the
  orchestrator marks them `deleting` first, and such entries are checked by key
  (`prune_deleting`) before a listing or a count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KV_OP, KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from agentops.bus.connection import cancel_and_wait
from agentops.bus.setup import bind_bucket
from agentops.protocol import subjects as s
from agentops.store.summaries import AgentSummary

log = structlog.get_logger(__name__)

SYNC_WAIT_S = 2.0
CLOSE_WAIT_S = 2.0
MARKER = "Nats-Marker-Reason"  # nats-server 2.11+: a TTL or age expiry of a key


class TaskSummary(BaseModel):
    """What a listing of tasks filters and sorts by (decoded from the stored record)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str
    agent_id: str
    agent_ids: tuple[str, ...] = ()
    agent_type: str
    status: str
    created_at: datetime
    deleting: bool = False


S = TypeVar("S", bound=BaseModel)


@dataclass
class KvIndex(Generic[S]):
    """Summaries of every key of one bucket, kept current by a watch."""

    js: JetStreamContext
    kv: KeyValue
    bucket: str
    stream: str
    decode: Callable[[bytes], S]
    entries: dict[str, S] = field(default_factory=dict)
    seen_seq: int = 0
    stream_created: datetime | None = None  # of the stream the index was built from
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    rebuilds: int = 0
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"index:{self.stream}")

    def _rebuild(self) -> None:
        """Start the watch again from scratch; listings wait (bounded) for its first pass."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.ready.clear()
        self.rebuilds += 1
        self.start()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, CLOSE_WAIT_S)

    async def _run(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, the bucket gone: rebuild once it is back
                log.warning("edge.index_watch_failed", stream=self.stream, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            self.rebuilds += 1

    async def _watch(self) -> None:
        """One ordered consumer from each key's last value, applied in its callback; returns
        (to be started again) only by raising, when the subscription cannot be made."""
        # What the first pass covers: every message up to here that still exists.
        info = await self.js.stream_info(self.stream)
        start_seq, created = info.state.last_seq, info.created
        fresh: dict[str, S] = {}
        first = {"seq": 0, "done": False}

        def finish_first_pass() -> None:
            if not first["done"]:
                first["done"] = True
                self.entries, self.stream_created = fresh, created
                self.seen_seq = max(int(first["seq"]), start_seq)
                self.ready.set()
                self._changed.set()

        async def apply(msg: Msg) -> None:
            meta = msg.metadata
            seq = meta.sequence.stream
            key = s.kv_key_of(self.bucket, msg.subject)
            if first["done"]:
                target = self.entries
                self.seen_seq = max(self.seen_seq, seq)
            else:
                target, first["seq"] = fresh, max(int(first["seq"]), seq)
            operation = (msg.headers or {}).get(KV_OP) or (msg.headers or {}).get(MARKER)
            if operation is not None or not msg.data:  # a delete, purge or expiry marker
                target.pop(key, None)
            else:
                try:
                    target[key] = self.decode(msg.data)
                except ValidationError as exc:
                    log.warning("edge.index_skipped", key=key, error=str(exc)[:200])
            if not first["done"] and meta.num_pending == 0:
                finish_first_pass()
            self._changed.set()

        sub = await self.js.subscribe(
            s.kv_keys(self.bucket), stream=self.stream, cb=apply, ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=300.0,
        )  # fmt: skip
        try:
            cinfo = await sub.consumer_info()
            if cinfo.num_pending == 0 and sub.delivered == 0:
                finish_first_pass()
            await asyncio.Event().wait()  # until cancelled (a rebuild, or the edge stopping)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def sync(self, within_s: float = SYNC_WAIT_S) -> None:
        """Wait (bounded) until everything stored before this call is in the index."""
        self.start()
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:  # the bucket is gone: nothing is stored; it is declared again
            self.entries = {}
            self._rebuild()
            return
        last = info.state.last_seq
        if self.ready.is_set() and info.created != self.stream_created:  # declared again
            self._rebuild()
        if not await self._caught_up(last, within_s / 2):
            log.warning("edge.index_behind", stream=self.stream, seen=self.seen_seq, last=last)
            self._rebuild()  # a watch that stopped delivering is not trusted again
            await self._caught_up(last, within_s / 2)

    async def _caught_up(self, last: int, within_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not (self.ready.is_set() and self.seen_seq >= last):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
        return True

    async def prune_deleting(self, deleting: Callable[[S], bool]) -> None:
        """Drop entries marked as being deleted whose key is gone (purged without a marker)."""
        for key in [k for k, v in self.entries.items() if deleting(v)]:
            try:
                await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                self.entries.pop(key, None)


@dataclass
class Indexes:
    """The edge's two indexes: task records and agent summaries."""

    tasks: KvIndex[TaskSummary]
    agents: KvIndex[AgentSummary]

    @classmethod
    def of(cls, js: JetStreamContext, buckets: Mapping[str, KeyValue]) -> Indexes:
        tasks, agents = s.TASKS_BUCKET, s.SUMMARIES_BUCKET
        buckets = {b: buckets.get(b) or bind_bucket(js, b) for b in (tasks, agents)}
        return cls(
            KvIndex(js, buckets[tasks], tasks, s.kv_stream(tasks), TaskSummary.model_validate_json),
            KvIndex(js, buckets[agents], agents, s.kv_stream(agents),
                    AgentSummary.model_validate_json),
        )  # fmt: skip

    async def tasks_synced(self) -> dict[str, TaskSummary]:
        await self.tasks.sync()
        await self.tasks.prune_deleting(lambda t: t.deleting)
        return self.tasks.entries

    async def agents_synced(self) -> dict[str, AgentSummary]:
        await self.agents.sync()
        return self.agents.entries

    def start(self) -> None:
        self.tasks.start()
        self.agents.start()

    async def close(self) -> None:
        await self.tasks.close()
        await self.agents.close()


INDEXES = web.AppKey("indexes", Indexes)


async def start_indexes(app: web.Application) -> None:
    app[INDEXES].start()


async def close_indexes(app: web.Application) -> None:
    await app[INDEXES].close()
