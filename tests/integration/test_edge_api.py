"""The edge's HTTP API against a real nats-server: shapes, commands on the bus, every error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro import add_service

from agentops.agents.definitions import AgentSpec
from agentops.agents.loader import shipped_specs
from agentops.bus.connection import MSG_ID
from agentops.bus.consumer import ensure_consumer
from agentops.bus.publisher import Publisher
from agentops.bus.setup import ensure_jetstream
from agentops.core.state import (
    AGENT_STATE_ADAPTER,
    TASK_RECORD_ADAPTER,
    AgentState,
    AssistantItem,
    HumanRequestItem,
    HumanResponseItem,
    LLMErrorItem,
    TaskItem,
    TaskRecord,
    ToolResultItem,
)
from agentops.edge.app import create_app
from agentops.edge.context import EdgeConfig
from agentops.edge.metrics import METRICS
from agentops.llm.types import ToolCall, Usage
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.protocol.errors import ErrorInfo
from agentops.protocol.messages import (
    WORK_ADAPTER,
    CancelTask,
    HumanResponse,
    PauseAgent,
    ResumeAgent,
    SubmitTask,
    TaskResult,
    WorkMessage,
)
from agentops.store.agents import AgentStore, Loaded
from agentops.store.kv import DocumentStore, task_records
from agentops.store.summaries import summary_write
from tests.helpers import eventually

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
# Short waits where nobody answers; the happy-path tests play the other process and wait longer.
FAST = EdgeConfig(
    submit_wait_s=0.05,
    cancel_wait_s=0.05,
    control_wait_s=0.05,
    human_wait_s=0.05,
    health_window_s=0.1,
)
PATIENT = {"submit_wait_s": 5.0, "cancel_wait_s": 5.0, "control_wait_s": 5.0, "human_wait_s": 5.0}
TASK = {"agent_type": "backend_developer", "description": "Build a REST API for todos"}


@dataclass
class Edge:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    nc: Client
    js: JetStreamContext
    buckets: dict[str, KeyValue]

    @property
    def tasks(self) -> DocumentStore[TaskRecord]:
        return task_records(self.buckets)

    @property
    def agents(self) -> AgentStore:
        return AgentStore(self.nc, self.js, self.buckets[s.AGENTS_BUCKET], Publisher(self.nc))

    async def put_agent(self, state: AgentState) -> None:
        """Store `state` as its agent's process would (every item, the head, its summary)."""
        head = await self.agents.head(state.agent_id)
        base = Loaded(state, head.revision, 0) if head is not None else None
        await self.agents.save(state.with_tallies(), base)
        assert self.agents.publisher is not None
        await self.agents.publisher.publish_many([summary_write(state.with_tallies())])

    async def put_task(self, record: TaskRecord) -> None:
        _, revision = await self.tasks.load(record.task_id)
        await self.tasks.save(record.task_id, record, revision)


MakeEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def make_edge(nc: Client) -> AsyncIterator[MakeEdge]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(conn: Client | None = None, **config: Any) -> Edge:
        conn = conn or nc
        js = conn.jetstream()
        buckets = await ensure_jetstream(js)
        app = create_app(conn, js, buckets, replace(FAST, **config))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Edge(client, app, conn, js, buckets)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def edge(make_edge: MakeEdge) -> Edge:
    return await make_edge()


def agent_state(
    agent_id: str = "agent_a1",
    task_id: str = "task_t1",
    status: str = "running",
    thread: tuple[Any, ...] = (),
    created_at: datetime = NOW,
) -> AgentState:
    return AGENT_STATE_ADAPTER.validate_python(
        {
            "agent_id": agent_id,
            "task_id": task_id,
            "agent_type": "backend_developer",
            "status": status,
            "max_steps": 20,
            "step": 3,
            "thread": (TaskItem(at=NOW, description="Build a REST API"), *thread),
            "usage": Usage(input_tokens=10, output_tokens=5, cost_usd=0.01),
            "created_at": created_at,
            "updated_at": created_at,
            "last_msg_id": "secret-bookkeeping",
        }
    )


def human_thread(request_id: str = "agent_a1.h2.call_1") -> tuple[Any, ...]:
    call = ToolCall(id="call_1", name="request_human_input", arguments={"question": "Which DB?"})
    return (
        AssistantItem(at=NOW, step=2, tool_calls=(call,)),
        HumanRequestItem(
            at=NOW, request_id=request_id, step=2, call_id="call_1", question="Which DB?"
        ),
    )


def task_record(
    task_id: str = "task_t1",
    agent_id: str = "agent_a1",
    status: str = "running",
    created_at: datetime = NOW,
) -> TaskRecord:
    return TASK_RECORD_ADAPTER.validate_python(
        {
            "task_id": task_id,
            "agent_type": "backend_developer",
            "description": f"description of {task_id}",
            "status": status,
            "agent_id": agent_id,
            "agent_ids": [agent_id],
            "current_step": 1,
            "created_at": created_at,
            "updated_at": created_at,
            "usage": Usage(input_tokens=3, output_tokens=4, cost_usd=0.5),
            "result": TaskResult(summary="done", artifacts=("app.py",))
            if status == "completed"
            else None,
            "last_msg_id": "secret",
        }
    )


