"""The bus against a real nats-server: lanes, acks, dead letters, compare-and-swap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

from agentops.bus.connection import ERROR_CODE, ORIGINAL_SUBJECT, publish
from agentops.bus.consumer import Consumer, Delivery
from agentops.bus.setup import ensure_jetstream
from agentops.core.state import TASK_RECORD_ADAPTER, TaskRecord
from agentops.protocol import subjects as s
from agentops.protocol.errors import RetryableError
from agentops.protocol.messages import PauseAgent, WorkMessage
from agentops.store.kv import Conflict, DocumentStore
from tests.helpers import until

pytestmark = pytest.mark.integration


def pause(agent_id: str, n: int) -> PauseAgent:
    return PauseAgent(id=f"{agent_id}.{n}", task_id="t1", agent_id=agent_id, ts=datetime.now(UTC))


async def lane_consumer(nc: Client, lane: int, handler: object, durable: str = "") -> Consumer:
    consumer = Consumer(
        nc.jetstream(),
        stream=s.WORK_STREAM,
        durable=durable or s.agent_consumer("backend_developer", lane),
        filter_subject=s.agent_lane_filter("backend_developer", lane),
        handler=handler,  # type: ignore[arg-type]
    )
    await consumer.start()
    return consumer


async def test_lane_delivers_one_agents_messages_in_order_across_replicas(nc: Client) -> None:
    """Two replicas share a lane; one agent's messages are handled one at a time, in order."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_order"
    lane = s.lane_of(agent_id)
    seen: list[int] = []
    active = 0
    peak = 0

    async def handler(msg: WorkMessage, d: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0)  # yield so a concurrent delivery would overlap
        seen.append(int(msg.id.rsplit(".", 1)[1]))
        active -= 1

    replicas = [await lane_consumer(nc, lane, handler) for _ in range(2)]
    for n in range(40):
        m = pause(agent_id, n)
        await publish(js, s.agent_mailbox("backend_developer", agent_id), m, m.id)
    await until(lambda: len(seen) == 40, what="40 messages handled")
    assert seen == list(range(40))
    assert peak == 1
    for r in replicas:
        await r.stop()


async def test_duplicate_publish_is_dropped_by_message_id(nc: Client) -> None:
    """Publishing the same message id twice stores it once (JetStream dedup)."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    m = pause("agent_dup", 1)
    first = await publish(js, s.agent_mailbox("backend_developer", "agent_dup"), m, m.id)
    second = await publish(js, s.agent_mailbox("backend_developer", "agent_dup"), m, m.id)
    assert second.duplicate and not first.duplicate


async def test_garbage_is_dead_lettered_and_the_lane_moves_on(nc: Client) -> None:
    """An undecodable message goes to the DLQ with its reason; the next one is handled."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_junk"
    subject = s.agent_mailbox("backend_developer", agent_id)
    handled: list[str] = []

    async def handler(msg: WorkMessage, d: Delivery) -> None:
        handled.append(msg.id)

    consumer = await lane_consumer(nc, s.lane_of(agent_id), handler)
    await js.publish(subject, b"\x00not json{")
    await js.publish(subject, b'{"type": "agent.pause"}')
    good = pause(agent_id, 7)
    await publish(js, subject, good, good.id)
    await until(lambda: handled == [good.id], what="good message")
    dlq = await js.pull_subscribe(s.dead_letter(subject), durable="dlq-check", stream=s.DLQ_STREAM)
    letters = await dlq.fetch(2, timeout=5)
    assert [m.data for m in letters] == [b"\x00not json{", b'{"type": "agent.pause"}']
    assert all(m.headers and m.headers[ERROR_CODE] == "bad_message" for m in letters)
    assert letters[0].headers and letters[0].headers[ORIGINAL_SUBJECT] == subject
    await consumer.stop()


async def test_retryable_failure_is_redelivered_then_handled(nc: Client) -> None:
    """A RetryableError naks the message; it comes back and succeeds."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_retry"
    attempts: list[int] = []

    async def handler(msg: WorkMessage, d: Delivery) -> None:
        attempts.append(d.num_delivered)
        if d.num_delivered < 3:
            raise RetryableError("not yet")

    consumer = await lane_consumer(nc, s.lane_of(agent_id), handler)
    m = pause(agent_id, 1)
    await publish(js, s.agent_mailbox("backend_developer", agent_id), m, m.id)
    await until(lambda: attempts == [1, 2, 3], what="three deliveries")
    await consumer.stop()


async def test_kv_compare_and_swap_refuses_a_stale_revision(nc: Client) -> None:
    """A write against an old revision raises Conflict and leaves the newer value."""
    buckets = await ensure_jetstream(nc.jetstream())
    store = DocumentStore[TaskRecord](buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER)
    now = datetime.now(UTC)
    doc = TaskRecord(
        task_id="t1",
        agent_type="backend_developer",
        description="d",
        agent_id="a1",
        created_at=now,
        updated_at=now,
    )
    rev1 = await store.save("t1", doc, 0)
    with pytest.raises(Conflict):
        await store.save("t1", doc, 0)
    rev2 = await store.save("t1", doc.model_copy(update={"status": "running"}), rev1)
    with pytest.raises(Conflict):
        await store.save("t1", doc, rev1)
    loaded, rev = await store.load("t1")
    assert loaded is not None and loaded.status == "running" and rev == rev2
