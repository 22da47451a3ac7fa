"""The edge under faults, on a real nats-server: health that tells the truth, listings from
the index, agent ids readable at once, 503s that say what happened, bounded connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from nats.aio.client import Client
from nats.micro import add_service

from agentops.agents.loader import shipped_specs
from agentops.bus.consumer import ensure_consumer
from agentops.bus.setup import ensure_jetstream, redeclare_missing
from agentops.protocol import subjects as s
from tests.integration import test_edge_api as api
from tests.integration.test_edge_api import (
    NOW,
    TASK,
    Edge,
    MakeEdge,
    agent_state,
    assert_error,
    consumer_filters,
    task_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def make_edge(nc: Client) -> AsyncIterator[MakeEdge]:
    """The edge app against this test's nats-server (as in test_edge_api.py)."""
    async for make in api.make_edge.__wrapped__(nc):  # type: ignore[attr-defined]
        yield make


@pytest.fixture
async def edge(make_edge: MakeEdge) -> Edge:
    return await make_edge()


async def test_health_is_degraded_for_a_missing_stream_or_consumer_until_declared(
    edge: Edge,
) -> None:
    """Every process up: healthy only with every stream and work consumer; a deleted consumer
    or stream is named and degraded, and healthy again once declared again."""
    services = [
        await add_service(edge.nc, name=s.service_name(p), version="0.0.1")
        for p in s.all_processes(shipped_specs())
        if p != "edge"
    ]
    try:
        body = await (await edge.client.get("/health")).json()
        assert body["status"] == "degraded"  # no process has made its consumers yet
        assert set(body["jetstream"]["missing_consumers"]) == set(consumer_filters())
        for name, filter_subject in consumer_filters().items():
            await ensure_consumer(edge.js, s.WORK_STREAM, name, filter_subject, 1, f"_d.{name}")
        resp = await edge.client.get("/health")
        body = await resp.json()
        assert resp.status == 200, body
        assert body["jetstream"]["status"] == "ok"
        assert set(body["jetstream"]["streams"]) == set(s.declared_streams())
        await edge.js.delete_consumer(s.WORK_STREAM, s.orchestrator_consumer(3))
        await edge.js.delete_stream(s.EVENTS_STREAM)
        await edge.js.delete_stream(s.kv_stream(s.TASKS_BUCKET))
        resp = await edge.client.get("/health")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "degraded"
        assert body["jetstream"]["missing_consumers"] == [s.orchestrator_consumer(3)]
        streams = body["jetstream"]["streams"]
        assert streams[s.EVENTS_STREAM] == streams[s.kv_stream(s.TASKS_BUCKET)] == "missing"
        assert streams[s.WORK_STREAM] == "ok"
        # What the orchestrator does every few seconds, and the lane's process on its watch.
        assert set(await redeclare_missing(edge.js)) == {s.EVENTS_STREAM, s.TASKS_BUCKET}
        assert await redeclare_missing(edge.js) == []
        name = s.orchestrator_consumer(3)
        await ensure_consumer(edge.js, s.WORK_STREAM, name, s.task_lane_filter(3), 1, "_d.x")
        resp = await edge.client.get("/health")
        assert resp.status == 200, await resp.json()
        # A listing after the tasks bucket came back: the index is rebuilt, nothing stale.
        await edge.put_task(task_record("task_back", "agent_back"))
        listed = await (await edge.client.get("/tasks")).json()
        assert [t["task_id"] for t in listed["tasks"]] == ["task_back"]
    finally:
        await asyncio.gather(*(svc.stop() for svc in services))


async def test_listings_read_their_writes_filter_and_page_from_the_index(edge: Edge) -> None:
    """A record written just before a listing is in it; filters, order, offset and total hold;
    a record purged without a marker (task deletion) leaves the index; agents not started
    yet are listed from their unfinished tasks' records."""
    for i in range(5):
        status = "completed" if i % 2 else "running"
        await edge.put_task(task_record(f"task_{i}", f"agent_{i}", status, NOW + timedelta(i)))
    body = await (await edge.client.get("/tasks", params={"limit": 2, "offset": 1})).json()
    assert body["total"] == 5
    assert [t["task_id"] for t in body["tasks"]] == ["task_3", "task_2"]
    done = await (await edge.client.get("/tasks", params={"status": "completed"})).json()
    assert [t["task_id"] for t in done["tasks"]] == ["task_3", "task_1"] and done["total"] == 2
    other = await (await edge.client.get("/tasks", params={"agent_type": "x_y"})).json()
    assert other == {"tasks": [], "total": 0}
    # Deletion: marked `deleting`, then purged from the stream (no delete marker).
    deleting = task_record("task_1", "agent_1", "completed", NOW + timedelta(1))
    await edge.put_task(deleting.model_copy(update={"deleting": True}))
    await edge.js.purge_stream(
        s.kv_stream(s.TASKS_BUCKET), subject=s.kv_key(s.TASKS_BUCKET, "task_1")
    )
    body = await (await edge.client.get("/tasks")).json()
    assert body["total"] == 4 and "task_1" not in {t["task_id"] for t in body["tasks"]}
    # Agents: agent_0 from its summary, those of the other unfinished tasks from their
    # records (not started yet: `idle`), newest first; none of a finished or purged task.
    await edge.put_agent(agent_state("agent_0", "task_0"))
    agents = await (await edge.client.get("/agents", params={"limit": 2})).json()
    assert agents["total"] == 3
    rows = [(a["agent_id"], a["status"], a["current_task"]) for a in agents["agents"]]
    assert rows == [
        ("agent_4", "idle", "description of task_4"),
        ("agent_2", "idle", "description of task_2"),
    ]
    last = await (await edge.client.get("/agents", params={"offset": 2})).json()
    assert [(a["agent_id"], a["status"]) for a in last["agents"]] == [("agent_0", "running")]


