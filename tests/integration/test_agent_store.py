"""Agent heads and threads on a real nats-server (`store/agents.py`), and the retention sweep:
a step's items are invisible until its head commits, a lost race changes nothing, a late
write of the same step leaves the committed thread as it was, a format-1 state is read and
converted by its next write, and retention deletes exactly the finished, old root tasks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agentops.bus.publisher import Publisher
from agentops.bus.service import Runtime
from agentops.bus.setup import ensure_jetstream
from agentops.config import load_settings
from agentops.core.state import AgentState, TaskRecord, ToolResultItem
from agentops.protocol import subjects as s
from agentops.protocol.messages import WORK_ADAPTER, DeleteWorkspace, Event
from agentops.services import orchestrator
from agentops.store import summaries
from agentops.store.agents import FORMAT, AgentStore, encode_head
from agentops.store.kv import Conflict, task_records
from agentops.store.summaries import AgentSummary
from tests.helpers import eventually
from tests.unit.test_state_encoding import TALLIES, states_of_a_run

pytestmark = pytest.mark.integration


async def store_for(nc: Client) -> AgentStore:
    js = nc.jetstream()
    buckets = await ensure_jetstream(js)
    return AgentStore(nc, js, buckets[s.AGENTS_BUCKET], Publisher(nc))


async def test_a_run_stored_step_by_step_reads_back_whole(nc: Client) -> None:
    """Every state of a run written over the previous one reads back as the last state."""
    store = await store_for(nc)
    states = states_of_a_run()
    stored = None
    for state in states:
        stored = await store.save(state, stored)
    loaded = await store.load(states[-1].agent_id)
    assert loaded is not None and loaded.state.thread == states[-1].thread
    assert loaded.state.model_dump(exclude={"outbox"}) == states[-1].model_dump(exclude={"outbox"})


async def test_items_of_a_step_whose_head_was_never_written_are_not_seen(nc: Client) -> None:
    """A crash between a step's items and its head: readers see the previous step; the step
    decided again writes its items over the lost ones and commits."""
    store = await store_for(nc)
    states = states_of_a_run()
    base = await store.save(states[3], None)
    # The next step's items go out, then the process dies before its head.
    await store.publisher.publish_many(store.item_writes(states[4], base.stored_len))  # type: ignore[union-attr]
    head = await store.head(states[3].agent_id)
    assert head is not None and head.thread_len == len(states[3].thread)
    again = await store.load(states[3].agent_id)
    assert again is not None and again.state.thread == states[3].thread
    # Decided again (new timestamps would be the same items otherwise): written and committed.
    await store.save(states[4], again)
    final = await store.load(states[3].agent_id)
    assert final is not None and final.state.thread == states[4].thread


async def test_a_stale_write_loses_and_leaves_the_committed_state(nc: Client) -> None:
    """A replica writing over a head another replica has moved on gets Conflict; the committed
    head and thread are unchanged, and a late copy of the same step's items changes nothing."""
    store = await store_for(nc)
    states = states_of_a_run()
    first = await store.save(states[2], None)
    moved = await store.save(states[3], first)  # replica B commits the next step
    late = store.item_writes(states[3], first.stored_len)  # replica A's late copy of it
    with pytest.raises(Conflict):
        await store.save(states[3], first)
    await store.publisher.publish_many(late)  # type: ignore[union-attr]
    loaded = await store.load(states[2].agent_id)
    assert loaded is not None and loaded.revision == moved.revision
    assert loaded.state.thread == states[3].thread


async def test_a_format_1_state_is_read_and_its_next_write_converts_it(nc: Client) -> None:
    """A whole state stored by the previous version reads as it was; the next write stores
    its items on the threads stream and a format-2 head."""
    store = await store_for(nc)
    states = states_of_a_run()
    old: AgentState = states[-2]
    legacy = old.model_dump_json(
        exclude={"description", "human_requests", "open_requests", "error_count",
                 "llm_answers", "llm_errors", "tool_calls", "tool_results"}
    ).encode()  # fmt: skip
    await store.kv.put(old.agent_id, legacy)
    loaded = await store.load(old.agent_id)
    assert loaded is not None and loaded.stored_len == 0 and loaded.state.thread == old.thread
    assert loaded.state.tool_calls == old.tool_calls
    await store.save(states[-1], loaded)
    head = await store.head(old.agent_id)
    assert head is not None and not head.legacy and head.thread_len == len(states[-1].thread)
    entry = await store.kv.get(old.agent_id)
    assert entry.value is not None and b'"format":%d' % FORMAT in entry.value
    again = await store.load(old.agent_id)
    assert again is not None and again.state.thread == states[-1].thread


