"""Hypothesis strategies for the fuzz tests: JSON, HTTP requests for every route, wire messages.

Requests and messages start from something the system would accept (a model's plausible
fields, a valid message of each type) and are then bent: fields dropped or replaced by any
JSON, unknown keys added, the wrong subject or type, bodies that are not JSON at all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import quote

from hypothesis import strategies as st

from agentops.agents.loader import shipped_types
from agentops.protocol import subjects as s
from agentops.protocol.messages import WORK_ADAPTER, EventType, WorkMessage

SHORT = 120  # examples in the default run (seconds); the `fuzz` marker runs LONG
LONG = 3000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
valid_ids = st.from_regex(r"\A(task|agent)_[A-Za-z0-9_-]{1,20}\Z")
ids = st.sampled_from(["agent_a1", "task_t1", "agent_gone"]) | valid_ids | st.text(max_size=30)


@st.composite
def bent(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with some fields dropped or replaced by any JSON, and unknown keys added."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        action = draw(st.sampled_from(("keep", "keep", "keep", "drop", "junk")))
        if action == "keep":
            out[key] = value
        elif action == "junk":
            out[key] = draw(json_values)
    out.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return out


# ---- HTTP ----
def create_task_body() -> st.SearchStrategy[dict[str, Any]]:
    mock = st.fixed_dictionaries(
        {
            "script": st.lists(
                st.fixed_dictionaries({"tool": st.text(max_size=20), "args": json_values}),
                max_size=3,
            )
        }
    )
    plausible = st.fixed_dictionaries(
        {
            "agent_type": st.sampled_from(shipped_types()) | st.text(max_size=20),
            "description": st.text(max_size=200),
            "context": st.dictionaries(st.text(max_size=8), json_values, max_size=3)
            | st.fixed_dictionaries({"mock": mock}),
            "max_steps": st.integers(min_value=-5, max_value=500),
            "budget_usd": st.floats(allow_nan=False),
        }
    )
    return plausible.flatmap(bent)


def human_answer_body() -> st.SearchStrategy[dict[str, Any]]:
    plausible = st.fixed_dictionaries(
        {
            "response": json_values
            | st.sampled_from(["yes", "no", {"approved": True}, {"budget_usd": 5}]),
            "request_id": st.text(max_size=40),
        }
    )
    return plausible.flatmap(bent)


BODIES = {"/tasks": create_task_body(), "/agents/{agent_id}/human-response": human_answer_body()}
QUERY_KEYS = ("since", "task_id", "agent_id", "status", "limit", "offset", "token")


@st.composite
def body_bytes(draw: st.DrawFn, route: str) -> bytes | None:
    choice = draw(st.sampled_from(("model", "json", "raw", "none")))
    if choice == "model" and route in BODIES:
        return json.dumps(draw(BODIES[route])).encode()
    if choice in ("json", "model"):
        return json.dumps(draw(json_values)).encode()
    if choice == "raw":
        return draw(st.binary(max_size=200))
    return None


@st.composite
def http_request(
    draw: st.DrawFn, routes: list[tuple[str, str]]
) -> tuple[str, str, dict[str, str], bytes | None, dict[str, str]]:
    """(method, path, query, body, headers) for one of `routes` (method, path pattern)."""
    method, pattern = draw(st.sampled_from(routes))
    path = pattern
    for name in ("task_id", "agent_id"):
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", quote(draw(ids), safe=""))
    query = draw(
        st.dictionaries(
            st.sampled_from(QUERY_KEYS) | st.text(max_size=8),
            st.text(max_size=20) | st.integers(-5, 2**64).map(str),
            max_size=3,
        )
    )
    body = draw(body_bytes(pattern)) if method in ("POST", "PUT", "PATCH", "DELETE") else None
    headers = draw(
        st.dictionaries(
            st.sampled_from(("Content-Type", "Idempotency-Key", "Accept")),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            max_size=2,
        )
    )
    return method, path, query, body, headers


# ---- wire messages ----
NOW = datetime(2025, 1, 1, tzinfo=UTC).isoformat()
ERROR = {"code": "x", "message": "fuzzed"}
REPLY = {"agent_type": "backend_developer", "agent_id": "agent_fz1"}
EXTRAS: dict[str, dict[str, Any]] = {
    "task.submit": {"agent_type": "backend_developer", "description": "fuzz"},
    "task.cancel": {},
    "task.fail": {"error": ERROR},
    "task.delete": {},
    "agent.report": {"agent_type": "backend_developer", "status": "running"},
    "agent.start": {"agent_type": "backend_developer", "description": "fuzz"},
    "agent.pause": {},
    "agent.resume": {},
    "agent.cancel": {},
    "agent.fail": {"error": ERROR},
    "agent.human_response": {"response": "yes"},
    "llm.completed": {"step": 1, "attempt": 0, "result": {"text": "hi"}},
    "llm.failed": {"step": 1, "attempt": 0, "error": ERROR},
    "tool.completed": {"step": 1, "call_id": "c1", "name": "write_file", "ok": True},
    "llm.request": {"step": 1, "attempt": 0, "reply_to": REPLY, "request": {"model": "mock"}},
    "tool.request": {
        "step": 1,
        "call_id": "c1",
        "name": "read_file",
        "arguments": {"path": "x"},
        "reply_to": REPLY,
    },
    "workspace.delete": {"workspace_id": "task_fz1"},
    "agent.message": {"message": "fuzz"},
    "task.message": {"message": "fuzz"},
    "task.delegate": dict(
        child_task_id="task_fz2",
        child_agent_id="agent_fz2",
        agent_type="backend_developer",
        description="fuzz",
        step=1,
        call_id="c1",
        parent_agent_type="tech_lead",
    ),
    "task.child_finished": {
        "child_task_id": "task_fz2",
        "parent": {"task_id": "task_fz1"},
        "status": "completed",
    },
    "workspace.prepare": {"workspace_id": "task_fz1"},
    "workspace.ready": {"workspace_id": "task_fz1", "base": "0" * 40},
    "workspace.failed": {"workspace_id": "task_fz1", "error": ERROR},
    "workspace.commit": {"workspace_id": "task_fz1", "author": "fuzz", "message": "fuzz"},
    "workspace.committed": {"workspace_id": "task_fz1"},
    "workflow.submit": {
        "stages": [{"id": "a", "agent_type": "backend_developer", "description": "fuzz"}]
    },
    "workflow.cancel": {},
    "workflow.human_response": {"stage_id": "a", "approved": True},
}


def message_types() -> list[str]:
    """Every type of the work-message union (a test checks EXTRAS covers them all)."""
    union = get_args(get_args(WorkMessage)[0])
    return sorted(m.model_fields["type"].default for m in union)


def template(message_type: str, task_id: str, agent_id: str, n: int) -> dict[str, Any]:
    doc = {
        "type": message_type, "id": f"fuzz.{n}", "source": "fuzz", "task_id": task_id,
        "agent_id": agent_id, "ts": NOW, **EXTRAS[message_type],
    }  # fmt: skip
    WORK_ADAPTER.validate_python(doc)  # the template itself is valid
    return doc


def subject_for(message_type: str, task_id: str, agent_id: str, agent_type: str) -> str:
    if message_type in s.TASK_INBOX_KINDS:
        return s.task_inbox(task_id, message_type)
    if message_type in s.AGENT_MAILBOX_KINDS:
        return s.agent_mailbox(agent_type, agent_id, message_type)
    return {
        "llm.request": s.llm_requests(),
        "tool.request": s.tool_requests("read_file"),
        "workspace.delete": s.workspace_requests("delete"),
        "workspace.prepare": s.workspace_requests("prepare"),
        "workspace.commit": s.workspace_requests("commit"),
    }[message_type]


@st.composite
def wire_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """(subject, payload): a message of any type, bent, on its subject or another's."""
    n = draw(st.integers(0, 10**9))
    task_id, agent_id = draw(valid_ids), draw(valid_ids)
    kind = draw(st.sampled_from(message_types()))
    doc = draw(bent(template(kind, task_id, agent_id, n)))
    if draw(st.booleans()):
        doc["type"] = kind  # mostly a known type, so it is decoded and applied
    on = draw(st.sampled_from([kind, *message_types()])) if draw(st.booleans()) else kind
    agent_type = draw(st.sampled_from(shipped_types()))
    subject = subject_for(on, task_id, agent_id, agent_type)
    if draw(st.integers(0, 9)) == 0:  # an event on the events stream instead
        event_type = draw(st.sampled_from(get_args(EventType)))
        subject = s.event(task_id, agent_id, event_type)
    payload = json.dumps(doc).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=80))
    return subject, payload
