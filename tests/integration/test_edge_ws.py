"""The edge's WebSocket against a real nats-server: replay from `since`, live, filters, junk,
bounds, one feed per edge and what happens when it breaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMessage, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client
from nats.js import JetStreamContext

from agentops.bus.connection import publish_event
from agentops.bus.setup import ensure_jetstream
from agentops.edge import feed as feed_module
from agentops.edge.app import create_app
from agentops.edge.context import EdgeConfig
from agentops.edge.feed import EventFeed
from agentops.edge.metrics import METRICS
from agentops.edge.ws import WS_CLIENTS
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.protocol.messages import Event
from tests.helpers import eventually, until

pytestmark = pytest.mark.integration

Client_ = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client_]]


@pytest.fixture
async def make_client(nc: Client) -> AsyncIterator[MakeClient]:
    clients: list[Client_] = []

    async def make(**config: Any) -> Client_:
        js = nc.jetstream()
        app = create_app(nc, js, await ensure_jetstream(js), replace(EdgeConfig(), **config))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> Client_:
    return await make_client()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


async def emit(js: JetStreamContext, n: int, task_id: str = "task_a", **data: Any) -> int:
    """Publish one event; returns its stream sequence."""
    event = Event(
        id=f"{task_id}.ev{n}",
        type="agent.step",
        ts=datetime.now(UTC),
        task_id=task_id,
        agent_id=f"agent_{task_id}",
        data={"n": n, **data},
    )
    return (await publish_event(js, event)).seq


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [await ws.receive_json(timeout=10) for _ in range(count)]


async def test_replays_after_since_then_continues_live_without_gap_or_duplicate(
    client: Client_, js: JetStreamContext
) -> None:
    """since=N replays exactly the events after N, in order, then live ones follow."""
    seqs = [await emit(js, n) for n in range(5)]
    async with client.ws_connect("/ws", params={"since": str(seqs[1])}) as ws:
        replayed = await frames(ws, 3)
        assert [f["seq"] for f in replayed] == seqs[2:]
        assert [f["data"]["n"] for f in replayed] == [2, 3, 4]
        first = replayed[0]
        assert set(first) == {"seq", "type", "ts", "task_id", "agent_id", "data"}
        assert (first["type"], first["task_id"], first["agent_id"]) == (
            "agent.step",
            "task_a",
            "agent_task_a",
        )
        assert first["ts"].endswith("Z") or first["ts"].endswith("+00:00")
        live_seqs = [await emit(js, n) for n in range(5, 8)]
        live = await frames(ws, 3)
        assert [f["seq"] for f in live] == live_seqs
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}  # nothing else was queued


async def test_since_zero_replays_everything(client: Client_, js: JetStreamContext) -> None:
    """since=0 replays the whole stream from sequence 1."""
    seqs = [await emit(js, n) for n in range(3)]
    async with client.ws_connect("/ws", params={"since": "0"}) as ws:
        assert [f["seq"] for f in await frames(ws, 3)] == seqs


async def test_without_since_only_new_events_arrive(client: Client_, js: JetStreamContext) -> None:
    """Without since, a client sees events published after it connected, not the backlog."""
    await emit(js, 0)
    async with client.ws_connect("/ws") as ws:
        seq = await emit(js, 1)
        assert (await ws.receive_json(timeout=10))["seq"] == seq


async def test_task_and_agent_filters_select_events(client: Client_, js: JetStreamContext) -> None:
    """task_id= and agent_id= deliver only the matching events."""
    mine = []
    for n in range(6):
        task = "task_a" if n % 2 else "task_b"
        seq = await emit(js, n, task)
        if task == "task_a":
            mine.append(seq)
    async with client.ws_connect("/ws", params={"since": "0", "task_id": "task_a"}) as ws:
        got = await frames(ws, 3)
        assert [f["seq"] for f in got] == mine
        assert {f["task_id"] for f in got} == {"task_a"}
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}
    async with client.ws_connect("/ws", params={"since": "0", "agent_id": "agent_task_b"}) as ws:
        assert {f["task_id"] for f in await frames(ws, 3)} == {"task_b"}


async def test_undecodable_event_is_skipped(client: Client_, js: JetStreamContext) -> None:
    """Junk on the events stream is skipped; the next event arrives with its own seq."""
    junk = await js.publish(s.event("task_a", None, "agent.step"), b"not an event")
    seq = await emit(js, 1)
    async with client.ws_connect("/ws", params={"since": str(junk.seq - 1)}) as ws:
        assert (await ws.receive_json(timeout=10))["seq"] == seq


async def test_junk_frames_get_error_frames_and_the_connection_stays_usable(
    client: Client_, js: JetStreamContext
) -> None:
    """Non-JSON, shapeless and unknown frames each get an error frame; ping still works."""
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("not json")
        await ws.send_str("[1, 2]")
        await ws.send_json({"type": "subscribe"})
        codes = [(await ws.receive_json(timeout=10))["error"]["code"] for _ in range(3)]
        assert codes == ["invalid_json", "invalid_frame", "unknown_type"]
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}
        seq = await emit(js, 1)
        assert (await ws.receive_json(timeout=10))["seq"] == seq


async def test_too_many_bad_frames_close_with_1008(make_client: MakeClient) -> None:
    """After ws_max_bad_frames junk frames the server closes with policy violation."""
    client = await make_client(ws_max_bad_frames=3)
    async with client.ws_connect("/ws") as ws:
        for _ in range(3):
            await ws.send_str("junk")
        errors = [await ws.receive(timeout=10) for _ in range(3)]
        assert all(m.type is WSMsgType.TEXT for m in errors)
        closing = await ws.receive(timeout=10)
        assert closing.type is WSMsgType.CLOSE
        assert closing.data == 1008


@pytest.mark.parametrize(
    ("frame", "code", "close"),
    [
        (b"\x00\x01", "unsupported_frame", 1003),
        ('{"type": "ping", "pad": "' + "x" * 70_000 + '"}', "frame_too_big", 1009),
        ("[" * 30_000 + "]" * 30_000, "frame_too_deep", 1009),
    ],
)
async def test_bad_frames_get_an_error_frame_then_close_1003_or_1009(
    client: Client_, frame: str | bytes, code: str, close: int
) -> None:
    """A binary frame closes with 1003, a too big or too deeply nested one with 1009, each
    after an error frame saying why (never a plain 1000)."""
    async with client.ws_connect("/ws") as ws:
        await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        assert (await ws.receive_json(timeout=10))["error"]["code"] == code
        closing = await ws.receive(timeout=10)
        assert closing.type is WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (close, code)


@pytest.mark.parametrize(
    "params",
    [{"since": "-1"}, {"since": "abc"}, {"since": "1.5"}, {"task_id": "a.b"}, {"agent_id": "*"}],
)
async def test_bad_query_params_are_400_json_before_the_upgrade(
    client: Client_, params: dict[str, str]
) -> None:
    """Bad since/task_id/agent_id are a JSON 400, not a WebSocket."""
    resp = await client.get("/ws", params=params)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_query"


async def test_plain_http_get_on_ws_is_400(client: Client_) -> None:
    """GET /ws without an upgrade is a JSON 400."""
    resp = await client.get("/ws")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "websocket_required"


async def test_token_can_be_passed_as_query_on_the_websocket(
    make_client: MakeClient, js: JetStreamContext
) -> None:
    """With an API token, /ws refuses a client without it and accepts ?token=."""
    client = await make_client(api_token="s3cret")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 401
    async with client.ws_connect("/ws", params={"token": "s3cret"}) as ws:
        seq = await emit(js, 1)
        assert (await ws.receive_json(timeout=10))["seq"] == seq


async def test_slow_client_is_closed_1013_with_the_seq_to_resume_from(
    make_client: MakeClient, js: JetStreamContext
) -> None:
    """A client that stops reading is cut off with 1013 and told since=<last seq sent>."""
    client = await make_client(ws_queue_size=2, ws_slow_client_s=0.2)
    app = client.app
    assert app is not None
    async with client.ws_connect("/ws", params={"since": "0"}) as ws:
        blob = "x" * 60_000
        for n in range(400):  # ~24 MB: more than the socket buffers hold
            await emit(js, n, blob=blob)

        async def cut_off() -> bool:
            return app[METRICS].ws_disconnects["slow"] == 1

        await eventually(cut_off, timeout=30, what="the slow client to be cut off")
        seqs: list[int] = []
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type is not WSMsgType.TEXT:
                break
            seqs.append(msg.json()["seq"])
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == 1013
        assert msg.extra == f"client too slow: reconnect with since={seqs[-1]}"
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) < 400


async def test_ws_metrics_count_clients_and_frames(client: Client_, js: JetStreamContext) -> None:
    """The edge counts connected WebSocket clients and frames sent."""
    app = client.app
    assert app is not None
    async with client.ws_connect("/ws") as ws:
        await emit(js, 1)
        await ws.receive_json(timeout=10)
        text = await (await client.get("/metrics")).text()
        assert "agentops_edge_ws_clients 1" in text
        assert "agentops_edge_ws_events_sent_total 1" in text

    async def unregistered() -> bool:
        return app[METRICS].ws_clients == 0

    await eventually(unregistered, what="the client to be unregistered")


def feed_of(client: Client_) -> EventFeed:
    assert client.app is not None
    feed = client.app[WS_CLIENTS].feed
    assert feed is not None
    return feed


async def close_of(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[int], WSMessage]:
    """Read to the close: the sequences received, and the close message."""
    seqs: list[int] = []
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type is not WSMsgType.TEXT:
            return seqs, msg
        seqs.append(msg.json()["seq"])


async def test_replay_joins_the_live_feed_while_events_keep_coming(
    make_client: MakeClient, js: JetStreamContext
) -> None:
    """A replay of many batches, with events published all along, joins the live feed with
    every sequence once, in order."""
    client = await make_client(ws_queue_size=40)  # batches of 20: many rounds
    first = [await emit(js, n) for n in range(300)]

    async def more() -> None:
        for n in range(300, 500):
            await emit(js, n)

    publishing = asyncio.create_task(more())
    async with client.ws_connect("/ws", params={"since": "0"}) as ws:
        got = [f["seq"] for f in await frames(ws, 500)]
        await publishing
        assert got == list(range(first[0], first[0] + 500))
        assert feed_of(client).resets == 0
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}


async def test_one_consumer_serves_every_client(client: Client_, js: JetStreamContext) -> None:
    """However many clients follow, the events stream has one consumer (the edge's feed)."""
    sockets = [await client.ws_connect("/ws", params=p) for p in ({}, {"task_id": "task_a"})]
    sockets += [await client.ws_connect("/ws", params={"since": "0"}) for _ in range(3)]
    seq = await emit(js, 1)
    for ws in sockets:
        assert (await ws.receive_json(timeout=10))["seq"] == seq
    info = await js.stream_info(s.EVENTS_STREAM)
    assert info.state.consumer_count == 1
    for ws in sockets:
        await ws.close()


async def test_the_feed_has_no_consumer_while_nobody_follows(
    make_client: MakeClient, js: JetStreamContext
) -> None:
    """An edge without WebSocket clients has no consumer on the events stream (a step costs
    it nothing); a client wakes the feed and gets live events; once the last client has been
    gone `ws_feed_idle_s`, the consumer is deleted, and the next client wakes it again."""
    client = await make_client(ws_feed_idle_s=0.5)
    await emit(js, 0)

    async def consumers() -> int:
        return (await js.stream_info(s.EVENTS_STREAM)).state.consumer_count

    assert await consumers() == 0
    for round_ in range(2):
        async with client.ws_connect("/ws") as ws:
            assert await consumers() == 1
            seq = await emit(js, round_ + 1)
            assert (await ws.receive_json(timeout=10))["seq"] == seq

        async def idle() -> bool:
            return await consumers() == 0

        await eventually(idle, timeout=10, what="the feed idle")
    # A listener added to an idle feed (it went idle after its client woke it) turns it on.
    feed, got = feed_of(client), []

    class Late:
        task_id, agent_id = None, None

        def offer(self, frame: Any) -> None:
            got.append(frame.seq)

        def lost(self, reason: str, since: int | None = None) -> None:
            got.append(reason)

    feed.add(Late())
    seq = await emit(js, 9)
    await until(lambda: got == [seq], what="the late listener fed")
    assert feed.resets == 0


async def test_live_frames_are_timed_from_their_event_by_what_the_client_follows(
    client: Client_, js: JetStreamContext
) -> None:
    """`agentops_edge_ws_frame_delay_seconds` counts each live frame written (the event's ts
    to the write) under what its client follows; an event stamped before the client
    connected (a replay) is not timed."""
    old = await emit(js, 0)
    async with (
        client.ws_connect("/ws", params={"since": "0"}) as everything,
        client.ws_connect("/ws", params={"task_id": "task_a"}) as one_task,
    ):
        assert (await everything.receive_json(timeout=10))["seq"] == old
        seq = await emit(js, 1)
        assert (await everything.receive_json(timeout=10))["seq"] == seq
        assert (await one_task.receive_json(timeout=10))["seq"] == seq
        text = await (await client.get("/metrics")).text()
    counts = {
        line.split('follows="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("agentops_edge_ws_frame_delay_seconds_count")
    }
    assert counts == {"task": 1, "agent": 0, "all": 1}


async def test_a_burst_with_a_stalled_client_cuts_it_off_and_nats_never_sees_a_slow_consumer(
    make_client: MakeClient, js: JetStreamContext, nats_server: NatsServer
) -> None:
    """A live client that never reads is closed with 1013 once its queue and socket buffer
    pass the bound (not absorbed by the kernel); a reading client gets every event of the
    burst; the edge's NATS connection is never a slow consumer."""
    client = await make_client(ws_queue_bytes=256 * 1024)
    async with (
        client.ws_connect("/ws") as stalled,
        client.ws_connect("/ws", params={"task_id": "task_a"}) as reader,
    ):
        blob = "y" * 1000
        reading = asyncio.create_task(frames(reader, 3000))
        seqs = [await emit(js, n, blob=blob) for n in range(3000)]  # ~3 MB
        got = [f["seq"] for f in await reading]
        assert got == sorted(seqs)
        sent, closing = await close_of(stalled)
        assert (closing.type, closing.data) == (WSMsgType.CLOSE, 1013)
        assert closing.extra == f"client too slow: reconnect with since={sent[-1]}"
        assert sent == sorted(seqs)[: len(sent)] and len(sent) < 3000
    assert nats_server.monitor_url is not None
    async with aiohttp.ClientSession() as http:
        varz = await (await http.get(f"{nats_server.monitor_url}/varz")).json()
    assert varz["slow_consumers"] == 0
    assert client.app is not None and client.app[METRICS].ws_disconnects["slow"] == 1


async def test_a_deleted_feed_consumer_is_recreated_without_gap_or_duplicate(
    make_client: MakeClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed's consumer gone (a restarted server forgets it): heartbeats stop, the feed
    starts again after the last sequence it saw, and clients see nothing missing or twice."""
    monkeypatch.setattr(feed_module, "HEARTBEAT_S", 0.2)
    client = await make_client()
    async with client.ws_connect("/ws") as ws:
        before = [await emit(js, n) for n in range(3)]
        assert [f["seq"] for f in await frames(ws, 3)] == before
        for consumer in await js.consumers_info(s.EVENTS_STREAM):
            await js.delete_consumer(s.EVENTS_STREAM, consumer.name)
        after = [await emit(js, n) for n in range(3, 6)]
        assert [f["seq"] for f in await frames(ws, 3)] == after
        assert feed_of(client).resets >= 1
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}


async def test_a_lost_feed_closes_clients_1011_and_comes_back_with_the_stream(
    make_client: MakeClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events stream deleted: clients are closed with 1011 and their `since` (never left
    silent), new ones get 503, and once the stream is declared again the feed is back."""
    monkeypatch.setattr(feed_module, "HEARTBEAT_S", 0.2)
    client = await make_client(ws_feed_grace_s=0.5)
    async with client.ws_connect("/ws") as ws:
        seq = await emit(js, 1)
        assert (await ws.receive_json(timeout=10))["seq"] == seq
        await js.delete_stream(s.EVENTS_STREAM)
        sent, closing = await close_of(ws)
        assert (sent, closing.data) == ([], 1011)
        assert closing.extra == f"event feed lost: reconnect with since={seq}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 503
    await ensure_jetstream(js)

    async def back() -> bool:
        return feed_of(client).up

    await eventually(back, timeout=15, what="the feed to come back")
    async with client.ws_connect("/ws") as ws:
        seq = await emit(js, 2)
        assert (await ws.receive_json(timeout=10))["seq"] == seq == 1


async def test_a_stream_declared_anew_closes_clients_1011_with_since_zero(
    make_client: MakeClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events stream deleted and declared again at once: old sequences name nothing in
    it, so clients are closed with 1011 and told since=0; the feed goes on with the new one."""
    monkeypatch.setattr(feed_module, "HEARTBEAT_S", 0.2)
    client = await make_client()
    async with client.ws_connect("/ws") as ws:
        for n in range(3):
            await emit(js, n)
        await frames(ws, 3)
        await js.delete_stream(s.EVENTS_STREAM)
        await ensure_jetstream(js)
        sent, closing = await close_of(ws)
        assert (sent, closing.data) == ([], 1011)
        assert closing.extra == "event stream was reset: reconnect with since=0"
    async with client.ws_connect("/ws", params={"since": "0"}) as ws:
        seq = await emit(js, 4)
        assert (await ws.receive_json(timeout=10))["seq"] == seq == 1


async def test_frames_of_every_length_form_reach_the_client_intact(
    client: Client_, js: JetStreamContext
) -> None:
    """Events framed with a 7-, 16- and 64-bit length arrive whole, in order."""
    async with client.ws_connect("/ws") as ws:
        sizes = (10, 1_000, 70_000)
        seqs = [await emit(js, n, blob="z" * size) for n, size in enumerate(sizes)]
        got = await frames(ws, 3)
        assert [f["seq"] for f in got] == seqs
        assert [len(f["data"]["blob"]) for f in got] == list(sizes)
