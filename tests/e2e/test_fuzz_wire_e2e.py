"""Property-based fuzz of the wire: every message type, bent, on every stream subject of a
running system (published with the operator's rights). No process dies or restarts, the
edge answers no 500 for what was sent, and a normal task still completes.

The default run is short; `pytest -m fuzz` sends thousands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from nats.aio.client import Client

from agentops.bus.connection import MSG_ID
from agentops.protocol.messages import WORK_ADAPTER
from tests import fuzz
from tests.e2e.conftest import System
from tests.e2e.test_system import SEED, steps
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def test_every_message_type_has_a_valid_template() -> None:
    """The fuzz covers each type of the work-message union, starting from a valid message."""
    assert sorted(fuzz.EXTRAS) == fuzz.message_types()
    for kind in fuzz.message_types():
        assert (
            WORK_ADAPTER.validate_python(fuzz.template(kind, "task_x", "agent_x", 1)).type == kind
        )


def publish_fuzz(system: System, examples: int, derandomize: bool) -> list[tuple[str, bytes]]:
    loop = asyncio.new_event_loop()
    nc: Client = loop.run_until_complete(nats.connect(system.nats_url, **system.admin))
    js = nc.jetstream(timeout=5)
    sent: list[tuple[str, bytes]] = []

    @settings(
        max_examples=examples, deadline=None, derandomize=derandomize, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(message=fuzz.wire_message())
    def one(message: tuple[str, bytes]) -> None:
        subject, payload = message
        msg_id = f"fuzz-{len(sent)}"
        loop.run_until_complete(js.publish(subject, payload, headers={MSG_ID: msg_id}))
        sent.append(message)

    try:
        one()
    finally:
        loop.run_until_complete(nc.close())
        loop.close()
    return sent


async def check_after(system: System, sent: list[tuple[str, bytes]]) -> None:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        ids = {
            t
            for subject, _ in sent
            for t in subject.split(".")
            if t.startswith(("task_", "agent_"))
        }
        for path in ("/tasks", "/agents", "/metrics", "/agent-types"):
            resp = await http.get(path)
            assert resp.status_code == 200, (path, resp.text)
        for ident in sorted(ids)[:60]:
            for path in (f"/tasks/{ident}", f"/agents/{ident}/status", f"/agents/{ident}/state"):
                resp = await http.get(path)
                assert resp.status_code < 500, (path, resp.text)
        created = (await http.post("/tasks", json={**SEED, "context": steps(1)})).json()

        async def done() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") == "completed" else None

        await eventually(done, timeout=90, what="a normal task completes after the fuzz")
        assert (await http.get("/health")).status_code == 200


def fuzz_the_wire(system: System, examples: int, derandomize: bool) -> None:
    before = system.pids()
    sent = publish_fuzz(system, examples, derandomize)
    assert len(sent) >= examples // 2
    asyncio.run(check_after(system, sent))
    assert system.pids() == before, "a process died or restarted"
    crashed = [
        p.name for p in (system.data_dir / "logs").glob("*.log") if "Traceback" in p.read_text()
    ]
    assert crashed == [], crashed


def test_bent_wire_messages_on_every_subject_kill_nothing(system: System) -> None:
    """A short fuzz of the wire: nothing dies, nothing 500s, work goes on."""
    fuzz_the_wire(system, fuzz.SHORT, derandomize=True)


@pytest.mark.fuzz
def test_a_long_wire_fuzz_kills_nothing(system: System) -> None:
    """The same with thousands of messages, new ones each run."""
    fuzz_the_wire(system, fuzz.LONG, derandomize=False)
