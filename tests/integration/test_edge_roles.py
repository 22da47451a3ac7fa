"""API roles at the edge: viewer / operator / admin tokens, the actor of each command, the
WebSocket's token forms, /metrics protection and rate-limited failures."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import aiohttp
import pytest

from agentops.config_tables import TokenEntry
from agentops.edge.auth import require_tokens_off_loopback, required_role
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError
from agentops.protocol.messages import HumanResponse, PauseAgent, SubmitTask
from tests.helpers import until
from tests.integration import test_edge_api as api
from tests.integration.test_edge_api import TASK, MakeEdge, agent_state, human_thread, nothing, play

pytestmark = pytest.mark.integration
make_edge = api.make_edge

TOKENS = {"ada": "viewer-token-1", "bob": "operator-token-2"}
ENTRIES = (
    TokenEntry(name="ada", role="viewer", sha256=hashlib.sha256(b"viewer-token-1").hexdigest()),
    TokenEntry(name="bob", role="operator", sha256=hashlib.sha256(b"operator-token-2").hexdigest()),
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_role_a_route_needs() -> None:
    """Reads need viewer, commands operator; health and the page nothing; metrics as set."""
    assert required_role("GET", "/tasks", "none") == "viewer"
    assert required_role("GET", "/ws", "none") == "viewer"
    assert required_role("POST", "/tasks", "none") == "operator"
    assert required_role("DELETE", "/tasks/t1", "none") == "operator"
    assert required_role("POST", "/agents/a/human-response", "none") == "operator"
    assert required_role("GET", "/health", "admin") is None
    assert required_role("GET", "/", "admin") is None
    assert required_role("GET", "/metrics", "none") is None
    assert required_role("GET", "/metrics", "viewer") == "viewer"


def test_listening_off_loopback_without_a_token_is_refused() -> None:
    """0.0.0.0 or a routable address needs a token; loopback does not."""
    for host in ("127.0.0.1", "::1", "localhost"):
        require_tokens_off_loopback(host, None, ())
    require_tokens_off_loopback("0.0.0.0", "t", ())
    require_tokens_off_loopback("0.0.0.0", None, ENTRIES)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ConfigError, match="AGENTOPS_API_TOKEN"):
            require_tokens_off_loopback(host, None, ())


@pytest.mark.parametrize("command", [["up", "--host", "0.0.0.0"], ["run", "edge"]])
def test_off_loopback_without_a_token_is_one_error_line(
    tmp_path: object, command: list[str]
) -> None:
    """`agentops up` / `agentops run edge` on 0.0.0.0 with no token: exit 2, one `error:` line."""
    env = {"PATH": "/usr/bin:/bin", "AGENTOPS_HOST": "0.0.0.0", "AGENTOPS_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "agentops.cli", *command],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: the edge would listen on 0.0.0.0 with no API token: set AGENTOPS_API_TOKEN (or "
        "[auth] tokens in the config file), or listen on 127.0.0.1"
    ]


async def test_viewer_reads_operator_commands_admin_everything(make_edge: MakeEdge) -> None:
    """A viewer's POST is 403 naming the role; an operator's and the admin's go through."""
    edge = await make_edge(api_token="admin-token-0", tokens=ENTRIES)
    assert (await edge.client.get("/tasks", headers=bearer(TOKENS["ada"]))).status == 200
    denied = await edge.client.post("/tasks", json=TASK, headers=bearer(TOKENS["ada"]))
    assert denied.status == 403
    body = await denied.json()
    assert body["error"]["code"] == "forbidden"
    assert body["error"]["details"] == {"needed": "operator", "role": "viewer"}
    assert "viewer-token-1" not in str(body)
    for token in (TOKENS["bob"], "admin-token-0"):
        created = await edge.client.post("/tasks", json=TASK, headers=bearer(token))
        assert created.status == 201, await created.text()
    unknown = await edge.client.get("/tasks", headers=bearer("nope"))
    assert unknown.status == 401 and unknown.headers["WWW-Authenticate"] == "Bearer"