async def play(
    nc: Client, subject: str, react: Callable[[WorkMessage], Awaitable[None]]
) -> tuple[list[tuple[Msg, WorkMessage]], Subscription]:
    """Stand in for another process: see each command published on `subject` and react."""
    seen: list[tuple[Msg, WorkMessage]] = []

    async def handle(msg: Msg) -> None:
        decoded = WORK_ADAPTER.validate_json(msg.data)
        seen.append((msg, decoded))
        await react(decoded)

    return seen, await nc.subscribe(subject, cb=handle)


async def nothing(msg: WorkMessage) -> None:
    return None


def assert_error(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


# ---- success shapes ----


async def test_agent_types_lists_every_specialist(edge: Edge) -> None:
    """GET /agent-types returns the public spec of each agent type."""
    resp = await edge.client.get("/agent-types")
    assert resp.status == 200
    types = (await resp.json())["agent_types"]
    assert [t["agent_type"] for t in types] == list(shipped_specs())
    assert set(types[0]) == {
        "agent_type",
        "name",
        "role",
        "capabilities",
        "allowed_tools",
        "plugin_tools",
        "max_steps",
        "temperature",
    }


async def test_a_configured_type_is_listed_submitted_and_expected(make_edge: MakeEdge) -> None:
    """A type configured as data is listed, accepted by POST /tasks and expected by /health."""
    qa = AgentSpec(
        agent_type="qa_engineer",
        name="QA Engineer",
        role="Tests things.",
        system_prompt="Test.",
        capabilities=("testing",),
        allowed_tools=("read_file", "complete_task"),
        temperature=0.7,
    )
    edge = await make_edge(agent_specs={**shipped_specs(), "qa_engineer": qa})
    types = (await (await edge.client.get("/agent-types")).json())["agent_types"]
    assert types[-1] == {**qa.public(), "temperature": 0.7, "plugin_tools": ["*"]}
    resp = await edge.client.post("/tasks", json={**TASK, "agent_type": "qa_engineer"})
    assert resp.status == 201 and (await resp.json())["message"] == "task submitted to QA Engineer"
    resp = await edge.client.post("/tasks", json={**TASK, "agent_type": "qa"})
    assert resp.status == 404
    assert "qa_engineer" in (await resp.json())["error"]["details"]["agent_types"]
    services = (await (await edge.client.get("/health")).json())["services"]
    assert services["agent-qa_engineer"] == {"status": "missing", "instances": 0}


async def test_post_task_publishes_submit_to_task_inbox_and_returns_201(edge: Edge) -> None:
    """POST /tasks stores a decodable SubmitTask on the task's inbox and answers 201 queued."""
    body = {**TASK, "context": {"repo": "x"}, "max_steps": 7, "budget_usd": 1.5}
    resp = await edge.client.post("/tasks", json=body)
    assert resp.status == 201
    out = await resp.json()
    assert set(out) == {"task_id", "agent_id", "status", "message"}
    assert out["status"] == "queued"
    assert out["task_id"].startswith("task_") and len(out["task_id"]) == 25
    assert out["agent_id"].startswith("agent_") and len(out["agent_id"]) == 26
    stored = await edge.js.get_last_msg(s.WORK_STREAM, s.task_inbox(out["task_id"], "task.submit"))
    assert stored.data is not None
    msg = WORK_ADAPTER.validate_json(stored.data)
    assert isinstance(msg, SubmitTask)
    assert stored.headers is not None and stored.headers[MSG_ID] == f"{out['task_id']}.submit"
    assert (msg.id, msg.source, msg.agent_id) == (
        f"{out['task_id']}.submit",
        "edge",
        out["agent_id"],
    )
    assert (msg.agent_type, msg.description, msg.context) == (
        "backend_developer",
        TASK["description"],
        {"repo": "x"},
    )
    assert (msg.max_steps, msg.budget_usd) == (7, 1.5)


async def test_post_task_answers_with_the_status_the_orchestrator_recorded(
    make_edge: MakeEdge,
) -> None:
    """POST /tasks waits for the task record and reports its status."""
    edge = await make_edge(**PATIENT)

    async def orchestrate(msg: WorkMessage) -> None:
        assert isinstance(msg, SubmitTask) and msg.agent_id is not None
        await edge.put_task(task_record(msg.task_id, msg.agent_id, status="running"))

    _, sub = await play(edge.nc, s.TASK_INBOXES, orchestrate)
    resp = await edge.client.post("/tasks", json=TASK)
    assert resp.status == 201
    assert (await resp.json())["status"] == "running"
    await sub.unsubscribe()


async def test_curl_default_form_content_type_with_json_body_is_accepted(edge: Edge) -> None:
    """`curl -d '{...}'` sends a form content type; the JSON body is still accepted."""
    resp = await edge.client.post(
        "/tasks",
        data=json.dumps(TASK),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 201


async def test_idempotency_key_returns_the_same_task_and_publishes_once(edge: Edge) -> None:
    """A retried POST with the same Idempotency-Key and body gets the same ids; one submit."""
    headers = {"Idempotency-Key": "retry-me-1"}
    first = await (await edge.client.post("/tasks", json=TASK, headers=headers)).json()
    again = await edge.client.post(
        "/tasks", data=json.dumps(TASK, indent=2), headers=headers
    )  # same body, other formatting
    assert again.status == 201
    second = await again.json()
    assert (second["task_id"], second["agent_id"]) == (first["task_id"], first["agent_id"])
    assert again.headers["Idempotent-Replayed"] == "true"
    info = await edge.js.stream_info(
        s.WORK_STREAM, subjects_filter=s.task_inbox(first["task_id"], "task.submit")
    )
    assert info.state.subjects == {s.task_inbox(first["task_id"], "task.submit"): 1}
    other = await edge.client.post("/tasks", json={**TASK, "description": "else"}, headers=headers)
    assert other.status == 422
    assert_error(await other.json(), "idempotency_key_reused")
    fresh = await (await edge.client.post("/tasks", json=TASK)).json()
    assert fresh["task_id"] != first["task_id"]


async def test_get_tasks_lists_newest_first_with_filter_and_paging(edge: Edge) -> None:
    """GET /tasks sorts newest first, filters by status and pages with limit/offset."""
    for n, status in enumerate(["running", "completed", "running"]):
        await edge.put_task(
            task_record(f"task_{n}", f"agent_{n}", status, NOW + timedelta(minutes=n))
        )
    body = await (await edge.client.get("/tasks")).json()
    assert body["total"] == 3
    assert [t["task_id"] for t in body["tasks"]] == ["task_2", "task_1", "task_0"]
    running = await (await edge.client.get("/tasks", params={"status": "running"})).json()
    assert [t["task_id"] for t in running["tasks"]] == ["task_2", "task_0"]
    assert running["total"] == 2
    page = await (await edge.client.get("/tasks", params={"limit": "1", "offset": "1"})).json()
    assert [t["task_id"] for t in page["tasks"]] == ["task_1"] and page["total"] == 3


async def test_get_tasks_filters_by_agent_type(edge: Edge) -> None:
    """GET /tasks?agent_type= lists only that type's tasks (with status and paging too)."""
    for n, (agent_type, status) in enumerate(
        [("backend_developer", "running"), ("devops_engineer", "running"),
         ("devops_engineer", "completed"), ("devops_engineer", "running")]
    ):  # fmt: skip
        record = task_record(f"task_{n}", f"agent_{n}", status, NOW + timedelta(minutes=n))
        await edge.put_task(record.model_copy(update={"agent_type": agent_type}))
    devops = await (
        await edge.client.get("/tasks", params={"agent_type": "devops_engineer"})
    ).json()
    assert [t["task_id"] for t in devops["tasks"]] == ["task_3", "task_2", "task_1"]
    assert devops["total"] == 3
    both = {"agent_type": "devops_engineer", "status": "running", "limit": "1", "offset": "1"}
    page = await (await edge.client.get("/tasks", params=both)).json()
    assert [t["task_id"] for t in page["tasks"]] == ["task_1"] and page["total"] == 2
    none = await (await edge.client.get("/tasks", params={"agent_type": "poet"})).json()
    assert none == {"tasks": [], "total": 0}
    bad = await edge.client.get("/tasks", params={"agent_type": "no spaces"})
    assert bad.status == 400
    assert_error(await bad.json(), "invalid_query")


async def test_get_task_returns_the_record_without_bookkeeping_and_with_live_step(
    edge: Edge,
) -> None:
    """GET /tasks/{id} shows the record, hides internals and takes current_step from the agent."""
    await edge.put_task(task_record())
    await edge.put_agent(agent_state())
    resp = await edge.client.get("/tasks/task_t1")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {
        "task_id",
        "agent_type",
        "description",
        "context",
        "status",
        "agent_id",
        "agent_ids",
        "max_steps",
        "budget_usd",
        "current_step",
        "result",
        "error",
        "usage",
        "usage_by_agent",
        "cost_usd",
        "created_at",
        "updated_at",
        "finished_at",
        "deleting",
        "workspace_id",
        "source",
        "base",
        "head",
        "run",
        "children",
        "depth",
        "children_cost_usd",
        "cost_usd_total",
        "parent_task_id",
    }
    assert body["usage_by_agent"] == {
        "agent_a1": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}
    }
    assert body["current_step"] == 3  # the agent's step, ahead of the record's 1
    assert body["cost_usd"] == 0.5
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 4, "cost_usd": 0.5}
    await edge.put_task(task_record("task_done", status="completed"))
    done = await (await edge.client.get("/tasks/task_done")).json()
    assert done["result"] == {"summary": "done", "artifacts": ["app.py"]}


