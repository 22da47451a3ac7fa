"""Schemathesis against `/openapi.json` with the whole system up (`agentops up`): no answer is a
500 and every answer fits the document (status, schema), for generated valid and invalid input.
First, the metrics of the seeded runs: the processes' histograms and counters at `/metrics`.

Bounded for the default run (`FUZZ_EXAMPLES` per operation and generation mode, no
shrinking); `AGENTOPS_FUZZ_EXAMPLES=200 pytest -m fuzz` digs deeper. Path ids are sometimes
those of real tasks, agents and a workflow (one finished, one awaiting an answer, one gate),
so the handlers behind a 404 are fuzzed too.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import System, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

FUZZ_EXAMPLES = int(os.environ.get("AGENTOPS_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
ASK = {"tool": "request_human_input", "args": {"question": "Ship it?", "format": "yes_no"}}


def seed(base: str) -> dict[str, list[str]]:
    """Real ids: a finished task, one awaiting a yes/no answer, a workflow at its gate."""
    with httpx.Client(base_url=base, timeout=30) as http:
        done = http.post("/tasks", json={"agent_type": "backend_developer", "description": "x"})
        asking = http.post(
            "/tasks",
            json={
                "agent_type": "devops_engineer",
                "description": "y",
                "context": {"mock": {"script": [ASK]}},
            },
        )
        stage = {"id": "a", "agent_type": "frontend_developer", "description": "z"}
        flow = http.post("/workflows", json={"stages": [{**stage, "approval": True}]})
        ids = [done.json(), asking.json()]

        def settled() -> bool:
            statuses = [http.get(f"/tasks/{t['task_id']}").json()["status"] for t in ids]
            gate = http.get(f"/workflows/{flow.json()['workflow_id']}").json()["status"]
            return statuses == ["completed", "awaiting_human"] and gate == "awaiting_human"

        wait_for(settled, timeout=60, what="seed tasks settled")
    return {
        "task_id": [t["task_id"] for t in ids],
        "agent_id": [t["agent_id"] for t in ids],
        "workflow_id": [flow.json()["workflow_id"]],
    }


@pytest.fixture(scope="module")
def api_schema(system: System) -> Any:
    real = seed(system.url)
    loaded = schemathesis.openapi.from_url(f"{system.url}/openapi.json")

    def flatmap_path_parameters(context: Any, params: dict[str, Any]) -> Any:
        if not params:
            return st.just(params)
        options = [params]
        for name, values in real.items():
            if name in params:
                options += [{**params, name: value} for value in values]
        return st.sampled_from(options)

    loaded.hook(flatmap_path_parameters)
    return loaded


def metric(text: str, series: str) -> float:
    found = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    return float(found[0].split()[-1]) if found else 0.0


def test_real_runs_show_in_the_processes_histograms_and_counters(
    api_schema: Any, system: System
) -> None:
    """The seeded runs' steps, LLM calls and tool calls are in the duration histograms, and
    the finished one in the runs ended by type and status, summed from the processes."""
    kind = 'agent_type="backend_developer"'
    wanted = {
        f"agentops_steps_total{{{kind}}}": 2,
        f"agentops_step_duration_seconds_count{{{kind}}}": 2,
        f'agentops_llm_call_duration_seconds_count{{{kind},outcome="ok"}}': 2,
        f'agentops_llm_calls_total{{{kind},outcome="ok"}}': 2,
        f'agentops_tasks_finished_total{{{kind},status="completed"}}': 1,
        'agentops_tool_call_duration_seconds_count{tool="write_file",outcome="ok"}': 1,
        'agentops_tool_calls_total{tool="write_file",outcome="ok"}': 1,
    }

    def counted() -> bool:
        text = httpx.get(f"{system.url}/metrics", timeout=30).text
        return all(metric(text, series) >= least for series, least in wanted.items())

    wait_for(counted, timeout=30, what="the seeded runs in /metrics")


def failure_text(group: BaseExceptionGroup[Any]) -> str:
    """Schemathesis's report of each failure (what failed, the answer, a curl to reproduce)."""
    return "\n".join(f"{type(e).__name__}: {e}" for e in group.exceptions)


def fuzz(operation: Any, mode: GenerationMode) -> str | None:
    """One operation in one generation mode: the first failure found, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    try:
        run()
    except Unsatisfiable:  # no invalid value exists (e.g. any string is a file name)
        return None
    except (Exception, BaseExceptionGroup) as exc:  # checks failed (or the call did): go on
        text = str(exc) if not isinstance(exc, BaseExceptionGroup) else failure_text(exc)
        return f"{operation.label} [{mode.value}]: {type(exc).__name__}: {text[:3000]}"
    return None


def test_api_answers_conform_to_its_document(api_schema: Any) -> None:
    """Every operation, with valid and invalid input: no 500, and each answer's status,
    content type and body fit the document."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # What ends the seeded task or workflow goes last, so the rest meet them alive.
    operations.sort(key=lambda op: op.method.upper() == "DELETE" or op.path.endswith("/cancel"))
    assert len(operations) >= 29
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = fuzz(operation, mode)
            if failure is not None:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
