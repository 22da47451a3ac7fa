"""Agent routes: list, status, state, thread, pause, resume, human response, agent types.

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
- Agents are read as heads; a thread is read only by the two routes that return it
  (`/state`, whole and streamed item by item, and `/thread`, a page).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, get_args

import structlog
from aiohttp import web

from agentops.bus.connection import publish
from agentops.core.answers import BadAnswer, answer_json, parse_answer
from agentops.core.delegation import spent_usd
from agentops.core.state import AgentState
from agentops.edge import responses as r
from agentops.edge.apispec import INVALID_QUERY, OFFSET, choice, json_resp, limit, operation
from agentops.edge.auth import actor
from agentops.edge.context import BUS, CONFIG, Bus
from agentops.edge.data import find_agent, open_request, wait_for
from agentops.edge.errors import bad_request, checked_id, conflict, not_found
from agentops.edge.index import INDEXES
from agentops.edge.liveness import missing_process
from agentops.edge.pending import pending_agent, unstarted
from agentops.edge.schemas import HumanAnswer, parse_model, query_choice, query_int, read_json
from agentops.edge.views import agent_status, agent_summary, head_view
from agentops.protocol import subjects as s
from agentops.protocol.messages import (
    TERMINAL,
    AgentStatus,
    HumanResponse,
    PauseAgent,
    ResumeAgent,
)
from agentops.store.agents import Head
from agentops.store.kv import CorruptDocument
from agentops.store.summaries import AgentSummary

log = structlog.get_logger(__name__)

SOURCE = "edge"
MAX_MSG_ID = 256
THREAD_PAGE = 100
AGENT_PAGE = 100
MAX_AGENT_PAGE = 1000
MAX_THREAD_PAGE = 1000


async def _agent_from_path(request: web.Request) -> tuple[Bus, Head]:
    """The agent's head, or (before its process has started it) what its task says
    (`edge/pending.py`): an id the API handed out is never a 404."""
    bus = request.app[BUS]
    agent_id = checked_id(request.match_info["agent_id"], "agent")
    head = await find_agent(bus, agent_id)
    if head is None:
        head = await pending_agent(bus, request.app[INDEXES], request.app[CONFIG], agent_id)
    if head is None:
        raise not_found("agent", agent_id)
    return bus, head


async def _send(bus: Bus, state: AgentState, msg: PauseAgent | ResumeAgent | HumanResponse) -> None:
    mailbox = s.agent_mailbox(state.agent_type, state.agent_id, msg.type)
    await publish(bus.js, mailbox, msg, msg.id)


def _finished(state: AgentState, action: str) -> NoReturn:
    raise conflict(
        f"agent {state.agent_id} is {state.status}; it can no longer be {action}",
        {"status": state.status},
    )


@operation(
    "List agents", "agents", {200: json_resp(r.AgentList, "a page of agents, newest first")},
    {400: INVALID_QUERY},
    params=(choice("status", get_args(AgentStatus), "only agents with this status"),
            limit(AGENT_PAGE, MAX_AGENT_PAGE), OFFSET),
)  # fmt: skip
async def list_agents(request: web.Request) -> web.Response:
    """Rows from the edge's index of agent summaries (`edge/index.py`), and the agents of
    unfinished tasks not started yet (`edge/pending.py`); the heads of the page's agents that
    have not ended are read for their current step (a summary is written at status changes,
    not at every step)."""
    status = query_choice(request, "status", get_args(AgentStatus))
    limit_ = query_int(request, "limit", AGENT_PAGE, 1, MAX_AGENT_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    indexes = request.app[INDEXES]
    await indexes.tasks.sync()  # first: an agent started since then has its summary below
    summaries = await indexes.agents_synced()
    waiting = unstarted(indexes.tasks.entries, summaries)
    rows = [
        a for a in (*summaries.values(), *waiting.values()) if status is None or a.status == status
    ]
    rows.sort(key=lambda a: (a.created_at, a.agent_id), reverse=True)
    page: list[AgentSummary | AgentState] = list(rows[offset : offset + limit_])
    bus = request.app[BUS]

    async def current(agent_id: str) -> Head | None:
        try:
            head = await find_agent(bus, agent_id)
        except CorruptDocument as exc:  # e.g. a newer version's format: the summary is shown
            log.warning("edge.agent_unreadable", agent_id=agent_id, error=str(exc)[:300])
            return None
        if head is None and agent_id in waiting:  # what its task says (and its description)
            head = await pending_agent(bus, indexes, request.app[CONFIG], agent_id)
        return head

    running = [i for i, a in enumerate(page) if a.status not in TERMINAL]
    heads = await asyncio.gather(*(current(page[i].agent_id) for i in running))
    for i, head in zip(running, heads, strict=True):
        if head is not None:  # None: deleted since the index saw it, or unreadable: the summary
            page[i] = head.state
    specs = request.app[CONFIG].agent_specs
    body = [agent_summary(a, specs) for a in page]
    return web.json_response({"agents": body, "total": len(rows)})


@operation(
    "An agent's status", "agents",
    {200: json_resp(r.AgentStatusView, "status, step, the open human request, counts and "
                    "what it waits for")},
    {404: "no such agent"},
)  # fmt: skip
async def get_agent_status(request: web.Request) -> web.Response:
    bus, head = await _agent_from_path(request)
    found = await open_request(bus, head)
    process = await missing_process(request.app, head.state)
    specs = request.app[CONFIG].agent_specs
    return web.json_response(agent_status(head.state, found[1] if found else None, specs, process))


@operation(
    "An agent's whole state", "agents",
    {200: json_resp(r.AgentStateView, "the head's fields and the whole thread")},
    {404: "no such agent"},
)  # fmt: skip
async def get_agent_state(request: web.Request) -> web.StreamResponse:
    """The head's fields and the whole thread, streamed: a long run is never one JSON value
    in the edge's memory."""
    bus, head = await _agent_from_path(request)
    found = await open_request(bus, head)
    body = head_view(head.state, found[1] if found else None)
    if head.legacy:  # a format-1 document holds its thread
        body["thread"] = [i.model_dump(mode="json") for i in head.state.thread]
        return web.json_response(body)
    items = bus.agents.iter_raw(head.state.agent_id, 0, head.thread_len)
    return await _json_with_items(request, body, "thread", items)


