"""Property-based fuzz of every edge route's path, query, headers and body: never a 500.

Against a real nats-server, with a task and an agent awaiting a human stored, so requests
reach deep into the handlers. The default run is short; `pytest -m fuzz` runs the long one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from nats.aio.client import Client

from agentops.bus.setup import ensure_jetstream
from agentops.edge.app import create_app
from agentops.natsserver import NatsServer
from tests import fuzz
from tests.integration.test_edge_api import FAST, Edge, agent_state, human_thread, task_record

pytestmark = pytest.mark.integration


def routes(app: web.Application) -> list[tuple[str, str]]:
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "*":
            found.append((route.method, path))
    return sorted(set(found))


class Harness:
    """An edge app on its own event loop, for hypothesis's synchronous examples."""

    def __init__(self, server: NatsServer) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = server
        self.nc: Client | None = None
        self.client: TestClient[web.Request, web.Application] | None = None

    def start(self) -> list[tuple[str, str]]:
        return self.loop.run_until_complete(self._start())

    async def _start(self) -> list[tuple[str, str]]:
        self.nc = await nats.connect(self.server.url)
        js = self.nc.jetstream()
        buckets = await ensure_jetstream(js)
        app = create_app(self.nc, js, buckets, replace(FAST, ws_heartbeat_s=5.0))
        self.client = TestClient(TestServer(app, host="127.0.0.1"))
        await self.client.start_server()
        edge = Edge(self.client, app, self.nc, js, buckets)
        await edge.put_task(task_record())
        await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
        return routes(app)

    def send(self, request: tuple[str, str, dict[str, str], bytes | None, dict[str, str]]) -> int:
        return self.loop.run_until_complete(self._send(*request))

    async def _send(
        self, method: str, path: str, query: dict[str, str], body: bytes | None,
        headers: dict[str, str],
    ) -> int:  # fmt: skip
        assert self.client is not None
        async with self.client.request(
            method, path, params=query, data=body, headers=headers, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp.status

    def stop(self) -> None:
        async def close() -> None:
            if self.client is not None:
                await self.client.close()
            if self.nc is not None:
                await self.nc.close()

        self.loop.run_until_complete(close())
        self.loop.close()


@pytest.fixture
def harness(nats_server: NatsServer) -> Iterator[Harness]:
    h = Harness(nats_server)
    try:
        yield h
    finally:
        h.stop()


def fuzz_routes(harness: Harness, examples: int, derandomize: bool) -> None:
    every = harness.start()
    assert ("POST", "/tasks") in every and ("GET", "/ws") in every
    statuses: list[int] = []

    @settings(
        max_examples=examples, deadline=None, derandomize=derandomize, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(request=fuzz.http_request(every))
    def one(request: tuple[str, str, dict[str, str], bytes | None, dict[str, str]]) -> None:
        status = harness.send(request)
        statuses.append(status)
        assert status < 500 or status == 503, (status, request)

    one()
    assert len({s // 100 for s in statuses}) >= 2  # the examples reached both answers and errors


def test_every_route_answers_fuzzed_input_without_a_server_error(harness: Harness) -> None:
    """Bodies, queries, ids and headers bent from valid ones: 2xx or 4xx, never a 500."""
    fuzz_routes(harness, fuzz.SHORT, derandomize=True)


@pytest.mark.fuzz
def test_every_route_under_a_long_fuzz(harness: Harness) -> None:
    """The same, thousands of examples, new ones each run."""
    fuzz_routes(harness, fuzz.LONG, derandomize=False)
