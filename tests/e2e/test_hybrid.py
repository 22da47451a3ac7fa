"""Hybrid: the LLM gateway on "another machine" behind a NATS leaf node, the rest on the hub.

Two real nats-servers on loopback run deploy/hybrid's hub.conf and leaf.conf (only the store
directory and leaf node port rewritten; client and monitoring ports given as flags), the hub
with the users file `agentops init --hub-users` writes. The local system (`agentops up
--nats-url <hub> --without llm-gateway`) runs on the hub, each process as its own nkey user
from the data dir; the gateway (`agentops run llm-gateway`) connects to the leaf as the
restricted `gateway` user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError

from agentops import credentials
from agentops.bus.connection import ERROR_CODE, MSG_ID
from agentops.natsserver import die_with_parent
from agentops.protocol import subjects as s
from tests.e2e.conftest import System, start_system
from tests.e2e.hybrid_nats import (
    GATEWAY_PASSWORD,
    ConfServer,
    make_certificates,
    start_hub,
    start_leaf,
    stop_process,
)
from tests.helpers import eventually, until

pytestmark = pytest.mark.e2e

TASK = {"agent_type": "backend_developer", "description": "Add a health endpoint", "context": {}}


@dataclass
class Hybrid:
    hub: ConfServer
    leaf: ConfServer
    hub_leaf_port: int
    gateway: subprocess.Popen[bytes]
    gateway_log: Path
    system: System
    root: Path


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hybrid]:
    root = tmp_path_factory.mktemp("hybrid")
    with ExitStack() as stack:
        hub, hub_leaf_port = start_hub(root, root / "data")
        stack.callback(hub.stop)
        leaf = start_leaf(root, "agentops-leaf", hub_leaf_port)
        stack.callback(leaf.stop)
        gateway_log = root / "llm-gateway.log"
        env = {
            **os.environ,
            "NATS_URL": leaf.url("gateway", GATEWAY_PASSWORD),
            "AGENTOPS_JETSTREAM_DOMAIN": "hub",
            "AGENTOPS_JETSTREAM_DECLARE": "false",
            "AGENTOPS_LLM_PROVIDER": "mock",
            "AGENTOPS_LOG_FORMAT": "json",
            "AGENTOPS_LOG_LEVEL": "info",
        }
        with gateway_log.open("ab") as out:
            # Started before the hub side declares the streams: it waits for them.
            gateway = subprocess.Popen(
                [sys.executable, "-m", "agentops.cli", "run", "llm-gateway"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        stack.callback(stop_process, gateway)
        system = start_system(root / "data", nats_url=hub.url(), without=("llm-gateway",))
        stack.callback(system.stop)
        yield Hybrid(hub, leaf, hub_leaf_port, gateway, gateway_log, system, root)


async def admin(hybrid: Hybrid) -> Client:
    """The operator on the hub (the `admin` credential of the local data dir)."""
    return await nats.connect(hybrid.hub.url(), **hybrid.hub.admin(hybrid.system.data_dir))


async def run_task(system: System) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = (await http.post("/tasks", json=TASK)).json()

        async def done() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") in ("completed", "failed") else None

        return await eventually(done, timeout=60, what="task finished")


async def gateway_status(hybrid: Hybrid) -> dict[str, Any]:
    """The gateway's status endpoint, asked from the hub side (crossing the leaf node)."""
    nc = await admin(hybrid)
    try:
        reply = await nc.request(s.control_subject("llm-gateway", "status"), b"", timeout=5)
    finally:
        await nc.close()
    return dict(json.loads(reply.data))


async def test_task_completes_served_by_the_gateway_behind_the_leaf(hybrid: Hybrid) -> None:
    """A task submitted on the hub completes; its LLM calls are answered by the leaf's gateway."""
    before = (await gateway_status(hybrid))["llm_calls"]["ok"]
    record = await run_task(hybrid.system)
    assert record["status"] == "completed", record
    assert record["result"]["summary"]
    status = await gateway_status(hybrid)
    assert status["pid"] == hybrid.gateway.pid  # the one gateway is the remote process
    assert status["llm_calls"]["ok"] > before
    # It is connected to the leaf as the restricted user, and not to the hub at all.
    leaf_conns = hybrid.leaf.monitor("/connz?auth=1")["connections"]
    mine = [c for c in leaf_conns if c.get("name") == s.connection_name("llm-gateway")]
    assert [c.get("authorized_user") for c in mine] == ["gateway"]
    assert s.connection_name("llm-gateway") not in hybrid.hub.connection_names()
    # Each local process is on the hub as its own nkey user (its own permissions).
    hub_conns = hybrid.hub.monitor("/connz?auth=1&limit=1000")["connections"]
    users = {c.get("name"): c.get("authorized_user") for c in hub_conns}
    for process in hybrid.system.pids():
        seed = credentials.seed_path(hybrid.system.data_dir, process)
        assert users[s.connection_name(process)] == credentials.load(seed).public_key
    links = [x for x in hybrid.hub.monitor("/leafz")["leafs"] if x["name"] == "agentops-leaf"]
    assert [x["account"] for x in links] == ["AGENTOPS"]
    assert "llm-gateway" not in hybrid.system.pids()
    async with httpx.AsyncClient(timeout=10) as http:
        health = (await http.get(f"{hybrid.system.url}/health")).json()
    assert health["services"]["llm-gateway"] == {"status": "up", "instances": 1}