@operation(
    "A page of an agent's thread", "agents", {200: json_resp(r.ThreadPage, "the items")},
    {400: INVALID_QUERY, 404: "no such agent"},
    params=(OFFSET, limit(THREAD_PAGE, MAX_THREAD_PAGE)),
)  # fmt: skip
async def get_agent_thread(request: web.Request) -> web.StreamResponse:
    """`?offset=&limit=`: a page of the thread (`total` items in all)."""
    bus, head = await _agent_from_path(request)
    offset = query_int(request, "offset", 0, 0, 10**9)
    limit = query_int(request, "limit", THREAD_PAGE, 1, MAX_THREAD_PAGE)
    end = min(head.thread_len, offset + limit)
    body: dict[str, Any] = {
        "agent_id": head.state.agent_id,
        "total": head.thread_len,
        "offset": offset,
        "limit": limit,
    }
    if head.legacy:
        body["items"] = [i.model_dump(mode="json") for i in head.state.thread[offset:end]]
        return web.json_response(body)
    items = bus.agents.iter_raw(head.state.agent_id, offset, end)
    return await _json_with_items(request, body, "items", items)


async def _json_with_items(
    request: web.Request, body: dict[str, Any], key: str, items: AsyncIterator[bytes]
) -> web.StreamResponse:
    """`body` with `key` the JSON array of `items` (stored JSON, written as it is read). The
    first item is read before the status is sent, so a thread that cannot be read is still an
    error response, not a cut-off 200."""
    iterator = aiter(items)
    first = await anext(iterator, None)
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    if request.method == "HEAD":  # headers only: a body here would corrupt the connection
        await response.write_eof()
        return response
    head = json.dumps(body, ensure_ascii=False).encode()
    await response.write(head[:-1] + (b', "%s": [' % key.encode()))
    separator = b""
    if first is not None:
        await response.write(first)
        separator = b","
        async for data in iterator:
            await response.write(separator + data)
    await response.write(b"]}")
    await response.write_eof()
    return response


