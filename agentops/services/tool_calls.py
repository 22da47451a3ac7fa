"""Side-effecting tool calls: claimed before they run, their answers stored before they are sent.

A call with side effects (not `idempotent`) is recorded in `agentops_tool_calls` under
(agent, step, call id), so the agent's own prefix holds its calls (`store/deletion.py` purges
them with the agent):

- Before it runs it is claimed: a `started` record (its owner, `this_process()`, and start
  time) that only the first delivery can create.
- When it has run, its answer is stored in the record (`done`, compare-and-swap on the claim)
  BEFORE the answer is sent. A redelivery of a done call sends the stored answer again, under
  the reply's fixed message id: if the first send reached the stream JetStream drops this one,
  and if it was lost (NATS away at that instant) the agent gets the real result now.
- The stored answer is the answer sent: a result too large for a record (`MAX_RECORD_BYTES`,
  the size of a thread item, which is all the agent would keep of it anyway) is cut by
  `core/items.fit` (a marker in each cut string says how much was left out) before it is stored
  and sent, so every delivery sends the same answer.
- A redelivery of a call this process is still running, or ran but could not yet store (NATS
  away), waits for that run (`Calls.jobs`) and sends its answer: it never runs twice and is
  never called `interrupted`.
- A claim this process wrote whose call never ran here (the claim's write was confirmed too
  late, so the delivery was retried): the call runs now.
- A claim of another process that is known dead (same host, its PID gone, a zombie or reused),
  or whose call's timeout passed `GRACE_S` ago, was cut off while it ran: its answer is
  `interrupted` (stored too, so it stays the answer). This is the only `interrupted`. A claim
  whose owner may still be running it (a replica cut off from NATS longer than the ack wait)
  is waited for: the delivery is retried later (`RetryableError`, nak with backoff).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, TypeAdapter

from agentops.core.items import MAX_ITEM_BYTES, clip, fit
from agentops.protocol.errors import ErrorInfo, RetryableError
from agentops.protocol.messages import ToolCompleted, ToolRequested
from agentops.store.kv import Conflict, DocumentStore

MAX_RECORD_BYTES = MAX_ITEM_BYTES  # a stored answer; the agent keeps no more of a result
RESULT_BUDGET = MAX_RECORD_BYTES - 8 * 1024  # room for the record's and answer's other fields
GRACE_S = 30.0  # past a call's timeout, a claim whose owner is not known dead is abandoned
STORE_RETRY_MAX_S = 5.0
log = structlog.get_logger(__name__)
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolCallRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    state: Literal["started", "done"]
    request_id: str
    owner: str = ""  # `this_process()` of the claimer ("" in claims of older versions)
    started_at: datetime | None = None
    reply: ToolCompleted | None = None


RECORD_ADAPTER: TypeAdapter[ToolCallRecord] = TypeAdapter(ToolCallRecord)


def record_key(msg: ToolRequested) -> str:
    call = (
        msg.call_id
        if _KEY_SAFE.match(msg.call_id)
        else hashlib.sha256(msg.call_id.encode()).hexdigest()[:32]
    )
    return f"{msg.agent_id}.{msg.step}.{call}"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, None if it is gone or a
    zombie: with the PID it names one process, never a later one given the same PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22, starttime


@cache
def this_process() -> str:
    """`host:pid:start`: which process claimed a call."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def owner_dead(owner: str) -> bool:
    """Known dead: no owner (an older version's claim), or a process of this host that is gone.
    A process of another host is not known dead (only time tells)."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if not owner or not pid.isdigit():
        return True
    if host != socket.gethostname():
        return False
    return _start_time(int(pid)) != start


def cut(answer: ToolCompleted) -> ToolCompleted:
    """The answer as stored and sent: its result (and error) fitted into a record."""
    size = len(answer.model_dump_json().encode())
    if size <= MAX_RECORD_BYTES:
        return answer
    update: dict[str, object] = {"result": fit(answer.result, RESULT_BUDGET)}
    if answer.error is not None:
        error = answer.error.model_copy(
            update={"message": clip(answer.error.message, 4000), "details": None}
        )
        update["error"] = error
    return answer.model_copy(update=update)


Run = Callable[[], Awaitable[ToolCompleted]]


class ClaimTaken(RetryableError):
    """A claim changed under its run (purged and claimed again): the delivery is retried
    and finds the new claim."""

    code = "conflict"


@dataclass
class Calls:
    """This process's side of the claims: `answer` is what to send for a call.

    `jobs` holds each call this process claimed until its answer is stored; so a claim of
    this process with no job here is one whose call never ran."""

    store: DocumentStore[ToolCallRecord]
    interrupted: Callable[[ToolRequested], ToolCompleted]
    owner: str = field(default_factory=this_process)
    jobs: dict[str, asyncio.Task[ToolCompleted]] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "replayed": 0, "interrupted": 0}
    )

    async def answer(self, msg: ToolRequested, run: Run) -> ToolCompleted:
        """The call's answer, stored in its record: run here once, or the stored one."""
        key = record_key(msg)
        job = self.jobs.get(key)
        if job is None:
            job = asyncio.create_task(self._settle(msg, key, run), name=f"tool-call:{key}")
            self.jobs[key] = job
            job.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(job)  # a delivery given up on never cancels a run

    def _forget(self, key: str, job: asyncio.Task[ToolCompleted]) -> None:
        """A job ends stored (the record holds its answer) or before its call ran (a claim
        not written): either way the next delivery goes by the record."""
        if self.jobs.get(key) is job:
            del self.jobs[key]
        if not job.cancelled():
            job.exception()  # retrieved: the deliveries awaiting it have raised it already

    async def _settle(self, msg: ToolRequested, key: str, run: Run) -> ToolCompleted:
        """Claim, run, store: what to answer. A failed claim write raises (the delivery is
        retried); once the call has run, its answer is stored whatever it takes."""
        claim = ToolCallRecord(
            state="started", request_id=msg.id, owner=self.owner, started_at=datetime.now(UTC)
        )
        try:
            revision = await self.store.save(key, claim, 0)
        except Conflict:
            record, revision = await self.store.load(key)
            if record is None:  # gone between the two reads (the task deleted): try again
                raise RetryableError(f"the claim of tool call {key} vanished") from None
            if record.reply is not None:
                self.counts["replayed"] += 1
                return record.reply
            if record.owner != self.owner:
                if not self._abandoned(msg, record):
                    raise RetryableError(
                        f"tool call {key} is claimed by {record.owner}, which may still be "
                        "running it"
                    ) from None
                self.counts["interrupted"] += 1
                return await self._store(key, record, revision, cut(self.interrupted(msg)))
            # Our own claim, and no job of it here: its write was confirmed too late, the
            # delivery was retried, and the call never ran. It runs now.
            claim = record
        try:
            answer = await run()
        except Exception as exc:  # it may have run in part: never again; the error is its answer
            log.exception("tool_call.run_failed", key=key)
            error = ErrorInfo(code="tool_crashed", message=f"{type(exc).__name__}: {exc}")
            answer = self.interrupted(msg).model_copy(update={"error": error})
        return await self._store(key, claim, revision, cut(answer))

    def _abandoned(self, msg: ToolRequested, record: ToolCallRecord) -> bool:
        if owner_dead(record.owner):
            return True
        started = record.started_at or datetime.min.replace(tzinfo=UTC)
        deadline = started + timedelta(seconds=msg.timeout_s + GRACE_S)
        return datetime.now(UTC) > deadline

    async def _store(
        self, key: str, claim: ToolCallRecord, revision: int, answer: ToolCompleted
    ) -> ToolCompleted:
        """Store `answer` over the claim (its owner and start time kept), retrying while NATS
        is away: the answer exists only here until then. An answer already stored (a write
        confirmed too late, or another process judged the call interrupted) wins."""
        done = claim.model_copy(update={"state": "done", "reply": answer})
        delay = 0.1
        while True:
            try:
                await self.store.save(key, done, revision)
                self.counts["stored"] += 1
                return answer
            except Conflict:  # `_stored` raises `ClaimTaken` out of this loop
                stored = await self._stored(key, answer)
                if stored is not None:
                    return stored
            except Exception as exc:  # NATS away (a timeout, a closed connection): again
                log.warning("tool_call.store_retry", key=key, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            delay = min(STORE_RETRY_MAX_S, delay * 2)

    async def _stored(self, key: str, answer: ToolCompleted) -> ToolCompleted | None:
        """After a lost compare-and-swap: the answer stored, `answer` if the record is gone,
        None if the load failed (the caller tries again); `ClaimTaken` if the record holds
        no answer."""
        try:
            record, _ = await self.store.load(key)
        except Exception as exc:
            log.warning("tool_call.load_retry", key=key, error=f"{type(exc).__name__}: {exc}")
            return None
        if record is None:  # purged: the task was deleted meanwhile; nobody waits for it
            return answer
        if record.reply is None:
            raise ClaimTaken(f"tool call {key}'s claim changed under its run")
        return record.reply


def interrupted_error(msg: ToolRequested) -> ErrorInfo:
    return ErrorInfo(
        code="interrupted",
        message=f"the executor stopped while {msg.name} was running; it was not run again so "
        "that its side effects do not happen twice. Check the workspace and retry if needed.",
    )
