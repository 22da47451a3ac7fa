"""Agent routes: list, status, state, pause, resume, human response, agent types.

Rules:
- Handlers decode → load → check → publish → poll. The edge never writes agent state: it
  sends a command to the agent's mailbox and reads the state back for a bounded time.
- State checks here are a courtesy for a clear 409; the agent re-checks when the command
  arrives (the state may have moved on) and rejects it with a `command.rejected` event.
- Confirmed in time: 200 with the contract's body. Not confirmed in time: 202 with
  `*_requested` / `response_queued` and the agent's current status (the command is on its way
  and will be applied or rejected). The agent finishing meanwhile: 409.
- A human response is published as `<agent_id>.human.<request_id>`, so a double submit is a
  JetStream duplicate, and it is always tied to the request that is open at the edge.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, get_args

from aiohttp import web

from agentops.agents.definitions import AGENT_SPECS
from agentops.bus.connection import publish
from agentops.core.answers import BadAnswer, answer_json, parse_answer
from agentops.core.state import AgentState, HumanResponseItem
from agentops.edge.context import BUS, CONFIG, Bus
from agentops.edge.data import find_agent, get_agent, scan, wait_for
from agentops.edge.errors import bad_request, checked_id, conflict
from agentops.edge.schemas import HumanAnswer, parse_model, query_choice, read_json
from agentops.edge.views import agent_state_view, agent_status, agent_summary
from agentops.protocol import subjects as s
from agentops.protocol.messages import (
    TERMINAL,
    AgentStatus,
    HumanResponse,
    PauseAgent,
    ResumeAgent,
)

SOURCE = "edge"
MAX_MSG_ID = 256


async def _agent_from_path(request: web.Request) -> tuple[Bus, AgentState]:
    bus = request.app[BUS]
    return bus, await get_agent(bus, checked_id(request.match_info["agent_id"], "agent"))


async def _send(bus: Bus, state: AgentState, msg: PauseAgent | ResumeAgent | HumanResponse) -> None:
    await publish(bus.js, s.agent_mailbox(state.agent_type, state.agent_id), msg, msg.id)


def _finished(state: AgentState, action: str) -> NoReturn:
    raise conflict(
        f"agent {state.agent_id} is {state.status}; it can no longer be {action}",
        {"status": state.status},
    )


async def list_agents(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    status = query_choice(request, "status", get_args(AgentStatus))
    states = await scan(bus.agents.kv, bus.agents.adapter)
    if status is not None:
        states = [a for a in states if a.status == status]
    states.sort(key=lambda a: (a.created_at, a.agent_id), reverse=True)
    return web.json_response({"agents": [agent_summary(a) for a in states]})


async def get_agent_status(request: web.Request) -> web.Response:
    _, state = await _agent_from_path(request)
    return web.json_response(agent_status(state))


async def get_agent_state(request: web.Request) -> web.Response:
    _, state = await _agent_from_path(request)
    return web.json_response(agent_state_view(state))


async def pause_agent(request: web.Request) -> web.Response:
    return await _control(
        request, "pause", PauseAgent, ("running", "awaiting_human"), "a running or awaiting_human",
        settled=lambda a: a.status == "paused", done="paused", pending="pause_requested",
    )  # fmt: skip


async def resume_agent(request: web.Request) -> web.Response:
    return await _control(
        request, "resume", ResumeAgent, ("paused",), "a paused",
        settled=lambda a: a.status != "paused", done="resumed", pending="resume_requested",
    )  # fmt: skip


async def _control(
    request: web.Request,
    name: str,
    command: type[PauseAgent] | type[ResumeAgent],
    allowed: tuple[str, ...],
    allowed_text: str,
    *,
    settled: Callable[[AgentState], bool],
    done: str,
    pending: str,
) -> web.Response:
    """Pause or resume: check the state (409), send the command, wait briefly for the agent."""
    bus, state = await _agent_from_path(request)
    if state.status not in allowed:
        raise conflict(
            f"agent {state.agent_id} is {state.status}; only {allowed_text} agent can be {done}",
            {"status": state.status},
        )
    msg = command(
        id=f"{state.agent_id}.{name}.{uuid.uuid4().hex}",
        source=SOURCE,
        task_id=state.task_id,
        agent_id=state.agent_id,
        ts=datetime.now(UTC),
    )
    await _send(bus, state, msg)
    now = await wait_for(
        lambda: find_agent(bus, state.agent_id),
        lambda a: settled(a) or a.status in TERMINAL,
        request.app[CONFIG].control_wait_s,
    )
    now = now or state
    return _control_answer(now, settled(now), done, pending)


def _control_answer(now: AgentState, confirmed: bool, done: str, pending: str) -> web.Response:
    if now.status in TERMINAL:
        _finished(now, done)
    if confirmed:
        return web.json_response({"status": done, "agent_id": now.agent_id})
    body = {"status": pending, "agent_id": now.agent_id, "agent_status": now.status}
    return web.json_response(body, status=202)


def human_msg_id(agent_id: str, request_id: str) -> str:
    msg_id = f"{agent_id}.human.{request_id}"
    if len(msg_id) > MAX_MSG_ID:  # still one id per request, so dedup still holds
        msg_id = f"{agent_id}.human.{hashlib.sha256(request_id.encode()).hexdigest()}"
    return msg_id


def _answered(state: AgentState, request_id: str) -> bool:
    return any(
        isinstance(i, HumanResponseItem) and i.request_id == request_id for i in state.thread
    )


async def human_response(request: web.Request) -> web.Response:
    agent_id = checked_id(request.match_info["agent_id"], "agent")
    body = parse_model(HumanAnswer, await read_json(request))
    bus, state = await _agent_from_path(request)
    open_request = state.open_human_request()
    if state.status != "awaiting_human" or open_request is None:
        raise conflict(
            f"agent {agent_id} is {state.status}, not awaiting_human", {"status": state.status}
        )
    if body.request_id is not None and body.request_id != open_request.request_id:
        raise conflict(
            f"request {body.request_id!r} is not the open request",
            {"open_request_id": open_request.request_id},
        )
    try:  # the question decides what fits (core/answers.py); say what to send, now
        answer = parse_answer(open_request, body.response, state.usage.cost_usd)
    except BadAnswer as exc:
        raise bad_request(
            str(exc), {"request_id": open_request.request_id, "reason": open_request.reason}
        ) from None
    msg = HumanResponse(
        id=human_msg_id(agent_id, open_request.request_id),
        source=SOURCE,
        task_id=state.task_id,
        agent_id=agent_id,
        ts=datetime.now(UTC),
        response=answer_json(answer),  # normalised: "yes"/"no", the choice as offered
        request_id=open_request.request_id,
    )
    await _send(bus, state, msg)
    now = await wait_for(
        lambda: find_agent(bus, agent_id),
        lambda a: _answered(a, open_request.request_id) or a.status in TERMINAL,
        request.app[CONFIG].human_wait_s,
    )
    now = now or state
    answered = _answered(now, open_request.request_id)
    if not answered and now.status in TERMINAL:
        _finished(now, "answered")
    out: dict[str, Any] = {
        "status": "response_received" if answered else "response_queued",
        "agent_id": agent_id,
        "agent_status": now.status,
        "request_id": open_request.request_id,
    }
    return web.json_response(out, status=200 if answered else 202)


async def agent_types(request: web.Request) -> web.Response:
    return web.json_response({"agent_types": [spec.public() for spec in AGENT_SPECS.values()]})