async def test_cancel_publishes_cancel_and_reports_the_terminal_status(
    make_edge: MakeEdge,
) -> None:
    """POST /tasks/{id}/cancel sends CancelTask and answers once the task is cancelled."""
    edge = await make_edge(**PATIENT)
    await edge.put_task(task_record())

    async def orchestrate(msg: WorkMessage) -> None:
        if isinstance(msg, CancelTask):
            await edge.put_task(task_record(status="cancelled"))

    seen, sub = await play(edge.nc, s.task_inbox_filter("task_t1"), orchestrate)
    resp = await edge.client.post("/tasks/task_t1/cancel")
    assert resp.status == 200
    assert await resp.json() == {"task_id": "task_t1", "status": "cancelled"}
    [(raw, msg)] = seen
    assert isinstance(msg, CancelTask) and msg.id == "task_t1.cancel_request"
    assert raw.headers is not None and raw.headers[MSG_ID] == "task_t1.cancel_request"
    again = await edge.client.post("/tasks/task_t1/cancel")
    assert again.status == 409
    assert_error(await again.json(), "conflict")
    await sub.unsubscribe()


async def test_cancel_unconfirmed_reports_the_current_status(edge: Edge) -> None:
    """Without an orchestrator the cancel is still accepted, with the task's current status."""
    await edge.put_task(task_record())
    resp = await edge.client.post("/tasks/task_t1/cancel")
    assert resp.status == 200
    assert await resp.json() == {"task_id": "task_t1", "status": "running"}


