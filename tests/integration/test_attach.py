"""A process that may not declare streams (AGENTOPS_JETSTREAM_DECLARE=false) waits for them."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentops.bus.consumer import ensure_consumer
from agentops.bus.setup import attach_jetstream, ensure_jetstream
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError
from tests.helpers import until

pytestmark = pytest.mark.integration


async def test_attach_without_streams_fails_naming_the_stream_and_the_setting(nc: Client) -> None:
    """With no streams declared, attaching ends in a ConfigError that says what to do."""
    with pytest.raises(ConfigError) as info:
        await attach_jetstream(nc.jetstream(), timeout=0.2)
    message = info.value.message
    assert s.WORK_STREAM in message and "does not exist yet" in message
    assert "AGENTOPS_JETSTREAM_DECLARE=false" in message and "agentops up" in message


async def test_attach_with_a_wrong_domain_points_at_the_domain_setting(nc: Client) -> None:
    """A JetStream domain nobody serves is reported as such, not as a missing stream."""
    await ensure_jetstream(nc.jetstream())
    with pytest.raises(ConfigError, match="AGENTOPS_JETSTREAM_DOMAIN"):
        await attach_jetstream(nc.jetstream(domain="nowhere"), timeout=0.2)


async def test_attach_waits_for_streams_declared_later_and_binds_working_buckets(
    nc: Client,
) -> None:
    """Attaching first and declaring afterwards works; the bound buckets read and write."""
    asked: list[str] = []

    async def seen(msg: Msg) -> None:
        asked.append(msg.subject)

    await nc.subscribe("$JS.API.STREAM.INFO.>", cb=seen)  # watch it ask, as `nats sub` would
    attaching = asyncio.create_task(attach_jetstream(nc.jetstream(), timeout=30))
    await until(lambda: asked, what="attach asking for the work stream")
    assert not attaching.done()
    declared = await ensure_jetstream(nc.jetstream())
    buckets = await attaching
    assert set(buckets) == set(declared)
    tasks = buckets[s.TASKS_BUCKET]
    await tasks.put("t1", b'{"x": 1}')
    assert (await declared[s.TASKS_BUCKET].get("t1")).value == b'{"x": 1}'
    # The consumer a remote gateway creates is pinned to its filter by the API subject.
    deliver = s.deliver_subject("llm-gateway", s.LLM_GATEWAY_CONSUMER)
    await ensure_consumer(
        nc.jetstream(), s.WORK_STREAM, s.LLM_GATEWAY_CONSUMER, s.llm_requests(), 1024, deliver
    )
    info = await nc.jetstream().consumer_info(s.WORK_STREAM, s.LLM_GATEWAY_CONSUMER)
    assert info.config.filter_subject == s.llm_requests()
    assert info.config.durable_name == s.LLM_GATEWAY_CONSUMER
    assert info.config.deliver_subject == deliver
