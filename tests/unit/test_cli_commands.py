"""The CLI's client commands against a small fake edge on loopback: respond's answer flags,
tasks paging and the client-side --type filter, --token, -o json, inbox and health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agentops import cli
from tests.unit.test_cli_errors import _Recorder

TYPES = ("backend_developer", "devops_engineer", "frontend_developer")


class FakeEdge(_Recorder):
    """Answers the few routes the CLI reads, from in-memory data; keeps every request."""

    def __init__(self, n_tasks: int = 0) -> None:
        self.tasks = [
            {"task_id": f"task_{i:03d}", "agent_type": TYPES[i % 3], "status": "running"}
            for i in range(n_tasks)
        ]
        self.agents: list[dict[str, Any]] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        super().__init__()

    def route(self, method: str, raw_path: str) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/tasks":
            found = [t for t in self.tasks if query.get("status") in (None, t["status"])]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            assert limit <= 500, "the edge caps limit at 500"
            return 200, {"tasks": found[offset : offset + limit], "total": len(found)}
        if parts.path == "/agents":
            return 200, {"agents": self.agents}
        if parts.path.startswith("/agents/") and parts.path.endswith("/status"):
            return 200, self.statuses[parts.path.split("/")[2]]
        if parts.path.endswith("/human-response"):
            return 200, {"status": "response_received", "agent_id": "a", "agent_status": "running"}
        if parts.path == "/health":
            return 503, {"status": "degraded", "nats": {"connected": True}, "services": {}}
        return 404, {"error": {"code": "not_found", "message": raw_path, "details": None}}


@pytest.fixture
def edge(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEdge]:
    monkeypatch.delenv("AGENTOPS_API_TOKEN", raising=False)
    fake = FakeEdge(n_tasks=1200)
    try:
        yield fake
    finally:
        fake.close()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


# ---- respond ----


@pytest.mark.parametrize(
    ("flags", "response"),
    [
        (["--yes"], "yes"),
        (["--no"], "no"),
        (["--choice", "Blue sky"], "Blue sky"),
        (["--approve"], {"approved": True}),
        (["--approve", "--comment", "ok"], {"approved": True, "comment": "ok"}),
        (["--refuse", "--comment", "not on prod"], {"approved": False, "comment": "not on prod"}),
        (["--budget", "5"], {"budget_usd": 5.0}),
        (["--stop", "--comment", "enough"], {"stop": True, "comment": "enough"}),
        (['{"db": "pg"}'], {"db": "pg"}),
        (["use postgres"], "use postgres"),
    ],
)
def test_respond_flags_send_the_answer_they_name(
    flags: list[str], response: Any, edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each answer flag (or a positional JSON/text answer) becomes its response body."""
    code, out, _ = run(["respond", "agent_1", *flags, "--url", edge.url], capsys)
    assert code == 0
    assert edge.requests[-1]["body"] == {"response": response}
    assert out == "response_received: agent agent_1 is running\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "one of the arguments RESPONSE --yes --no --choice"),
        (["--yes", "--no"], "not allowed with argument"),
        (["yes", "--approve"], "not allowed with argument"),
        (["--budget", "0"], "argument --budget: must be a finite number greater than 0"),
        (["--yes", "--comment", "x"], "error: --comment goes with --approve, --refuse or --stop"),
    ],
)
def test_respond_needs_exactly_one_answer(
    flags: list[str], message: str, edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """No answer, two answers or a stray --comment is a usage error; nothing is sent."""
    code, _, err = run(["respond", "agent_1", *flags, "--url", edge.url], capsys)
    assert code == 2
    assert message in err
    assert edge.requests == []


# ---- tasks ----


def paths(edge: FakeEdge) -> list[str]:
    return [r["path"] for r in edge.requests]


def test_tasks_pages_and_filters_as_asked(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """--limit/--offset/--status go to the edge; -o json prints its answer."""
    argv = ["tasks", "--status", "running", "--limit", "2", "--offset", "5", "-o", "json"]
    code, out, _ = run([*argv, "--url", edge.url], capsys)
    assert code == 0
    assert paths(edge) == ["/tasks?status=running&limit=2&offset=5"]
    assert json.loads(out) == {"tasks": edge.tasks[5:7], "total": 1200}


def test_tasks_type_is_filtered_by_the_cli_across_pages(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """GET /tasks has no type filter: the CLI reads every page of 500 and pages the matches."""
    argv = ["tasks", "--type", "devops_engineer", "--limit", "3", "--offset", "1", "-o", "json"]
    code, out, _ = run([*argv, "--url", edge.url], capsys)
    assert code == 0
    assert paths(edge) == [
        "/tasks?limit=500",
        "/tasks?limit=500&offset=500",
        "/tasks?limit=500&offset=1000",
    ]
    body = json.loads(out)
    assert [t["task_id"] for t in body["tasks"]] == ["task_004", "task_007", "task_010"]
    assert body["total"] == 400


def test_a_limit_over_the_edges_page_is_read_in_pages(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """--limit 700 from offset 100 is two requests, 700 tasks, the edge's total."""
    code, out, _ = run(
        ["tasks", "--limit", "700", "--offset", "100", "-o", "json", "--url", edge.url], capsys
    )
    assert code == 0
    assert paths(edge) == ["/tasks?limit=500&offset=100", "/tasks?limit=200&offset=600"]
    body = json.loads(out)
    assert len(body["tasks"]) == 700 and body["tasks"][0]["task_id"] == "task_100"


@pytest.mark.parametrize(
    "flags", [["--limit", "0"], ["--offset", "-1"], ["--status", "done"], ["--type", ""]]
)
def test_bad_paging_flags_are_usage_errors(
    flags: list[str], edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """A limit below 1, a negative offset, an unknown status or an empty type: exit 2."""
    code, _, _ = run(["tasks", *flags, "--url", edge.url], capsys)
    assert code == 2
    assert edge.requests == []


# ---- token, inbox, health ----


def test_token_flag_is_sent_and_wins_over_the_environment(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--token is the Bearer token; AGENTOPS_API_TOKEN only when --token is absent."""
    monkeypatch.setenv("AGENTOPS_API_TOKEN", "from-env")
    run(["agents", "--token", "from-flag", "--url", edge.url], capsys)
    run(["agents", "--url", edge.url], capsys)
    assert [r["headers"]["Authorization"] for r in edge.requests] == [
        "Bearer from-flag",
        "Bearer from-env",
    ]


def test_a_bad_token_flag_names_the_flag_not_the_value(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-ASCII --token is a usage error that does not print the token."""
    code, _, err = run(["health", "--token", "sécret", "--url", edge.url], capsys)
    assert code == 2
    assert err.startswith("error: --token has character 2, which is not printable ASCII")
    assert "sécret" not in err


def test_inbox_lists_each_open_question_with_how_to_answer_it(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """Agents awaiting a human, each with its question; one answered meanwhile is left out."""
    edge.agents = [
        {"agent_id": "agent_a", "agent_type": "devops_engineer", "task_id": "task_a"},
        {"agent_id": "agent_b", "agent_type": "backend_developer", "task_id": "task_b"},
    ]
    question = {"reason": "approval", "format": "free_text", "question": "Run rm -rf build?"}
    edge.statuses = {"agent_a": {"human_request": question}, "agent_b": {"human_request": None}}
    code, out, _ = run(["inbox", "-o", "json", "--url", edge.url], capsys)
    assert code == 0
    assert paths(edge)[0] == "/agents?status=awaiting_human"
    assert json.loads(out) == {
        "requests": [
            {
                "agent_id": "agent_a",
                "agent_type": "devops_engineer",
                "task_id": "task_a",
                "request": question,
                "answer_with": [
                    "agentops respond agent_a --approve",
                    "agentops respond agent_a --refuse --comment 'why'",
                ],
            }
        ]
    }


def test_a_degraded_health_is_shown_with_exit_code_1(
    edge: FakeEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 503 from /health is the answer to show, not a request failure."""
    code, out, err = run(["health", "--url", edge.url], capsys)
    assert (code, err) == (1, "")
    assert out.startswith("degraded")