async def test_agents_list_and_status_filter(edge: Edge) -> None:
    """GET /agents lists agents with spec fields and their task; status= filters."""
    await edge.put_agent(agent_state())
    await edge.put_agent(agent_state("agent_b2", "task_t2", status="paused"))
    body = await (await edge.client.get("/agents")).json()
    assert {a["agent_id"] for a in body["agents"]} == {"agent_a1", "agent_b2"}
    one = next(a for a in body["agents"] if a["agent_id"] == "agent_a1")
    assert one == {
        "agent_id": "agent_a1",
        "agent_type": "backend_developer",
        "name": "Backend Developer",
        "role": one["role"],
        "capabilities": one["capabilities"],
        "status": "running",
        "current_task": "Build a REST API",
        "task_id": "task_t1",
        "current_step": 3,
    }
    paused = await (await edge.client.get("/agents", params={"status": "paused"})).json()
    assert [a["agent_id"] for a in paused["agents"]] == ["agent_b2"]


async def test_agent_status_counts_and_open_human_request(edge: Edge) -> None:
    """GET /agents/{id}/status summarises counts and shows the open human request."""
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    resp = await edge.client.get("/agents/agent_a1/status")
    assert resp.status == 200
    body = await resp.json()
    assert body["task"] == {"task_id": "task_t1", "description": "Build a REST API"}
    assert (body["status"], body["awaiting_human"], body["pending_requests"]) == (
        "awaiting_human",
        True,
        1,
    )
    assert (body["tool_calls"], body["errors"], body["current_step"], body["max_steps"]) == (
        1,
        0,
        3,
        20,
    )
    assert body["human_request"]["request_id"] == "agent_a1.h2.call_1"
    assert body["usage"] == {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}


async def test_agent_state_is_the_full_thread_without_bookkeeping(edge: Edge) -> None:
    """GET /agents/{id}/state returns the whole state plus derived human-request facts."""
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    body = await (await edge.client.get("/agents/agent_a1/state")).json()
    assert "outbox" not in body and "last_msg_id" not in body
    assert [i["kind"] for i in body["thread"]] == ["task", "assistant", "human_request"]
    assert body["awaiting_human"] is True
    assert body["human_request"]["question"] == "Which DB?"


# ---- commands to agents ----


def set_status(edge: Edge, status: str) -> Callable[[WorkMessage], Awaitable[None]]:
    async def react(msg: WorkMessage) -> None:
        stored = await edge.agents.load("agent_a1")
        assert stored is not None
        await edge.agents.save(stored.state.model_copy(update={"status": status}), stored)

    return react


async def test_pause_sends_pause_to_the_mailbox_and_waits_for_paused(make_edge: MakeEdge) -> None:
    """POST pause publishes PauseAgent to the agent's mailbox and answers when it is paused."""
    edge = await make_edge(**PATIENT)
    await edge.put_agent(agent_state())
    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, set_status(edge, "paused"))
    resp = await edge.client.post("/agents/agent_a1/pause")
    assert resp.status == 200
    assert await resp.json() == {"status": "paused", "agent_id": "agent_a1"}
    [(raw, msg)] = seen
    assert isinstance(msg, PauseAgent) and msg.id.startswith("agent_a1.pause.")
    assert raw.headers is not None and raw.headers[MSG_ID] == msg.id
    again = await edge.client.post("/agents/agent_a1/pause")
    assert again.status == 409
    assert_error(await again.json(), "conflict")
    await sub.unsubscribe()


async def test_resume_sends_resume_and_waits_until_not_paused(make_edge: MakeEdge) -> None:
    """POST resume publishes ResumeAgent; 409 unless paused."""
    edge = await make_edge(**PATIENT)
    await edge.put_agent(agent_state(status="running"))
    conflict = await edge.client.post("/agents/agent_a1/resume")
    assert conflict.status == 409
    await edge.put_agent(agent_state(status="paused"))
    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, set_status(edge, "running"))
    resp = await edge.client.post("/agents/agent_a1/resume")
    assert resp.status == 200
    assert await resp.json() == {"status": "resumed", "agent_id": "agent_a1"}
    assert [type(m) for _, m in seen] == [ResumeAgent]
    await sub.unsubscribe()


async def test_unconfirmed_pause_is_202_with_the_current_status(edge: Edge) -> None:
    """Without an agent to confirm, pause answers 202 pause_requested."""
    await edge.put_agent(agent_state())
    resp = await edge.client.post("/agents/agent_a1/pause")
    assert resp.status == 202
    assert await resp.json() == {
        "status": "pause_requested",
        "agent_id": "agent_a1",
        "agent_status": "running",
    }


