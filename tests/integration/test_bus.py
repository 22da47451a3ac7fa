"""The bus against a real nats-server: lanes, acks, dead letters, compare-and-swap."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from agentops.bus.connection import ERROR_CODE, MSG_ID, ORIGINAL_SUBJECT, connect, publish
from agentops.bus.consumer import Consumer, Delivery
from agentops.bus.publisher import Publisher
from agentops.bus.setup import ensure_jetstream
from agentops.core.state import TASK_RECORD_ADAPTER, TaskRecord
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.protocol.errors import RetryableError
from agentops.protocol.messages import PauseAgent, WorkMessage
from agentops.store.kv import Conflict, DocumentStore, task_records
from tests.helpers import eventually, until

pytestmark = pytest.mark.integration


def pause(agent_id: str, n: int) -> PauseAgent:
    return PauseAgent(id=f"{agent_id}.{n}", task_id="t1", agent_id=agent_id, ts=datetime.now(UTC))


async def lane_consumer(nc: Client, lane: int, handler: object, durable: str = "") -> Consumer:
    name = durable or s.agent_consumer("backend_developer", lane)
    consumer = Consumer(
        nc,
        nc.jetstream(),
        stream=s.WORK_STREAM,
        durable=name,
        filter_subject=s.agent_lane_filter("backend_developer", lane),
        deliver_subject=s.deliver_subject("agent-backend_developer", name),
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
        await publish(js, s.agent_mailbox("backend_developer", agent_id, m.type), m, m.id)
    await until(lambda: len(seen) == 40, what="40 messages handled")
    assert seen == list(range(40))
    assert peak == 1
    for r in replicas:
        await r.stop()


async def test_a_lane_delivery_is_sole_only_when_no_other_replica_got_one_in_between(
    nc: Client,
) -> None:
    """`Delivery.sole` is set only when this replica also got the lane's previous delivery."""
    # `sole` is what lets an agent trust its cached state.
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_sole"
    lane = s.lane_of(agent_id)
    order: list[tuple[int, bool]] = []  # (replica, sole) in handling order

    def handler(replica: int) -> object:
        async def handle(msg: WorkMessage, d: Delivery) -> None:
            order.append((replica, d.sole))

        return handle

    async def send(n: int) -> None:
        m = pause(agent_id, n)
        await publish(js, s.agent_mailbox("backend_developer", agent_id, m.type), m, m.id)

    first = await lane_consumer(nc, lane, handler(0))
    for n in range(5):
        await send(n)
    await until(lambda: len(order) == 5, what="five handled by the only replica")
    assert order == [(0, False)] + [(0, True)] * 4
    second = await lane_consumer(nc, lane, handler(1))
    for n in range(5, 45):
        await send(n)
    await until(lambda: len(order) == 45, what="forty more handled by two replicas")
    assert {replica for replica, _ in order[5:]} == {0, 1}, "both replicas took messages"
    for (before, _), (replica, sole) in itertools.pairwise(order):
        assert not sole or before == replica, order
    await first.stop()
    await second.stop()


async def test_a_kick_drops_every_replicas_interest_at_once_and_the_lane_moves_on(
    nc: Client,
) -> None:
    """A stall kick unsubscribes all replicas together, then they subscribe and deliver again."""
    # JetStream wakes a stuck push consumer only when its deliver subject loses all interest.
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_kick"
    lane = s.lane_of(agent_id)
    seen: list[str] = []

    async def handler(msg: WorkMessage, d: Delivery) -> None:
        seen.append(msg.id)

    replicas = [await lane_consumer(nc, lane, handler) for _ in range(2)]
    durable, deliver = replicas[0].durable, replicas[0].deliver_subject
    before = [r._sub for r in replicas]

    async def bound() -> bool:
        return bool((await js.consumer_info(s.WORK_STREAM, durable)).push_bound)

    async def unbound() -> bool:
        return not await bound()

    assert await bound()
    await nc.publish(s.kick_subject(deliver))
    await eventually(unbound, timeout=5, interval=0.01, what="no replica subscribed")
    await eventually(bound, timeout=5, what="the replicas subscribed again")
    assert all(
        r._sub is not None and r._sub is not b for r, b in zip(replicas, before, strict=True)
    )
    m = pause(agent_id, 1)
    await publish(js, s.agent_mailbox("backend_developer", agent_id, m.type), m, m.id)
    await until(lambda: seen == [m.id], what="the lane delivers after the kick")
    for r in replicas:
        await r.stop()
    assert all(r._sub is None or r._sub._closed for r in replicas)


async def test_duplicate_publish_is_dropped_by_message_id(nc: Client) -> None:
    """Publishing the same message id twice stores it once (JetStream dedup)."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    m = pause("agent_dup", 1)
    first = await publish(js, s.agent_mailbox("backend_developer", "agent_dup", m.type), m, m.id)
    second = await publish(js, s.agent_mailbox("backend_developer", "agent_dup", m.type), m, m.id)
    assert second.duplicate and not first.duplicate


async def test_garbage_is_dead_lettered_and_the_lane_moves_on(nc: Client) -> None:
    """An undecodable message goes to the DLQ with its reason; the next one is handled."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_junk"
    subject = s.agent_mailbox("backend_developer", agent_id, "agent.pause")
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
    await publish(js, s.agent_mailbox("backend_developer", agent_id, m.type), m, m.id)
    await until(lambda: attempts == [1, 2, 3], what="three deliveries")
    await consumer.stop()


