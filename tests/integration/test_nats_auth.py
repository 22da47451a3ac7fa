"""The generated nats-server config: a user per process, and what each may not do is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from agentops import credentials
from agentops.bus.connection import MSG_ID
from agentops.bus.setup import bind_bucket, ensure_jetstream
from agentops.protocol import subjects as s
from agentops.protocol.messages import HumanResponse, ToolRequested
from tests.helpers import until
from tests.secure_nats import SecureNats, start_secure

pytestmark = pytest.mark.integration

AGENT = "agent_victim"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureNats]:
    server = start_secure(tmp_path, plugins=("word_count",))
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
async def declared(secure: SecureNats) -> AsyncIterator[Client]:
    """The streams and buckets, declared as the orchestrator does; yields an admin client."""
    orchestrator = await secure.connect("orchestrator")
    await ensure_jetstream(orchestrator.jetstream())
    await orchestrator.close()
    admin = await secure.connect("admin")
    try:
        yield admin
    finally:
        await admin.close()


def human_answer() -> HumanResponse:
    return HumanResponse(
        id="forged.human", source="tool-executor", task_id="task_v", agent_id=AGENT,
        ts=datetime.now(UTC), response={"approved": True}, request_id=f"{AGENT}.h1.call_0_0",
    )  # fmt: skip


async def stored(admin: Client, subject: str) -> int:
    info = await admin.jetstream().stream_info(s.WORK_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def refused(secure: SecureNats, who: str, what: str, subject: str) -> None:
    """`who` was told (and the server logged) that `what` on `subject` is not permitted."""
    expected = f'permissions violation for {what} to "{subject.lower()}'
    await until(lambda: expected in secure.violations(who), what=f"{who}: {expected}")
    await until(lambda: "Violation" in secure.log and subject in secure.log, what="logged")


async def test_a_connection_without_credentials_or_with_an_unknown_key_is_refused(
    secure: SecureNats, tmp_path: Path
) -> None:
    """No credential, or an nkey the config does not name: Authorization Violation."""
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(secure.url, allow_reconnect=False, connect_timeout=2)
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(credentials.new_seed())
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            secure.url, nkeys_seed=str(stranger), allow_reconnect=False, connect_timeout=2
        )
    assert "authentication error" in secure.log


async def test_tool_executor_cannot_write_agent_state_or_answer_for_a_human(
    secure: SecureNats, declared: Client
) -> None:
    """The executor's KV write of an agent head and its human answer are both refused."""
    executor = await secure.connect("tool-executor")
    try:
        head = s.kv_key(s.AGENTS_BUCKET, AGENT)
        await executor.publish(head, b'{"status": "completed"}')
        mailbox = s.agent_mailbox("devops_engineer", AGENT, "agent.human_response")
        await executor.publish(mailbox, human_answer().model_dump_json().encode())
        await refused(secure, "tool-executor", "publish", head)
        await refused(secure, "tool-executor", "publish", mailbox)
        # A tool result, its own kind, goes through.
        tool = s.agent_mailbox("devops_engineer", AGENT, "tool.completed")
        await executor.jetstream().publish(tool, b"{}", headers={MSG_ID: "ok.tool"})
    finally:
        await executor.close()
    assert await stored(declared, mailbox) == 0
    assert await stored(declared, tool) == 1
    with pytest.raises(nats.js.errors.NotFoundError):
        await declared.jetstream().get_last_msg(s.kv_stream(s.AGENTS_BUCKET), head)