async def test_human_response_is_delivered_to_the_open_request(make_edge: MakeEdge) -> None:
    """POST human-response publishes HumanResponse keyed by the request and waits for it."""
    edge = await make_edge(**PATIENT)
    request_id = "agent_a1.h2.call_1"
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread(request_id)))

    async def answer(msg: WorkMessage) -> None:
        assert isinstance(msg, HumanResponse)
        stored = await edge.agents.load("agent_a1")
        assert stored is not None
        item = HumanResponseItem(at=NOW, request_id=request_id, response=msg.response)
        thread = (*stored.state.thread, item)
        new = stored.state.model_copy(update={"status": "running", "thread": thread})
        await edge.agents.save(new.with_tallies(), stored)

    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, answer)
    resp = await edge.client.post(
        "/agents/agent_a1/human-response", json={"response": {"db": "postgres"}}
    )
    assert resp.status == 200
    assert await resp.json() == {
        "status": "response_received",
        "agent_id": "agent_a1",
        "agent_status": "running",
        "request_id": request_id,
    }
    [(raw, msg)] = seen
    assert isinstance(msg, HumanResponse)
    assert (msg.id, msg.request_id, msg.response) == (
        f"agent_a1.human.{request_id}",
        request_id,
        {"db": "postgres"},
    )
    assert raw.headers is not None and raw.headers[MSG_ID] == msg.id
    late = await edge.client.post("/agents/agent_a1/human-response", json={"response": "x"})
    assert late.status == 409
    assert_error(await late.json(), "conflict")
    await sub.unsubscribe()


async def test_human_response_for_another_request_or_state_is_409(edge: Edge) -> None:
    """A response naming a request that is not open, or to an agent not waiting, is 409."""
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    wrong = await edge.client.post(
        "/agents/agent_a1/human-response", json={"response": "yes", "request_id": "nope"}
    )
    assert wrong.status == 409
    assert_error(await wrong.json(), "conflict")
    await edge.put_agent(agent_state("agent_b2", status="running"))
    idle = await edge.client.post("/agents/agent_b2/human-response", json={"response": "yes"})
    assert idle.status == 409


# ---- bad input ----

OVERSIZED = json.dumps({**TASK, "description": "x" * (1024 * 1024 + 10)})

BAD_REQUESTS = [
    # (method, path, raw body or None, expected status, expected code)
    ("POST", "/tasks", "{not json", 400, "invalid_json"),
    ("POST", "/tasks", "", 400, "invalid_json"),
    ("POST", "/tasks", '{"a": NaN}', 400, "invalid_json"),
    ("POST", "/tasks", "[" * 5000 + "]" * 5000, 400, "invalid_json"),
    ("POST", "/tasks", b"\xff\xfe\x00garbage", 400, "invalid_json"),
    # A lone UTF-16 surrogate, escaped or as bytes, in a value or a key: not Unicode text.
    (
        "POST",
        "/tasks",
        json.dumps(TASK)[:-1] + ', "context": {"k": "\\udfff"}}',
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/tasks",
        json.dumps(TASK)[:-1] + ', "context": {"k\\ud800": 1}}',
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/tasks",
        json.dumps(TASK)[:-1].encode() + b', "context": {"k": "\xed\xbf\xbf"}}',
        400,
        "invalid_json",
    ),
    ("POST", "/tasks", "[1, 2]", 422, "validation_error"),
    ("POST", "/tasks", '{"description": "x"}', 422, "validation_error"),
    ("POST", "/tasks", '{"agent_type": "backend_developer", "description": "  "}', 422, None),
    ("POST", "/tasks", json.dumps({**TASK, "max_steps": "5"}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "max_steps": 0}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "max_steps": 10_001}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "max_steps": True}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "budget_usd": 0}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "context": [1]}), 422, "validation_error"),
    (
        "POST",
        "/tasks",
        json.dumps(
            {
                **TASK,
                "context": {
                    "a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                },
            }
        ),
        422,
        None,
    ),
    ("POST", "/tasks", json.dumps({**TASK, "colour": "red"}), 422, "validation_error"),
    ("POST", "/tasks", json.dumps({**TASK, "agent_type": "wizard"}), 404, "unknown_agent_type"),
    ("POST", "/tasks", OVERSIZED, 413, "payload_too_large"),
    ("GET", "/tasks?status=sleeping", None, 400, "invalid_query"),
    ("GET", "/tasks?limit=0", None, 400, "invalid_query"),
    ("GET", "/tasks?limit=501", None, 400, "invalid_query"),
    ("GET", "/tasks?limit=ten", None, 400, "invalid_query"),
    ("GET", "/tasks?offset=-1", None, 400, "invalid_query"),
    ("GET", "/agents?status=asleep", None, 400, "invalid_query"),
    ("GET", "/tasks/task_missing", None, 404, "not_found"),
    ("GET", "/tasks/bad.id", None, 404, "not_found"),
    ("GET", "/tasks/" + "x" * 200, None, 404, "not_found"),
    ("POST", "/tasks/task_missing/cancel", None, 404, "not_found"),
    ("GET", "/agents/agent_missing/status", None, 404, "not_found"),
    ("GET", "/agents/bad%20id/state", None, 404, "not_found"),
    ("POST", "/agents/agent_missing/pause", None, 404, "not_found"),
    ("POST", "/agents/agent_missing/resume", None, 404, "not_found"),
    ("POST", "/agents/agent_missing/human-response", '{"response": 1}', 404, "not_found"),
    ("POST", "/agents/agent_a1/human-response", "{oops", 400, "invalid_json"),
    ("POST", "/agents/agent_a1/human-response", '{"response": "\\udfff"}', 400, "invalid_json"),
    ("POST", "/agents/agent_a1/human-response", "{}", 422, "validation_error"),
    ("POST", "/agents/agent_a1/human-response", '{"response": 1, "x": 2}', 422, None),
    ("POST", "/agents/agent_a1/human-response", '{"response": 1, "request_id": 5}', 422, None),
    ("GET", "/no/such/route", None, 404, "not_found"),
    ("DELETE", "/tasks", None, 405, "method_not_allowed"),
    ("GET", "/tasks/task_t1/cancel", None, 405, "method_not_allowed"),
]


