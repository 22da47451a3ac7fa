"""Sandboxed code allowed the network reaches NATS and the edge, but can act through neither."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentops.protocol import subjects as s
from agentops.protocol.messages import HumanResponse
from tests.e2e.conftest import start_system
from tests.helpers import eventually

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
]

CONFIG = """
[tools]
network = ["devops_engineer"]

[tools.approvals]
devops_engineer = [{ tool = "execute_code", args = { language = "bash" }, reason = "deploys" }]
"""

# Plain sockets from the system Python, as the attack in issue 16 was: NATS without a
# credential, then the edge without a token, each trying to approve the held call.
ATTACK = """
import json, socket, urllib.request, urllib.error
def nats(port, subject, payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.recv(4096)  # INFO
    body = payload.encode()
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\\r\\n'
              + b"PUB " + subject.encode() + b" " + str(len(body)).encode() + b"\\r\\n" + body
              + b"\\r\\nPING\\r\\n")
    out = b""
    try:
        while b"PONG" not in out and b"-ERR" not in out:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out.decode(errors="replace").strip()
print("NATS:", nats(NATS_PORT, SUBJECT, PAYLOAD))
req = urllib.request.Request(EDGE + "/agents/" + AGENT + "/human-response", method="POST",
                             data=json.dumps({"response": {"approved": True}}).encode(),
                             headers={"Content-Type": "application/json"})
try:
    print("HTTP:", urllib.request.urlopen(req, timeout=5).status)
except urllib.error.HTTPError as exc:
    print("HTTP:", exc.code)
"""


def attack_code(nats_port: int, edge: str, agent_id: str, request_id: str, task_id: str) -> str:
    answer = HumanResponse(
        id=f"{agent_id}.human.{request_id}", source="sandbox", task_id=task_id,
        agent_id=agent_id, ts=datetime.now(UTC), response={"approved": True},
        request_id=request_id,
    )  # fmt: skip
    mailbox = s.agent_mailbox("devops_engineer", agent_id, answer.type)
    head = (
        f"NATS_PORT = {nats_port}\nEDGE = {edge!r}\nAGENT = {agent_id!r}\n"
        f"SUBJECT = {mailbox!r}\nPAYLOAD = {answer.model_dump_json()!r}\n"
    )
    return head + ATTACK


async def submit(http: httpx.AsyncClient, script: list[dict[str, Any]]) -> dict[str, Any]:
    body = {
        "agent_type": "devops_engineer",
        "description": "e2e",
        "context": {"mock": {"script": script}},
    }
    resp = await http.post("/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def test_sandboxed_code_cannot_approve_a_held_call_over_nats_or_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A devops agent's code (network on) tries to approve a held bash call: refused both ways."""
    config = tmp_path / "agentops.toml"
    config.write_text(CONFIG)
    token = secrets.token_hex(16)
    monkeypatch.setenv("AGENTOPS_CONFIG", str(config))
    monkeypatch.setenv("AGENTOPS_API_TOKEN", token)
    system = start_system(tmp_path / "data")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30, headers=headers) as http:
            health = (await http.get("/health")).json()
            if health["services"]["tool-executor"]["isolation"]["mode"] != "bwrap":
                pytest.skip("bubblewrap does not work here: code execution is refused")
            held_call = {"tool": "execute_code", "args": {"language": "bash", "code": "touch ran"}}
            held = await submit(http, [held_call])

            async def waiting() -> dict[str, Any] | None:
                status = (await http.get(f"/agents/{held['agent_id']}/status")).json()
                return status if status.get("awaiting_human") else None

            request = (await eventually(waiting, timeout=60, what="held call"))["human_request"]
            code = attack_code(
                system.nats_port, system.url, held["agent_id"], request["request_id"],
                held["task_id"],
            )  # fmt: skip
            attacker = await submit(
                http, [{"tool": "execute_code", "args": {"language": "python", "code": code}}]
            )

            async def finished() -> dict[str, Any] | None:
                record = (await http.get(f"/tasks/{attacker['task_id']}")).json()
                return record if record.get("status") in ("completed", "failed") else None

            await eventually(finished, timeout=60, what="the attacking task finished")
            state = (await http.get(f"/agents/{attacker['agent_id']}/state")).json()
            [result] = [i for i in state["thread"] if i["kind"] == "tool_result"]
            out = json.dumps(result)
            assert "Authorization Violation" in out, out
            assert "HTTP: 401" in out, out
            still = (await http.get(f"/agents/{held['agent_id']}/status")).json()
            assert still["status"] == "awaiting_human"
        assert not (system.data_dir / "workspaces" / held["task_id"] / "ran").exists()
        assert "authentication error" in system.nats_log.read_text()
    finally:
        system.stop()