@operation(
    "Pause an agent", "agents",
    {200: json_resp(r.ControlDone, "paused"),
     202: json_resp(r.ControlQueued, "`pause_requested`: on its way, not yet confirmed")},
    {404: "no such agent", 409: "the agent is not running or awaiting_human (or finished)"},
)  # fmt: skip
async def pause_agent(request: web.Request) -> web.Response:
    return await _control(
        request, "pause", PauseAgent, ("running", "awaiting_human"), "a running or awaiting_human",
        settled=lambda a: a.status == "paused", done="paused", pending="pause_requested",
    )  # fmt: skip


@operation(
    "Resume a paused agent", "agents",
    {200: json_resp(r.ControlDone, "resumed"),
     202: json_resp(r.ControlQueued, "`resume_requested`: on its way, not yet confirmed")},
    {404: "no such agent", 409: "the agent is not paused (or finished)"},
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
    bus, head = await _agent_from_path(request)
    state = head.state
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
        actor=actor(request),
    )
    await _send(bus, state, msg)
    found = await wait_for(
        lambda: find_agent(bus, state.agent_id),
        lambda a: settled(a.state) or a.state.status in TERMINAL,
        request.app[CONFIG].control_wait_s,
    )
    now = found.state if found is not None else state
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


def _answered(head: Head, index: int) -> bool:
    return index < head.thread_len and index not in head.state.open_requests


@operation(
    "Answer an agent's open question", "agents",
    {200: json_resp(r.HumanAnswered, "received: the agent has it in its thread"),
     202: json_resp(r.HumanAnswered, "`response_queued`: on its way")},
    {400: "not JSON, or the answer does not fit the question (the message says what to send)",
     404: "no such agent",
     409: "the agent is not awaiting a human, or `request_id` is not the open request"},
    body=HumanAnswer,
)  # fmt: skip
async def human_response(request: web.Request) -> web.Response:
    agent_id = checked_id(request.match_info["agent_id"], "agent")
    body = parse_model(HumanAnswer, await read_json(request))
    bus, head = await _agent_from_path(request)
    state = head.state
    found = await open_request(bus, head)
    if state.status != "awaiting_human" or found is None:
        raise conflict(
            f"agent {agent_id} is {state.status}, not awaiting_human", {"status": state.status}
        )
    index, open_request_item = found
    if body.request_id is not None and body.request_id != open_request_item.request_id:
        raise conflict(
            f"request {body.request_id!r} is not the open request",
            {"open_request_id": open_request_item.request_id},
        )
    try:  # the question decides what fits (core/answers.py); say what to send, now
        answer = parse_answer(open_request_item, body.response, spent_usd(state))
    except BadAnswer as exc:
        raise bad_request(
            str(exc),
            {"request_id": open_request_item.request_id, "reason": open_request_item.reason},
        ) from None
    msg = HumanResponse(
        id=human_msg_id(agent_id, open_request_item.request_id),
        source=SOURCE,
        task_id=state.task_id,
        agent_id=agent_id,
        ts=datetime.now(UTC),
        response=answer_json(answer),  # normalised: "yes"/"no", the choice as offered
        request_id=open_request_item.request_id,
        actor=actor(request),
    )
    await _send(bus, state, msg)
    later = await wait_for(
        lambda: find_agent(bus, agent_id),
        lambda a: _answered(a, index) or a.state.status in TERMINAL,
        request.app[CONFIG].human_wait_s,
    )
    later = later or head
    answered = _answered(later, index)
    if not answered and later.state.status in TERMINAL:
        _finished(later.state, "answered")
    out: dict[str, Any] = {
        "status": "response_received" if answered else "response_queued",
        "agent_id": agent_id,
        "agent_status": later.state.status,
        "request_id": open_request_item.request_id,
    }
    return web.json_response(out, status=200 if answered else 202)


@operation(
    "The agent types",
    "agents",
    {200: json_resp(r.AgentTypes, "every configured type")},
    bus=False,
)
async def agent_types(request: web.Request) -> web.Response:
    specs = request.app[CONFIG].agent_specs
    return web.json_response({"agent_types": [spec.public() for spec in specs.values()]})