async def test_bad_requests_get_the_right_status_and_json_error_and_no_500(edge: Edge) -> None:
    """Every kind of bad input is a 4xx JSON error, and the edge keeps serving afterwards."""
    await edge.put_agent(agent_state(status="awaiting_human", thread=human_thread()))
    for method, path, raw, status, code in BAD_REQUESTS:
        resp = await edge.client.request(method, path, data=raw)
        body = await resp.json()
        assert resp.status == status, (method, path, body)
        assert_error(body, code)
        if status == 422 and body["error"]["code"] == "validation_error":
            assert all(set(d) == {"field", "message"} for d in body["error"]["details"]), body
    assert not any(k[2] == "500" for k in edge.app[METRICS].http_requests)
    ok = await edge.client.post("/tasks", json=TASK)
    assert ok.status == 201


async def test_unicode_escapes_that_make_text_are_kept_and_lone_surrogates_are_400(
    edge: Edge,
) -> None:
    """An escaped surrogate pair is kept as one character; a lone one is 400 and creates no task."""
    # Also on a retried POST (same Idempotency-Key).
    pair = json.dumps(TASK)[:-1] + ', "context": {"face": "\\ud83d\\ude00"}}'
    ok = await edge.client.post("/tasks", data=pair)
    assert ok.status == 201
    stored = await edge.js.get_last_msg(
        s.WORK_STREAM, s.task_inbox((await ok.json())["task_id"], "task.submit")
    )
    msg = WORK_ADAPTER.validate_json(stored.data or b"")
    assert isinstance(msg, SubmitTask) and msg.context == {"face": "\U0001f600"}
    lone = json.dumps(TASK)[:-1] + ', "context": {"k": "\\udfff"}}'
    for headers in ({}, {"Idempotency-Key": "lone-1"}):
        resp = await edge.client.post("/tasks", data=lone, headers=headers)
        assert resp.status == 400
        assert_error(await resp.json(), "invalid_json")
    assert not any(k[2] == "500" for k in edge.app[METRICS].http_requests)


async def raw_request(edge: Edge, head: bytes, body: bytes = b"") -> tuple[bytes, Any]:
    """Send bytes no HTTP client library would (the request line and headers in `head`);
    the status line and the JSON body of the answer."""
    reader, writer = await asyncio.open_connection(edge.client.server.host, edge.client.server.port)
    try:
        writer.write(b"%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            head, len(body), body))  # fmt: skip
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header, _, rest = answer.partition(b"\r\n\r\n")
    return header.split(b"\r\n")[0], json.loads(rest)


async def test_a_body_that_is_not_what_its_content_encoding_says_is_400(edge: Edge) -> None:
    """Plain JSON sent as gzip or deflate is a 400 JSON error (not a 500), as curl would send it."""
    for encoding in (b"gzip", b"deflate"):
        status, body = await raw_request(
            edge,
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: " + encoding,
            json.dumps(TASK).encode(),
        )
        assert status.startswith(b"HTTP/1.1 400 "), (encoding, status)
        assert_error(body, "invalid_body")
    assert (await edge.client.post("/tasks", json=TASK)).status == 201
    assert not any(k[2] == "500" for k in edge.app[METRICS].http_requests)


async def test_validation_details_name_each_field(edge: Edge) -> None:
    """422 details list every bad field by name."""
    bad = {"agent_type": 3, "description": "", "max_steps": 50_000, "extra": 1}
    body = await (await edge.client.post("/tasks", json=bad)).json()
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"agent_type", "description", "max_steps", "extra"}


async def test_mock_script_in_context_is_validated(edge: Edge) -> None:
    """A bad context.mock is 422 with fields under context.mock; a good one is accepted."""
    bad = {**TASK, "context": {"mock": {"delay_ms": -1, "script": "nope"}}}
    resp = await edge.client.post("/tasks", json=bad)
    assert resp.status == 422
    fields = [d["field"] for d in (await resp.json())["error"]["details"]]
    assert fields and all(f.startswith("context.mock.") for f in fields)
    good = {**TASK, "context": {"mock": {"script": [{"text": "hi"}], "delay_ms": 5}}}
    assert (await edge.client.post("/tasks", json=good)).status == 201