async def test_remote_gateway_dead_letters_what_it_cannot_decode(hybrid: Hybrid) -> None:
    """A garbled LLM request is dead-lettered on the hub by the remote gateway and acked."""
    hub = await admin(hybrid)
    try:
        js = hub.jetstream()
        marker = secrets.token_hex(8)
        await js.publish(s.llm_requests(), f"not json {marker}".encode(), headers={MSG_ID: marker})

        async def dead_letter() -> Any:
            try:
                msg = await js.get_last_msg(s.DLQ_STREAM, s.dead_letter(s.llm_requests()))
            except nats.js.errors.NotFoundError:
                return None
            return msg if marker.encode() in msg.data else None

        msg = await eventually(dead_letter, timeout=20, interval=0.1, what="dead letter")
        assert msg.headers and msg.headers[ERROR_CODE] == "bad_message"

        async def settled() -> bool:  # terminated after the dead letter was published
            info = await js.consumer_info(s.WORK_STREAM, s.LLM_GATEWAY_CONSUMER)
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(settled, timeout=20, interval=0.1, what="request terminated")
    finally:
        await hub.close()


async def collect_errors(url: str) -> tuple[Client, list[str]]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url, error_cb=on_error, inbox_prefix=s.inbox_prefix("llm-gateway"), allow_reconnect=False
    )
    return nc, errors


async def test_gateway_user_on_the_leaf_cannot_touch_tasks_state_or_replies(hybrid: Hybrid) -> None:
    """As `gateway` on the leaf: task submits, human answers, KV reads, other replies: refused."""
    nc, errors = await collect_errors(hybrid.leaf.url("gateway", GATEWAY_PASSWORD))
    try:
        js = nc.jetstream(domain="hub", timeout=1)
        await nc.publish(s.task_inbox("hybrid-denied", "task.submit"), b"{}")
        human = s.agent_mailbox("backend_developer", "agent_hybrid", "agent.human_response")
        await nc.publish(human, b"{}")  # its answers are LLM answers, never a human's
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await js.stream_info(f"KV_{s.TASKS_BUCKET}")
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await nc.request(s.control_subject("edge", "status"), b"", timeout=1)
        await nc.subscribe("_INBOX.>")
        await nc.subscribe(f"$KV.{s.TASKS_BUCKET}.>")
        await nc.flush()

        def violations() -> bool:
            text = "\n".join(errors).lower()
            return all(
                f'permissions violation for {what} to "{subject}' in text
                for what, subject in (
                    ("publish", "agentops.task."),
                    ("publish", human.lower()),
                    ("publish", f"$js.hub.api.stream.info.kv_{s.TASKS_BUCKET}"),
                    ("publish", "agentops.control.edge.status"),
                    ("subscription", "_inbox.>"),
                    ("subscription", f"$kv.{s.TASKS_BUCKET}.>"),
                )
            )

        await until(violations, timeout=10, what="six permission violations")
    finally:
        await nc.close()
    # Nothing reached the hub, the violations are in the leaf's log, and the gateway still works.
    hub = await admin(hybrid)
    try:
        info = await hub.jetstream().stream_info(
            s.WORK_STREAM, subjects_filter=s.task_inbox("hybrid-denied", "task.submit")
        )
        assert not info.state.subjects
    finally:
        await hub.close()
    assert "Publish Violation" in hybrid.leaf.log.read_text()
    assert hybrid.gateway.poll() is None
    assert (await run_task(hybrid.system))["status"] == "completed"


async def test_gateway_user_may_read_its_own_consumer_for_the_stall_watchdog_only(
    hybrid: Hybrid,
) -> None:
    """As `gateway` on the leaf: its own consumer's info answers, another consumer's is denied."""
    nc, errors = await collect_errors(hybrid.leaf.url("gateway", GATEWAY_PASSWORD))
    try:
        js = nc.jetstream(domain="hub", timeout=2)
        info = await js.consumer_info(s.WORK_STREAM, s.LLM_GATEWAY_CONSUMER)
        assert info.name == s.LLM_GATEWAY_CONSUMER
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await js.consumer_info(s.WORK_STREAM, s.TOOL_EXECUTOR_CONSUMER)
        await until(
            lambda: "permissions violation for publish" in "\n".join(errors).lower(),
            timeout=10, what="the other consumer's info denied",
        )  # fmt: skip
    finally:
        await nc.close()


