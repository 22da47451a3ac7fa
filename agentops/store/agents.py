"""Agent states in two parts: a small head in KV and the thread's items in the threads stream.

Layout (DESIGN §4a):
- the head is `agentops_agents/<agent_id>` (`nats kv get agentops_agents <agent_id>`): the
  state without its thread, plus `"format": 2`, `"thread_len": n` and `"thread": null` (an
  older version then refuses the document instead of taking it for an empty thread);
- item `i` is the message on `agentops.thread.<agent_id>.<i>` (stream AGENTOPS_THREADS, which
  keeps one message per subject), the item's JSON.

Rules:
- A write puts the items a transition appended first (`item_writes`), then the head with
  compare-and-swap on its revision (`head_write`): the head is the commit point. Readers take
  items only below the head's `thread_len`, so items of a step whose head write lost (a crash,
  a stale replica) are never seen; the same index is written again when the step is decided
  again. A write costs what the transition added, not the thread.
- Items are written only from a state known to be the stored one: the agent process checks
  (`refresh`) unless its cache is known current, since a stale state's items would replace
  committed ones. Two writers that both hold the stored state are deciding the same message
  (a redelivery racing its first delivery) and write the same items.
- Format 1 (before heads) is the whole state with its thread inline. It is read as it is (its
  tallies derived from the thread) and becomes format 2 with its next write: `stored_len` 0
  sends every item. A format newer than `FORMAT` is refused (`CorruptDocument`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import TypeAdapter, ValidationError

from agentops.bus import direct
from agentops.bus.publisher import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    Item,
    Publisher,
    WrongLastSequence,
)
from agentops.core.agent import STATE_EXCLUDE
from agentops.core.items import item_bytes
from agentops.core.state import AgentState, ThreadItem
from agentops.protocol import subjects as s
from agentops.store.kv import Conflict, CorruptDocument

FORMAT = 2
_HEAD_EXCLUDE: Any = {"thread": True, **STATE_EXCLUDE}
_ITEM: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)


class StoredHead(AgentState):
    """The KV document: a head (format 2) or a whole format-1 state."""

    thread: tuple[ThreadItem, ...] | None = None  # type: ignore[assignment]
    format: int = 1
    thread_len: int = 0


_HEAD: TypeAdapter[StoredHead] = TypeAdapter(StoredHead)
_STATE_FIELDS = tuple(name for name in AgentState.model_fields if name != "thread")


@dataclass(frozen=True, slots=True)
class Head:
    """A head as read: `state.thread` is empty unless the document was format 1."""

    state: AgentState
    revision: int
    thread_len: int
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Loaded:
    """A whole state as the agent process holds it."""

    state: AgentState
    revision: int
    stored_len: int  # items of `state.thread` on the threads stream (the rest are new)
    nbytes: int = 0  # the stored size of its items, for the cache's bound


def encode_head(state: AgentState) -> bytes:
    body = state.model_dump_json(exclude=_HEAD_EXCLUDE).encode()
    tail = b'"format":%d,"thread_len":%d,"thread":null}' % (FORMAT, len(state.thread))
    return body[:-1] + b"," + tail


def decode_head(data: bytes, revision: int, key: str = "") -> Head:
    try:
        doc = _HEAD.validate_json(data)
    except ValidationError as exc:
        raise CorruptDocument(f"stored agent {key!r} is invalid: {exc}") from None
    if doc.format > FORMAT:
        raise CorruptDocument(
            f"stored agent {key!r} has format {doc.format}, newer than this version reads "
            f"({FORMAT}): upgrade every AgentOps process"
        )
    fields = {name: getattr(doc, name) for name in _STATE_FIELDS}
    if doc.format == 1:
        state = AgentState.model_construct(**fields, thread=doc.thread or ()).with_tallies()
        return Head(state, revision, len(state.thread), legacy=True)
    return Head(AgentState.model_construct(**fields, thread=()), revision, doc.thread_len)


class AgentStore:
    """Heads and threads of agents. With a `Publisher` it writes (the agent process)."""

    def __init__(
        self, nc: Client, js: JetStreamContext, kv: KeyValue, publisher: Publisher | None = None
    ) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.publisher = publisher

    # ---- reading ----
    async def head(self, agent_id: str) -> Head | None:
        try:
            entry = await self.kv.get(agent_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        return decode_head(entry.value, entry.revision or 0, agent_id)

    async def load(self, agent_id: str) -> Loaded | None:
        return await self.refresh(agent_id, None)

    async def refresh(self, agent_id: str, cached: Loaded | None) -> Loaded | None:
        """The stored state, reusing what `cached` (a state this process stored or read)
        holds: only the items after it are read."""
        head = await self.head(agent_id)
        if head is None:
            return None
        if cached is not None and cached.revision == head.revision:
            return cached
        if head.legacy:
            return Loaded(head.state, head.revision, 0, len(encode_head(head.state)))
        have = cached.state.thread if cached is not None else ()
        if len(have) > head.thread_len or (cached is not None and cached.stored_len < len(have)):
            have = ()  # not a committed prefix of this head: read it all
        raw = await self.raw_items(agent_id, len(have), head.thread_len)
        thread = (*have, *(_decode_item(data, agent_id) for data in raw))
        nbytes = (cached.nbytes if have and cached is not None else 0) + sum(map(len, raw))
        state = head.state.model_copy(update={"thread": thread})
        return Loaded(state, head.revision, head.thread_len, nbytes)

    async def raw_items(self, agent_id: str, start: int, end: int) -> list[bytes]:
        """Items `start` to `end` (exclusive) as stored, in order."""
        return [data async for data in self.iter_raw(agent_id, start, end)]

    async def iter_raw(self, agent_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Items `start` to `end` (exclusive) as stored, in order, read a batch at a time."""
        if end <= start:
            return
        found: dict[int, bytes] = {}
        expected = start
        if end - start <= direct.MULTI_LAST_SUBJECTS:
            subjects = [s.thread_item(agent_id, i) for i in range(start, end)]
            batches: AsyncIterator[list[direct.Stored]] = _once(
                direct.last_of(self.nc, self.js, s.THREADS_STREAM, subjects)
            )
        else:
            batches = direct.scan(self.nc, self.js, s.THREADS_STREAM, s.thread_filter(agent_id))
        async for batch in batches:
            for stored in batch:
                index = s.thread_index(stored.subject)
                if start <= index < end:
                    found[index] = stored.data
            while expected in found:
                yield found.pop(expected)
                expected += 1
            if expected == end:
                return
        raise CorruptDocument(
            f"thread of agent {agent_id!r}: item {expected} of {end} is missing from "
            f"{s.THREADS_STREAM}"
        )

    async def items(self, agent_id: str, start: int, end: int) -> list[ThreadItem]:
        return [_decode_item(d, agent_id) for d in await self.raw_items(agent_id, start, end)]

    # ---- writing (the agent process) ----
    @staticmethod
    def item_writes(state: AgentState, stored_len: int) -> list[Item]:
        """The items of `state.thread` not stored yet, as the Publisher sends them."""
        return [
            (s.thread_item(state.agent_id, i), item_bytes(item), {})
            for i, item in enumerate(state.thread[stored_len:], stored_len)
        ]

    @staticmethod
    def head_write(state: AgentState, revision: int) -> Item:
        """The head's compare-and-swap write (revision 0: it must not exist yet)."""
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        return s.kv_key(s.AGENTS_BUCKET, state.agent_id), encode_head(state), headers

    @staticmethod
    def conflict(agent_id: str, revision: int, exc: WrongLastSequence) -> Conflict:
        return Conflict(f"agent {agent_id!r} changed since revision {revision}: {exc.message}")

    async def save(self, state: AgentState, base: Loaded | None) -> Loaded:
        """Write `state` over `base` (None: a new agent): its new items, then its head."""
        assert self.publisher is not None, "a store without a publisher does not write"
        stored_len = base.stored_len if base is not None else 0
        revision = base.revision if base is not None else 0
        items = self.item_writes(state, stored_len)
        await self.publisher.publish_many(items)
        try:
            revision = await self.publisher.put(*self.head_write(state, revision))
        except WrongLastSequence as exc:
            raise self.conflict(state.agent_id, revision, exc) from exc
        return self.saved(state, base, revision, items)

    @staticmethod
    def saved(state: AgentState, base: Loaded | None, revision: int, items: list[Item]) -> Loaded:
        """What is stored after `items` and a head at `revision` were written over `base`."""
        nbytes = (base.nbytes if base is not None and base.stored_len else 0) + sum(
            len(data) for _, data, _ in items
        )
        return Loaded(state, revision, len(state.thread), nbytes)


def _decode_item(data: bytes, agent_id: str) -> ThreadItem:
    try:
        return _ITEM.validate_json(data)
    except ValidationError as exc:
        raise CorruptDocument(f"a thread item of agent {agent_id!r} is invalid: {exc}") from None


async def _once(batch: Any) -> AsyncIterator[list[direct.Stored]]:
    yield await batch