async def test_unknown_agent_type_lists_the_valid_ones(edge: Edge) -> None:
    """404 for an unknown agent type names the valid types."""
    resp = await edge.client.post("/tasks", json={**TASK, "agent_type": "wizard"})
    assert resp.status == 404
    assert (await resp.json())["error"]["details"] == {"agent_types": list(shipped_specs())}


async def test_405_says_which_methods_are_allowed(edge: Edge) -> None:
    """A wrong method is 405 JSON with an Allow header."""
    resp = await edge.client.put("/tasks")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]


async def test_api_token_is_required_except_for_health_and_metrics(make_edge: MakeEdge) -> None:
    """With AGENTOPS_API_TOKEN set, requests need the bearer token; probes do not."""
    edge = await make_edge(api_token="s3cret")
    missing = await edge.client.get("/tasks")
    assert missing.status == 401
    assert_error(await missing.json(), "unauthorized")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await edge.client.get("/tasks", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    basic = await edge.client.get("/tasks", headers={"Authorization": "Basic s3cret"})
    assert basic.status == 401
    query = await edge.client.get("/tasks", params={"token": "s3cret"})  # only /ws takes ?token=
    assert query.status == 401
    for token in (b"a\xffb", b"s3cret\xed\xa0\x80"):  # bytes that are not UTF-8
        status, body = await raw_request(
            edge, b"GET /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
        )
        assert status.startswith(b"HTTP/1.1 401 "), (token, status)
        assert_error(body, "unauthorized")
    good = await edge.client.get("/tasks", headers={"Authorization": "Bearer s3cret"})
    assert good.status == 200
    assert (await edge.client.get("/metrics")).status == 200
    assert (await edge.client.get("/health")).status in (200, 503)
    assert (await edge.client.get("/")).status == 200  # the dashboard page holds no data


async def test_nats_unavailable_is_503(make_edge: MakeEdge, nats_server: NatsServer) -> None:
    """When the edge's NATS connection is gone, bus-backed routes answer 503 unavailable."""
    conn = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    edge = await make_edge(conn)
    await conn.close()
    resp = await edge.client.post("/tasks", json=TASK)
    assert resp.status == 503
    body = await resp.json()
    assert_error(body, "unavailable")
    # Nothing went out (its agent id could not even be claimed): it says no task exists.
    assert body["error"]["details"] == {"submitted": "no"}
    cancel = await edge.client.post("/tasks/task_t1/cancel")
    assert cancel.status == 503
    assert "may or may not have taken effect" in (await cancel.json())["error"]["message"]
    got = await edge.client.get("/tasks/task_t1")
    assert got.status == 503
    assert "retry later" in (await got.json())["error"]["message"]  # a read
    health = await edge.client.get("/health")
    assert health.status == 503
    assert (await health.json())["nats"]["connected"] is False


# ---- health and metrics ----


async def test_health_while_nats_server_is_frozen_leaves_the_connection_working(
    make_edge: MakeEdge, nats_server: NatsServer
) -> None:
    """/health during a frozen nats-server answers degraded in time, and the edge's NATS
    connection still works once the server runs again (no PING left behind to kill it)."""
    edge = await make_edge()
    assert nats_server.proc is not None
    os.kill(nats_server.proc.pid, signal.SIGSTOP)
    try:
        resp = await asyncio.wait_for(edge.client.get("/health"), 5)
        assert resp.status == 503
        assert (await resp.json())["status"] == "degraded"
    finally:
        os.kill(nats_server.proc.pid, signal.SIGCONT)
    responder = await nats.connect(nats_server.url)
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(b"pong:" + msg.data)

        await responder.subscribe("probe.edge", cb=echo)
        await responder.flush()

        async def answered() -> bool:  # a reconnect after the freeze (under load) is allowed
            try:
                return (await edge.nc.request("probe.edge", b"x", timeout=2)).data == b"pong:x"
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                return False

        await eventually(answered, timeout=15, what="the edge's connection answering again")
        for attempt in range(3):  # then it keeps working
            reply = await edge.nc.request("probe.edge", b"%d" % attempt, timeout=2)
            assert reply.data == b"pong:%d" % attempt
    finally:
        await responder.close()


async def test_health_is_degraded_until_every_process_answers_ping(edge: Edge) -> None:
    """/health is 503 while processes are missing and 200 once each has a micro service."""
    resp = await edge.client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded"
    assert body["nats"]["connected"] is True and body["nats"]["server"]
    assert body["services"]["edge"] == {"status": "up", "instances": 1}
    assert body["services"]["orchestrator"] == {"status": "missing", "instances": 0}
    services = [await add_service(edge.nc, name=s.service_name("orchestrator"), version="0.0.1")]
    body = await (await edge.client.get("/health")).json()
    assert body["services"]["orchestrator"] == {"status": "up", "instances": 1}
    for process in s.all_processes(shipped_specs()):
        if process not in ("edge", "orchestrator"):
            services.append(
                await add_service(edge.nc, name=s.service_name(process), version="0.0.1")
            )
    resp = await edge.client.get("/health")
    assert resp.status == 503  # up, but no process has created its work consumers yet
    for name, filter_subject in consumer_filters().items():
        await ensure_consumer(edge.js, s.WORK_STREAM, name, filter_subject, 1, f"_d.{name}")
    resp = await edge.client.get("/health")
    assert resp.status == 200
    assert (await resp.json())["status"] == "healthy"
    await asyncio.gather(*(svc.stop() for svc in services))


def consumer_filters() -> dict[str, str]:
    """Every work consumer a system of the shipped types has, with its filter."""
    filters = {s.orchestrator_consumer(lane): s.task_lane_filter(lane) for lane in range(s.LANES)}
    for kind in shipped_specs():
        for lane in range(s.LANES):
            filters[s.agent_consumer(kind, lane)] = s.agent_lane_filter(kind, lane)
    filters[s.TOOL_EXECUTOR_CONSUMER] = s.tool_requests_filter()
    filters[s.WORKSPACE_CONSUMER] = s.workspace_requests_filter()
    filters[s.LLM_GATEWAY_CONSUMER] = s.llm_requests()
    return filters


async def test_metrics_are_prometheus_text_with_edge_kv_and_stream_figures(edge: Edge) -> None:
    """/metrics exposes request counters, task/agent counts by status and stream sizes."""
    await edge.put_task(task_record())
    await edge.put_agent(agent_state(status="paused"))
    await edge.client.get("/tasks/task_t1")
    await edge.client.post("/tasks", json=TASK)
    resp = await edge.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert (
        'agentops_edge_http_requests_total{method="GET",route="/tasks/{task_id}",status="200"} 1'
        in text
    )
    assert 'agentops_tasks{agent_type="backend_developer",status="running"} 1' in text
    assert 'agentops_agents{status="paused"} 1' in text
    assert 'agentops_stored_llm_tokens{agent_type="backend_developer",direction="input"} 10' in text
    assert 'agentops_stored_llm_cost_usd{agent_type="backend_developer"} 0.01' in text
    assert f'agentops_stream_messages{{stream="{s.WORK_STREAM}"}} 1' in text
    assert "agentops_nats_connected 1" in text
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge", "histogram")
            if line.split()[3] == "counter":
                assert line.split()[2].endswith("_total"), line
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    samples = {
        re.sub(r"_(bucket|sum|count)$", "", line.split("{")[0].split(" ")[0])
        for line in text.splitlines()
        if not line.startswith("#")
    }
    assert samples <= families


async def test_metrics_count_llm_and_tool_calls_by_type_tool_and_outcome(edge: Edge) -> None:
    """/metrics sums the stored agents' tokens and counts their LLM and tool calls (gauges);
    a tool name the model made up is `other`, so it cannot add labels."""
    error = ErrorInfo(code="not_found", message="no such tool")
    thread = (
        AssistantItem(at=NOW, step=1),
        ToolResultItem(at=NOW, step=1, call_id="c1", name="write_file", ok=True),
        AssistantItem(at=NOW, step=2),
        ToolResultItem(at=NOW, step=2, call_id="c2", name="write_file", ok=False, error=error),
        LLMErrorItem(at=NOW, step=3, attempt=0, error=error),
        ToolResultItem(at=NOW, step=3, call_id="c3", name="made_up_1", ok=False, error=error),
        ToolResultItem(at=NOW, step=3, call_id="c4", name="made_up_2", ok=False, error=error),
    )
    await edge.put_agent(agent_state("agent_a1", thread=thread))
    await edge.put_agent(agent_state("agent_a2"))
    text = await (await edge.client.get("/metrics")).text()
    kind = 'agent_type="backend_developer"'
    assert f'agentops_stored_llm_tokens{{{kind},direction="output"}} 10' in text  # 5 + 5
    assert f"agentops_stored_llm_cost_usd{{{kind}}} 0.02" in text
    assert f'agentops_stored_llm_calls{{{kind},outcome="ok"}} 2' in text
    assert f'agentops_stored_llm_calls{{{kind},outcome="error"}} 1' in text
    assert f'agentops_stored_tool_calls{{{kind},tool="write_file",outcome="ok"}} 1' in text
    assert f'agentops_stored_tool_calls{{{kind},tool="write_file",outcome="error"}} 1' in text
    assert f'agentops_stored_tool_calls{{{kind},tool="other",outcome="error"}} 2' in text
    assert "made_up" not in text


@pytest.mark.parametrize(
    ("reason", "bad", "hint"),
    [("approval", "maybe", '"approved"'), ("budget", {"budget_usd": "lots"}, '"budget_usd"')],
)
async def test_an_answer_that_does_not_fit_the_question_is_400(
    edge: Edge, reason: str, bad: Any, hint: str
) -> None:
    """Approvals and budget questions take a specific answer; anything else is a clear 400."""
    request = HumanRequestItem(
        at=NOW, request_id="agent_a1.q", step=2, call_id=None, reason=reason, question="?"
    )
    await edge.put_agent(agent_state(status="awaiting_human", thread=(request,)))
    resp = await edge.client.post("/agents/agent_a1/human-response", json={"response": bad})
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "bad_request")
    assert hint in body["error"]["message"]
    assert body["error"]["details"] == {"request_id": "agent_a1.q", "reason": reason}
