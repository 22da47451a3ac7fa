"""Agent summaries: what listings and counts need of an agent, written only when it changes.

Layout: `agentops_summaries/<agent_id>` (`nats kv get agentops_summaries <agent_id>`), a small
JSON value: id, type, task, status, description, creation time, and the step and usage counts
as they were at that write.

Rules:
- The agent process writes it beside the head when what a listing filters and sorts by
  (`listed`: status, description, task) differs from the head it replaces, and again when it
  replays a transition's outbox (a crash between the head and the summary is repaired by the
  redelivery). A step that changes none of these writes no summary: the edge's index of
  agents (`edge/index.py`) sees a few messages per agent, not one per step.
- So a summary's `step` and counts are exact for an agent that has ended, and as of its last
  status change for one that runs; `GET /agents` reads the heads of the running agents on
  its page for their step, and `agentops_stored_*` is documented as such.
- Deleting a task purges its agents' summaries with their heads (`store/deletion.py`). A
  store written by a version without summaries is filled in once from the heads by the
  declarer (`backfill`), when the summaries bucket is empty and the heads are not.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError
from nats.js.kv import KV_OP
from pydantic import BaseModel, ConfigDict

from agentops.bus.publisher import EXPECTED_LAST_SUBJECT_SEQUENCE, WRONG_LAST_SEQUENCE, Item
from agentops.core.state import AgentState, Tally
from agentops.llm.types import Usage
from agentops.protocol import subjects as s
from agentops.store.agents import decode_head
from agentops.store.kv import CorruptDocument

log = structlog.get_logger(__name__)


class AgentSummary(BaseModel):
    """An agent as listings, counts by status and the stored-usage gauges see it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_id: str
    agent_type: str
    task_id: str
    status: str
    created_at: datetime
    step: int = 0
    description: str = ""  # cut to DESCRIPTION_CHARS by the agent
    usage: Usage = Usage()
    llm_answers: int = 0
    llm_errors: int = 0
    tool_results: dict[str, Tally] = {}


def summary_of(state: AgentState) -> AgentSummary:
    return AgentSummary.model_validate(state, from_attributes=True)


def listed(state: AgentState | None) -> tuple[str, str, str] | None:
    """What a listing filters, sorts and shows by, bar the step: a change writes a summary."""
    return None if state is None else (state.status, state.description, state.task_id)


def changed(before: AgentState | None, after: AgentState) -> bool:
    return listed(before) != listed(after)


def summary_write(state: AgentState) -> Item:
    """The summary's write: a plain put (the head's compare-and-swap orders the writers)."""
    key = s.kv_key(s.SUMMARIES_BUCKET, state.agent_id)
    return key, summary_of(state).model_dump_json().encode(), {}


async def backfill(js: JetStreamContext) -> int:
    """Write a summary for every head when the summaries bucket is empty (a store from a
    version without them, or the bucket deleted and declared again); returns how many."""
    summaries = await js.stream_info(s.kv_stream(s.SUMMARIES_BUCKET))
    heads = await js.stream_info(s.kv_stream(s.AGENTS_BUCKET))
    if summaries.state.messages or not heads.state.messages:
        return 0
    sub = await js.subscribe(
        s.kv_keys(s.AGENTS_BUCKET), stream=s.kv_stream(s.AGENTS_BUCKET), ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )  # fmt: skip
    written = 0
    try:
        # The stream has messages, so at least one is delivered; the one with none pending after
        # it is the last. (Not the consumer info's count: it may answer after every message was
        # pushed, saying 0.)
        while True:
            msg = await sub.next_msg(timeout=10.0)
            written += await _fill_in(js, msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    log.info("summaries.backfilled", written=written)
    return written


async def _fill_in(js: JetStreamContext, msg: Msg) -> int:
    """Write the summary of the head in `msg` where none exists; 1 if written."""
    if (msg.headers or {}).get(KV_OP) or not msg.data:
        return 0
    key = s.kv_key_of(s.AGENTS_BUCKET, msg.subject)
    try:
        head = decode_head(msg.data, msg.metadata.sequence.stream, key)
    except CorruptDocument as exc:
        log.warning("summaries.backfill_skipped", key=key, error=str(exc)[:200])
        return 0
    subject, payload, _ = summary_write(head.state)
    try:  # only where none exists: an agent running meanwhile wrote a newer one
        await js.publish(subject, payload, headers={EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
    except APIError as exc:
        if exc.err_code != WRONG_LAST_SEQUENCE:
            raise
        return 0
    return 1