async def test_commands_carry_the_tokens_name_as_actor(make_edge: MakeEdge) -> None:
    """The submit, pause and answer the edge publishes name the token: bob, admin, bob."""
    edge = await make_edge(api_token="admin-token-0", tokens=ENTRIES)
    submits, sub = await play(edge.nc, s.TASK_INBOXES, nothing)
    await edge.client.post("/tasks", json=TASK, headers=bearer(TOKENS["bob"]))
    await until(lambda: submits, what="the submit")
    [(_, submit)] = submits
    assert isinstance(submit, SubmitTask) and submit.actor == "bob"
    await sub.unsubscribe()
    await edge.put_agent(agent_state())
    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, nothing)
    await edge.client.post("/agents/agent_a1/pause", headers=bearer("admin-token-0"))
    await until(lambda: seen, what="the pause")
    assert isinstance(seen[0][1], PauseAgent) and seen[0][1].actor == "admin"
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    answer = await edge.client.post(
        "/agents/agent_a1/human-response", json={"response": "x"}, headers=bearer(TOKENS["bob"])
    )
    assert answer.status in (200, 202)
    await until(lambda: len(seen) == 2, what="the answer")
    assert isinstance(seen[1][1], HumanResponse) and seen[1][1].actor == "bob"
    await sub.unsubscribe()


async def test_without_tokens_commands_are_anonymous(make_edge: MakeEdge) -> None:
    """No token configured: open, and commands carry the actor `anonymous`."""
    edge = await make_edge()
    submits, sub = await play(edge.nc, s.TASK_INBOXES, nothing)
    assert (await edge.client.post("/tasks", json=TASK)).status == 201
    await until(lambda: submits, what="the submit")
    assert submits[0][1].actor == "anonymous"  # type: ignore[union-attr]
    await sub.unsubscribe()


async def test_websocket_takes_the_token_as_header_or_subprotocol(
    make_edge: MakeEdge, caplog: pytest.LogCaptureFixture
) -> None:
    """/ws: Authorization header or `bearer.<token>` subprotocol (agentops chosen); else 401."""
    edge = await make_edge(tokens=ENTRIES)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await edge.client.ws_connect("/ws")
    assert refused.value.status == 401
    async with edge.client.ws_connect("/ws", headers=bearer(TOKENS["ada"])) as ws:
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
    offered = ("agentops", f"bearer.{TOKENS['ada']}")
    async with edge.client.ws_connect("/ws", protocols=offered) as ws:
        assert ws.protocol == "agentops"
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
    async with edge.client.ws_connect("/ws", params={"token": TOKENS["bob"]}) as ws:
        assert not ws.closed  # the browser form
    alone = (f"bearer.{TOKENS['bob']}",)  # a browser offering only the bearer one gets it back
    with caplog.at_level(logging.DEBUG):
        async with edge.client.ws_connect("/ws", protocols=alone) as ws:
            assert ws.protocol == alone[0]
    assert TOKENS["bob"] not in caplog.text


async def test_metrics_can_require_a_role(make_edge: MakeEdge) -> None:
    """[auth] metrics = "viewer": /metrics without a token is 401, with a viewer's 200."""
    edge = await make_edge(tokens=ENTRIES, metrics_role="viewer")
    assert (await edge.client.get("/metrics")).status == 401
    assert (await edge.client.get("/metrics", headers=bearer(TOKENS["ada"]))).status == 200
    assert (await edge.client.get("/health")).status in (200, 503)
    stale = bearer("an-old-token")  # a probe with a stale token still reaches the open routes
    assert (await edge.client.get("/health", headers=stale)).status in (200, 503)


async def test_failed_attempts_are_rate_limited_per_address_and_never_log_the_token(
    make_edge: MakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the limit a client gets 429 with Retry-After, even with a good token, for a while."""
    edge = await make_edge(tokens=ENTRIES, auth_max_failures=3, auth_window_s=30.0)
    for n in range(3):
        assert (await edge.client.get("/tasks", headers=bearer(f"guess-{n}"))).status == 401
    limited = await edge.client.get("/tasks", headers=bearer(TOKENS["ada"]))
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    out = capsys.readouterr()
    assert "guess-1" not in out.out + out.err and "auth.failed" in out.out + out.err


async def test_anonymous_reads_are_not_allowed_once_tokens_exist(make_edge: MakeEdge) -> None:
    """With tokens, a read without one is 401 (the dashboard page and /health stay open)."""
    edge = await make_edge(tokens=ENTRIES)
    assert (await edge.client.get("/agents")).status == 401
    assert (await edge.client.get("/")).status == 200
