"""/metrics against a real nats-server: the processes' own counts summed over instances from
`$SRV.STATS`, figures from NATS served ready and refreshed after, an instance that stops
answering kept in the sum for a while."""

from __future__ import annotations

import re
from typing import Any

import pytest
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from agentops.bus.metrics import LLM_CALLS, LLM_DURATION, TASKS_FINISHED, ProcessMetrics
from agentops.edge.metrics_bus import INSTANCE_TTL_S
from tests.helpers import eventually
from tests.integration import test_edge_api
from tests.integration.test_edge_api import MakeEdge, task_record

pytestmark = pytest.mark.integration
make_edge = test_edge_api.make_edge


async def fake_process(nc: Client, metrics: ProcessMetrics) -> Service:
    """A process's micro service whose status endpoint carries `metrics` in `$SRV.STATS`."""

    def stats(endpoint: EndpointStats) -> Any:
        return {"metrics": metrics.snapshot()} if endpoint.name == "status" else None

    service = await add_service(
        nc, name="agentops-llm-gateway", version="0.1.0", stats_handler=stats
    )

    async def status(req: Request) -> None:
        await req.respond(b"{}")

    await service.add_endpoint(
        name="status", subject="agentops.control.test.status", handler=status
    )
    return service


def sample(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


async def test_the_processes_counts_are_summed_over_their_instances(
    make_edge: MakeEdge, nc: Client
) -> None:
    """Two instances' counters and histograms add up in one series each; every declared
    family is listed, with or without samples."""
    a, b = ProcessMetrics(), ProcessMetrics()
    a.inc(LLM_CALLS, ("backend_developer", "ok"), 3)
    b.inc(LLM_CALLS, ("backend_developer", "ok"), 4)
    a.observe(LLM_DURATION, ("backend_developer", "ok"), 0.2)
    b.observe(LLM_DURATION, ("backend_developer", "ok"), 7.0)
    services = [await fake_process(nc, a), await fake_process(nc, b)]
    edge = await make_edge()
    text = await (await edge.client.get("/metrics")).text()
    kind = 'agent_type="backend_developer",outcome="ok"'
    assert sample(text, f"agentops_llm_calls_total{{{kind}}}") == 7
    assert sample(text, f"agentops_llm_call_duration_seconds_count{{{kind}}}") == 2
    assert sample(text, f'agentops_llm_call_duration_seconds_bucket{{{kind},le="0.25"}}') == 1
    assert sample(text, f'agentops_llm_call_duration_seconds_bucket{{{kind},le="+Inf"}}') == 2
    assert sample(text, f"agentops_llm_call_duration_seconds_sum{{{kind}}}") == 7.2
    for family in ("agentops_step_duration_seconds", "agentops_tool_call_duration_seconds"):
        assert f"# TYPE {family} histogram" in text
    assert f"# TYPE {TASKS_FINISHED.name} counter" in text
    for service in services:
        await service.stop()


async def test_figures_from_nats_are_served_ready_and_refreshed_after(
    make_edge: MakeEdge, nc: Client
) -> None:
    """A scrape serves the last refresh and starts the next one: a new task shows in the
    scrape after it, and the age of the figures is reported."""
    edge = await make_edge(metrics_max_age_s=0.0)
    series = 'agentops_tasks{agent_type="backend_developer",status="running"}'
    first = await (await edge.client.get("/metrics")).text()
    assert sample(first, series) == 0
    assert sample(first, "agentops_edge_metrics_age_seconds") is not None
    await edge.put_task(task_record())

    async def counted() -> bool:
        return sample(await (await edge.client.get("/metrics")).text(), series) == 1

    await eventually(counted, timeout=10, what="the new task in a later scrape")


async def test_an_instance_that_misses_a_gathering_stays_in_the_sum(
    make_edge: MakeEdge, nc: Client
) -> None:
    """An instance that stops answering keeps its last counts in the sum (a dip would read
    as a counter reset) for `INSTANCE_TTL_S`."""
    gone, stays = ProcessMetrics(), ProcessMetrics()
    gone.inc(LLM_CALLS, ("devops_engineer", "ok"), 5)
    stays.inc(LLM_CALLS, ("devops_engineer", "ok"), 1)
    leaving = await fake_process(nc, gone)
    staying = await fake_process(nc, stays)
    edge = await make_edge(metrics_max_age_s=0.0)
    series = 'agentops_llm_calls_total{agent_type="devops_engineer",outcome="ok"}'
    assert sample(await (await edge.client.get("/metrics")).text(), series) == 6
    await leaving.stop()
    stays.inc(LLM_CALLS, ("devops_engineer", "ok"), 1)

    async def refreshed() -> bool:
        return sample(await (await edge.client.get("/metrics")).text(), series) == 7

    await eventually(refreshed, timeout=10, what="the staying instance's new count")
    assert INSTANCE_TTL_S >= 30
    await staying.stop()