async def test_hub_enforces_the_permissions_even_when_the_leaf_is_opened(hybrid: Hybrid) -> None:
    """A leaf stripped of its local checks still cannot reach denied subjects through the hub."""
    leaf = start_leaf(hybrid.root, "open-leaf", hybrid.hub_leaf_port, open_locally=True)
    try:
        remote = await nats.connect(leaf.url(), inbox_prefix=s.inbox_prefix("llm-gateway"))
        hub = await admin(hybrid)
        try:
            await _check_open_leaf(remote, hub)
        finally:
            await remote.close()
            await hub.close()
    finally:
        leaf.stop()


async def _check_open_leaf(remote: Client, hub: Client) -> None:
    # Leaf -> hub: a denied publish is not delivered; an allowed one after it is (same link).
    seen: list[str] = []
    await hub.subscribe(s.task_inbox("hybrid-open", "task.submit"), cb=recorder(seen))
    marker = f"{s.inbox_prefix('hybrid-test')}.marker"
    await hub.subscribe(marker, cb=recorder(seen))
    await hub.flush()

    async def marker_arrives() -> bool:
        await remote.publish(s.task_inbox("hybrid-open", "task.submit"), b"{}")
        await remote.publish(marker, b"")
        await remote.flush()
        return marker in seen

    # Retried: the hub's interest may reach the leaf a moment after the subscription.
    await eventually(marker_arrives, timeout=10, interval=0.1, what="allowed publish to the hub")
    assert s.task_inbox("hybrid-open", "task.submit") not in seen
    # JetStream requests outside the allow list go unanswered: no stream or KV read.
    js = remote.jetstream(domain="hub", timeout=2)
    with pytest.raises((TimeoutError, nats.errors.TimeoutError, ServiceUnavailableError)):
        await js.stream_info(f"KV_{s.AGENTS_BUCKET}")
    assert (await js.stream_info(s.WORK_STREAM)).config.name == s.WORK_STREAM
    # Hub -> leaf: a denied subject is not forwarded; an allowed one after it is.
    got: list[str] = []
    await remote.subscribe("agentops.>", cb=recorder(got))
    await remote.flush()
    denied = s.control_subject("edge", "hybrid-probe")
    allowed = s.control_subject("llm-gateway", "hybrid-probe")

    async def allowed_arrives() -> bool:
        await hub.publish(denied, b"")
        await hub.publish(allowed, b"")
        await hub.flush()
        return allowed in got

    await eventually(allowed_arrives, timeout=10, interval=0.1, what="allowed publish to the leaf")
    assert denied not in got


def recorder(seen: list[str]) -> Callable[[Msg], Awaitable[None]]:
    async def note(msg: Msg) -> None:
        seen.append(msg.subject)

    return note


async def test_gateway_user_cannot_connect_to_the_hub_directly(hybrid: Hybrid) -> None:
    """`gateway` is a leaf node user only: a client connection to the hub is refused."""
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            hybrid.hub.url("gateway", GATEWAY_PASSWORD), allow_reconnect=False, connect_timeout=2
        )


def test_passwords_never_reach_logs_banner_or_health(hybrid: Hybrid) -> None:
    """No NATS password or seed in any log, the banner or /health; the banner names the rest."""
    texts = {
        "gateway log": hybrid.gateway_log.read_text(),
        "banner": hybrid.system.output.read_text(),
        "health": httpx.get(f"{hybrid.system.url}/health", timeout=10).text,
    }
    for log in [*(hybrid.system.data_dir / "logs").glob("*.log"), *hybrid.root.glob("*.log")]:
        texts[log.name] = log.read_text()  # ours and the nats-servers' (leaf URL included)
    seeds = [c.seed.decode() for c in credentials.existing(hybrid.system.data_dir).values()]
    for where, text in texts.items():
        assert GATEWAY_PASSWORD not in text, where
        assert not [seed for seed in seeds if seed in text], where
    assert f"nats://127.0.0.1:{hybrid.hub.port} (external)" in texts["banner"]
    assert "elsewhere  llm-gateway" in texts["banner"]
    assert '"jetstream_domain": "hub"' in texts["gateway log"]
    assert "gateway:***@" in texts["gateway log"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for certificates")
def test_documented_tls_blocks_link_hub_and_leaf_over_tls(tmp_path: Path) -> None:
    """hub.conf's and leaf.conf's commented TLS blocks, enabled, carry the leaf link over TLS."""
    certs = make_certificates(tmp_path / "certs")
    hub, leaf_port = start_hub(tmp_path, tmp_path / "data", tls_dir=certs)
    try:
        assert hub.monitor("/varz")["leaf"]["tls_required"] is True
        # Returns once the leaf reports its link up; it dials tls://, so only over TLS.
        start_leaf(tmp_path, "tls-leaf", leaf_port, tls_dir=certs).stop()
    finally:
        hub.stop()