async def test_llm_gateway_cannot_read_the_tasks_bucket(
    secure: SecureNats, declared: Client
) -> None:
    """A KV get (direct get) or a watch of the tasks bucket by the gateway is refused."""
    await declared.jetstream().publish(s.kv_key(s.TASKS_BUCKET, "task_secret"), b'{"x": 1}')
    gateway = await secure.connect("llm-gateway")
    try:
        kv = bind_bucket(gateway.jetstream(timeout=1), s.TASKS_BUCKET)
        with pytest.raises((TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await kv.get("task_secret")
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await gateway.jetstream(timeout=1).stream_info(s.kv_stream(s.TASKS_BUCKET))
        direct = s.direct_get(s.js_api(), s.kv_stream(s.TASKS_BUCKET))
        await refused(secure, "llm-gateway", "publish", direct)
        await gateway.subscribe(s.kv_keys(s.TASKS_BUCKET))
        await refused(secure, "llm-gateway", "subscription", s.kv_keys(s.TASKS_BUCKET))
    finally:
        await gateway.close()


async def test_edge_cannot_write_agent_state_or_delete_a_stream(
    secure: SecureNats, declared: Client
) -> None:
    """The edge's KV write of an agent head and its stream delete are refused; the stream stays."""
    edge = await secure.connect("edge")
    try:
        head = s.kv_key(s.AGENTS_BUCKET, AGENT)
        await edge.publish(head, b"{}")
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await edge.jetstream(timeout=1).delete_stream(s.EVENTS_STREAM)
        await refused(secure, "edge", "publish", head)
        await refused(
            secure, "edge", "publish", s.stream_api(s.js_api(), "DELETE", s.EVENTS_STREAM)
        )
    finally:
        await edge.close()
    assert (await declared.jetstream().stream_info(s.EVENTS_STREAM)).config.name


@pytest.mark.parametrize("who", ["edge", "tool-executor", "llm-gateway", "orchestrator"])
async def test_a_forged_tool_request_is_refused(
    secure: SecureNats, declared: Client, who: str
) -> None:
    """Only agents may publish tool requests: from anyone else the request is refused."""
    forged = ToolRequested(
        id=f"forged.{who}", source=who, task_id="task_other", agent_id=AGENT,
        ts=datetime.now(UTC), step=1, call_id="c1", name="read_file",
        arguments={"path": "secret.txt"},
        reply_to={"agent_type": "devops_engineer", "agent_id": AGENT},
    )  # fmt: skip
    client = await secure.connect(who)
    try:
        subject = s.tool_requests("read_file")
        await client.publish(subject, forged.model_dump_json().encode())
        await refused(secure, who, "publish", subject)
    finally:
        await client.close()
    assert await stored(declared, s.tool_requests("read_file")) == 0


async def test_plugin_may_announce_only_itself_and_serve_only_its_calls(
    secure: SecureNats, declared: Client
) -> None:
    """A plugin's user announces its own tool; another tool's key and calls are refused."""
    plugin = await secure.connect(s.plugin_process("word_count"))
    try:
        kv = bind_bucket(plugin.jetstream(), s.PLUGINS_BUCKET)
        assert await kv.put("word_count", json.dumps({"name": "word_count"}).encode())
        await plugin.publish(s.kv_key(s.PLUGINS_BUCKET, "shell"), b"{}")
        await plugin.subscribe(s.plugin_calls("shell"))
        await refused(
            secure, s.plugin_process("word_count"), "publish", s.kv_key(s.PLUGINS_BUCKET, "shell")
        )
        await refused(
            secure, s.plugin_process("word_count"), "subscription", s.plugin_calls("shell")
        )
    finally:
        await plugin.close()


async def test_monitoring_is_on_loopback_and_shows_each_process_as_its_own_user(
    secure: SecureNats, declared: Client
) -> None:
    """/connz names the nkey each connection used: one user per process."""
    clients = [await secure.connect(p) for p in ("edge", "orchestrator")]
    try:
        assert secure.server.monitor_url is not None
        async with httpx.AsyncClient(timeout=5) as http:
            connz = (await http.get(f"{secure.server.monitor_url}/connz?auth=1")).json()
        keys = {
            c.get("name"): c.get("authorized_user") or c.get("nkey") for c in connz["connections"]
        }
        for name in ("edge", "orchestrator"):
            assert keys[s.connection_name(name)] == credentials.load(secure.seed(name)).public_key
    finally:
        for client in clients:
            await client.close()


def test_a_process_whose_key_the_server_does_not_know_says_so_and_exits_2(
    secure: SecureNats, tmp_path: Path
) -> None:
    """`agentops run` with a data dir's credential the server does not name: one error line."""
    other = tmp_path / "other"
    credentials.ensure(other, ["orchestrator"])
    env = {**os.environ, "NATS_URL": secure.url, "AGENTOPS_DATA_DIR": str(other)}
    proc = subprocess.run(
        [sys.executable, "-m", "agentops.cli", "run", "orchestrator"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: NATS at nats://127.0.0.1:") and "refused" in last
    assert (
        "orchestrator.nk" in last
        and credentials.existing(other)["orchestrator"].seed.decode() not in proc.stderr
    )