async def test_a_submitted_agent_is_readable_at_once_before_any_process_starts_it(
    edge: Edge,
) -> None:
    """No orchestrator, no agent process: the 201's agent id answers 200 `idle` on status,
    state and thread, from its claim, then from its task record (and is listed); an unknown
    id is 404."""
    resp = await edge.client.post("/tasks", json={**TASK, "max_steps": 7})
    assert resp.status == 201
    created = await resp.json()
    assert created["status"] == "queued"
    agent_id = created["agent_id"]
    status = await (await edge.client.get(f"/agents/{agent_id}/status")).json()
    assert (status["status"], status["current_step"], status["max_steps"]) == ("idle", 0, 7)
    assert status["task"] == {"task_id": created["task_id"], "description": TASK["description"]}
    state = await edge.client.get(f"/agents/{agent_id}/state")
    assert state.status == 200 and (await state.json())["thread"] == []
    thread = await (await edge.client.get(f"/agents/{agent_id}/thread")).json()
    assert (thread["total"], thread["items"]) == (0, [])
    # The orchestrator recorded the task (the agent process has not started it yet).
    record = task_record(created["task_id"], agent_id, "running")
    await edge.put_task(record)
    status = await (await edge.client.get(f"/agents/{agent_id}/status")).json()
    assert status["status"] == "idle" and status["task"]["task_id"] == created["task_id"]
    listed = (await (await edge.client.get("/agents")).json())["agents"]
    assert [(a["agent_id"], a["status"]) for a in listed] == [(agent_id, "idle")]
    # A child's agent, known only from its task record (no claim): found through the index.
    await edge.put_task(task_record("task_child", "agent_child", "queued"))
    child = await edge.client.get("/agents/agent_child/status")
    assert child.status == 200 and (await child.json())["status"] == "idle"
    missing = await edge.client.get("/agents/agent_nobody/status")
    assert missing.status == 404


async def test_a_503_post_says_no_task_was_created_and_a_retry_creates_it_once(
    edge: Edge,
) -> None:
    """The work stream gone: POST /tasks is 503 saying it was not submitted (with the ids); the
    same Idempotency-Key after the stream is back gives that same task."""
    await edge.js.delete_stream(s.WORK_STREAM)
    headers = {"Idempotency-Key": "k-503"}
    resp = await edge.client.post("/tasks", json=TASK, headers=headers)
    assert resp.status == 503
    body = await resp.json()
    assert_error(body, "unavailable")
    details = body["error"]["details"]
    # Said so: not submitted (no stream answered) or unknown (no confirmation in time).
    assert details["submitted"] in ("no", "unknown") and details["agent_id"].startswith("agent_")
    await ensure_jetstream(edge.js)
    again = await edge.client.post("/tasks", json=TASK, headers=headers)
    assert again.status == 201
    assert (await again.json())["task_id"] == details["task_id"]
    info = await edge.js.stream_info(s.WORK_STREAM)
    assert info.state.messages == 1  # one submit


# ---- the HTTP server's own bounds and shapes ----


async def _raw(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open)."""
    return await asyncio.wait_for(reader.read(), seconds)


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # idle: connected, nothing sent
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # headers never finished
    ],
)
async def test_idle_and_slow_header_connections_are_closed(
    make_edge: MakeEdge, sent: bytes
) -> None:
    """A connection without a complete request is closed after `idle_timeout_s`."""
    edge = await make_edge(idle_timeout_s=0.5, body_timeout_s=0.5)
    port = edge.client.port
    assert port is not None
    reader, writer = await _raw(port, sent)
    try:
        assert await _closed_within(reader, 5) == b""
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_closes_the_connection(make_edge: MakeEdge) -> None:
    """A request body that stalls (no byte for `body_timeout_s`) is cut off, not waited for."""
    edge = await make_edge(idle_timeout_s=30, body_timeout_s=0.5)
    port = edge.client.port
    assert port is not None
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    reader, writer = await _raw(port, head + b'Content-Length: 100\r\n\r\n{"agent_type"')
    try:
        await _closed_within(reader, 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ],
)
async def test_aiohttp_parser_refusals_are_json(edge: Edge, request_bytes: bytes) -> None:
    """What aiohttp's HTTP parser refuses is answered in the JSON error shape."""
    port = edge.client.port
    assert port is not None
    reader, writer = await _raw(port, request_bytes)
    try:
        raw = await _closed_within(reader, 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500, head
    assert b"application/json" in head.lower()
    assert_error(json.loads(body))


async def test_an_unknown_content_encoding_is_415(edge: Edge) -> None:
    """A body in an encoding the edge cannot decode is refused, never read as identity."""
    resp = await edge.client.post(
        "/tasks", data=json.dumps(TASK), headers={"Content-Encoding": "x-squash",
                                                 "Content-Type": "application/json"}
    )  # fmt: skip
    assert resp.status == 415
    assert_error(await resp.json(), "unsupported_media_type")
    nothing = await edge.js.stream_info(s.WORK_STREAM)
    assert nothing.state.messages == 0