async def test_summaries_are_filled_in_from_format_1_and_2_heads_when_there_are_none(
    nc: Client,
) -> None:
    """A store without summaries (an older version's): `backfill` writes one per head, from a
    format-1 state as from a format-2 head, skips a head of a newer format, does nothing
    once summaries exist, and every time the bucket is empty again."""
    store = await store_for(nc)
    js = store.js
    states = states_of_a_run()
    old, new, newer = (
        states[-2].model_copy(update={"agent_id": f"agent_{name}"})
        for name in ("old", "new", "newer")
    )
    await store.kv.put(old.agent_id, old.model_dump_json(exclude=set(TALLIES)).encode())
    await store.save(new, None)
    head = json.loads(encode_head(newer))
    await store.kv.put(newer.agent_id, json.dumps({**head, "format": FORMAT + 1}).encode())
    assert await summaries.backfill(js) == 2
    kv = await js.key_value(s.SUMMARIES_BUCKET)
    for state in (old, new):
        stored = AgentSummary.model_validate_json((await kv.get(state.agent_id)).value or b"")
        assert stored == summaries.summary_of(state), state.agent_id
    assert await summaries.backfill(js) == 0
    for _ in range(10):  # however fast the heads are pushed to it
        await js.purge_stream(s.kv_stream(s.SUMMARIES_BUCKET))
        assert await summaries.backfill(js) == 2


async def test_the_thread_of_an_agent_reads_in_pages_and_in_batches(nc: Client) -> None:
    """A thread of 700 items reads back in order whole (batched scan) and by any range."""
    store = await store_for(nc)
    state = states_of_a_run()[-1]
    item = next(i for i in state.thread if isinstance(i, ToolResultItem))
    long = state.model_copy(update={"thread": state.thread + (item,) * 700})
    await store.save(long, None)
    whole = await store.raw_items(long.agent_id, 0, len(long.thread))
    assert [i.model_dump_json().encode() for i in long.thread] == whole
    page = await store.items(long.agent_id, 650, 660)
    assert page == list(long.thread[650:660])


async def test_retention_deletes_exactly_the_finished_old_root_tasks(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orchestrator's sweep deletes a task finished longer ago than [retention] days, with
    its agent's head, thread, tool-call claims and events, and asks for its workspace;
    a recent one and an old one still running stay."""
    config = tmp_path / "agentops.toml"
    config.write_text("[retention]\ndays = 1\nsweep_interval_s = 1\n")
    js = nc.jetstream()
    buckets = await ensure_jetstream(js)
    rt = Runtime(
        process="orchestrator", nc=nc, js=js, buckets=buckets,
        settings=load_settings(data_dir=tmp_path, config_file=str(config)),
    )  # fmt: skip
    store = AgentStore(nc, js, buckets[s.AGENTS_BUCKET], Publisher(nc))
    tasks = task_records(buckets)
    now = datetime.now(UTC)
    old, recent, running = (
        await _fabricate(store, tasks, "old", "completed", now - timedelta(days=3)),
        await _fabricate(store, tasks, "recent", "completed", now - timedelta(hours=2)),
        await _fabricate(store, tasks, "running", "running", None),
    )
    workspace_requests = await js.subscribe(s.workspace_requests("delete"), stream=s.WORK_STREAM)
    await orchestrator.setup(rt)
    try:

        async def swept() -> bool:
            return (await tasks.load(old["task_id"]))[0] is None

        await eventually(swept, timeout=30, what="the old task deleted")
        request = WORK_ADAPTER.validate_json((await workspace_requests.next_msg(10)).data)
    finally:
        for consumer in rt.consumers:
            await consumer.stop()
        for hook in rt.on_shutdown:
            await hook()
    assert isinstance(request, DeleteWorkspace) and request.workspace_id == old["task_id"]
    assert await store.head(old["agent_id"]) is None
    info = await js.stream_info(s.THREADS_STREAM, subjects_filter=s.thread_filter(old["agent_id"]))
    assert not info.state.subjects
    claims = await js.stream_info(
        s.kv_stream(s.TOOL_CALLS_BUCKET),
        subjects_filter=s.kv_filter(s.TOOL_CALLS_BUCKET, old["agent_id"]),
    )
    assert not claims.state.subjects
    events = await js.stream_info(s.EVENTS_STREAM, subjects_filter=s.events_of_task(old["task_id"]))
    assert list((events.state.subjects or {}).values()) == [1]  # task.deleted alone
    for kept in (recent, running):
        assert (await tasks.load(kept["task_id"]))[0] is not None
        assert await store.head(kept["agent_id"]) is not None


async def _fabricate(
    store: AgentStore, tasks: Any, name: str, status: str, finished_at: datetime | None
) -> dict[str, str]:
    """A task record, its agent's head and thread, a tool-call claim and an event."""
    task_id, agent_id = f"task_{name}", f"agent_{name}"
    state = states_of_a_run()[-1].model_copy(update={"agent_id": agent_id, "task_id": task_id})
    await store.save(state, None)
    created = (finished_at or datetime.now(UTC)) - timedelta(minutes=5)
    record = TaskRecord(
        task_id=task_id, agent_type="backend_developer", description="d", agent_id=agent_id,
        agent_ids=(agent_id,), status=status, created_at=created, updated_at=created,  # type: ignore[arg-type]
        finished_at=finished_at,
    )  # fmt: skip
    await tasks.save(task_id, record, 0)
    await store.js.publish(s.kv_key(s.TOOL_CALLS_BUCKET, f"{agent_id}.1.c1"), b"{}")
    event = Event(id=f"{task_id}.ev0", type="task.created", ts=created, task_id=task_id)
    await store.js.publish(s.event(task_id, None, "task.created"), event.model_dump_json().encode())
    return {"task_id": task_id, "agent_id": agent_id}