async def test_a_pull_consumer_of_an_older_version_is_replaced_and_nothing_is_lost(
    nc: Client,
) -> None:
    """Messages left for an older version's pull consumer go to the push consumer replacing it."""
    # Both consumers have the same durable name.
    js = nc.jetstream()
    await ensure_jetstream(js)
    agent_id = "agent_upgrade"
    lane = s.lane_of(agent_id)
    durable = s.agent_consumer("backend_developer", lane)
    await js.add_consumer(
        s.WORK_STREAM,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=s.agent_lane_filter("backend_developer", lane),
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=1,
        ),
    )
    for n in range(3):
        m = pause(agent_id, n)
        await publish(js, s.agent_mailbox("backend_developer", agent_id, m.type), m, m.id)
    handled: list[str] = []

    async def handler(msg: WorkMessage, d: Delivery) -> None:
        handled.append(msg.id)

    consumer = await lane_consumer(nc, lane, handler)
    await until(lambda: len(handled) == 3, what="the waiting messages handled")
    assert handled == [f"{agent_id}.{n}" for n in range(3)]
    info = await js.consumer_info(s.WORK_STREAM, durable)
    assert info.config.deliver_subject == consumer.deliver_subject
    await consumer.stop()


async def test_a_pool_naks_what_it_has_not_started_when_it_stops(nc: Client) -> None:
    """A stopping pool hands back the messages it has not started, so another replica takes them."""
    # At once: the other replica handles them without waiting for the ack deadline.
    js = nc.jetstream()
    await ensure_jetstream(js)
    release = asyncio.Event()
    handled: dict[str, list[str]] = {"first": [], "second": []}

    def pool(name: str) -> Consumer:
        async def handler(msg: WorkMessage, d: Delivery) -> None:
            handled[name].append(msg.id)
            if name == "first":
                await release.wait()

        return Consumer(
            nc,
            js,
            stream=s.WORK_STREAM,
            durable=s.TOOL_EXECUTOR_CONSUMER,
            filter_subject=s.tool_requests_filter(),
            deliver_subject=s.deliver_subject("tool-executor", s.TOOL_EXECUTOR_CONSUMER),
            handler=handler,  # type: ignore[arg-type]
            concurrency=1,
            max_ack_pending=100,
        )

    first = pool("first")
    await first.start()
    for n in range(5):
        m = pause("agent_pool", n)
        await publish(js, s.tool_requests("write_file"), m, m.id)
    await until(lambda: len(first._held) == 5, what="five messages held by the first pool")
    second = pool("second")
    await second.start()
    stopping = asyncio.create_task(first.stop())
    await until(lambda: len(handled["second"]) == 4, timeout=5, what="the rest handed over")
    release.set()
    await stopping
    assert handled["first"] == ["agent_pool.0"]
    assert sorted(handled["second"]) == [f"agent_pool.{n}" for n in range(1, 5)]
    await second.stop()


@pytest.mark.parametrize("through", ["kv api", "publisher"])
async def test_kv_compare_and_swap_refuses_a_stale_revision(nc: Client, through: str) -> None:
    """A stale-revision write raises Conflict and keeps the newer value, via KV API or Publisher."""
    buckets = await ensure_jetstream(nc.jetstream())
    store = (
        DocumentStore[TaskRecord](buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER)
        if through == "kv api"
        else task_records(buckets, Publisher(nc))
    )
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


async def test_publisher_waits_for_every_ack_and_jetstream_drops_duplicates(nc: Client) -> None:
    """publish_many returns sequences; a repeated Nats-Msg-Id gets the first's, stored once."""
    js = nc.jetstream()
    await ensure_jetstream(js)
    publisher = Publisher(nc)
    mailbox = s.agent_mailbox("backend_developer", "agent_pub", "agent.pause")
    items = [(mailbox, b'{"n": %d}' % n, {MSG_ID: f"pub.{n}"}) for n in range(3)]
    first = await publisher.publish_many(items)
    again = await publisher.publish_many(items[:1])
    assert first == sorted(first) and len(set(first)) == 3 and again == first[:1]
    info = await js.stream_info(s.WORK_STREAM, subjects_filter=mailbox)
    assert info.state.subjects == {mailbox: 3}
    await publisher.stop()


async def test_publisher_says_when_no_stream_takes_a_subject(nc: Client) -> None:
    """A publish nothing stores fails at once as retryable, naming the subject."""
    await ensure_jetstream(nc.jetstream())
    publisher = Publisher(nc)
    with pytest.raises(RetryableError, match=r"no JetStream answer for nowhere\.at\.all"):
        await publisher.put("nowhere.at.all", b"{}", {})
    await publisher.stop()


async def test_a_connection_whose_reader_died_is_found_stale_and_reconnected(
    nats_server: NatsServer,
) -> None:
    """nats-py 2.16's reader dies on the PONG of a flush that timed out (server frozen); the
    pings `connect` configures then find the connection stale and reconnect it."""
    conn = await connect(nats_server.url, "test", ping_interval=1, max_outstanding_pings=2)
    responder = await nats.connect(nats_server.url)
    try:
        assert nats_server.proc is not None
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        try:
            # Usually FlushTimeoutError; on a loaded machine the pings may find the connection
            # stale first. Either way it must come back below.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await conn.flush(timeout=0.5)
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("probe.stale", cb=echo)
        await responder.flush()

        async def answered() -> bool | None:
            try:
                return (await conn.request("probe.stale", b"x", timeout=0.5)).data == b"x" or None
            except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError):
                return None

        assert await eventually(answered, timeout=30, what="requests answered again")
    finally:
        await conn.close()
        await responder.close()
