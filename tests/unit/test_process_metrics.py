"""Process metrics: histograms and counters, their sum over instances, the text format, and
what an agent's stored transition counts (steps, step duration, runs ended)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agentops.bus.metrics import (
    BUCKETS,
    LLM_CALLS,
    LLM_DURATION,
    STEP_DURATION,
    STEPS,
    TASKS_FINISHED,
    ProcessMetrics,
    merge,
)
from agentops.core.state import AGENT_STATE_ADAPTER, AgentState
from agentops.edge.exposition import Exposition
from agentops.services.agent import count_transition

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    """A value equal to a bound falls in that bucket; past the last one, in +Inf."""
    m = ProcessMetrics()
    for seconds in (0.005, 0.0051, 0.3, 10_000):
        m.observe(LLM_DURATION, ("backend_developer", "ok"), seconds)
    [[labels, counts, total]] = m.snapshot()["histograms"][LLM_DURATION.name]
    assert labels == ["backend_developer", "ok"]
    assert counts[0] == 1 and counts[1] == 1 and counts[BUCKETS.index(0.5)] == 1
    assert counts[-1] == 1 and sum(counts) == 4
    assert total == 0.005 + 0.0051 + 0.3 + 10_000


def test_instances_are_summed_and_malformed_or_foreign_snapshots_skipped() -> None:
    """Two instances' counts add up; a snapshot with other bucket bounds, an unknown family
    or rows of the wrong shape are left out instead of breaking the sum."""
    a, b = ProcessMetrics(), ProcessMetrics()
    a.inc(LLM_CALLS, ("backend_developer", "ok"), 2)
    b.inc(LLM_CALLS, ("backend_developer", "ok"), 3)
    b.inc(LLM_CALLS, ("devops_engineer", "error"))
    a.observe(LLM_DURATION, ("backend_developer", "ok"), 0.2)
    b.observe(LLM_DURATION, ("backend_developer", "ok"), 0.4)
    foreign: dict[str, Any] = {**a.snapshot(), "buckets": [1, 2, 3]}
    junk = {
        "buckets": list(BUCKETS),
        "counters": {LLM_CALLS.name: [["x"], 5, ["a", "b", "c"], [["a", "b"], "many"]],
                     "agentops_nope_total": [[[], 1]]},
        "histograms": {LLM_DURATION.name: [[["a", "b"], [1, 2], 0.1]]},
    }  # fmt: skip
    totals = merge([a.snapshot(), b.snapshot(), foreign, junk, {}])
    assert totals.counters[LLM_CALLS.name] == {
        ("backend_developer", "ok"): 5.0,
        ("devops_engineer", "error"): 1.0,
    }
    hist = totals.histograms[LLM_DURATION.name][("backend_developer", "ok")]
    assert hist.count == 2 and abs(hist.sum - 0.6) < 1e-9
    assert "agentops_nope_total" not in totals.counters


def test_a_histogram_is_written_cumulative_with_sum_and_count() -> None:
    """`_bucket{le=...}` counts are cumulative up to `+Inf`, which equals `_count`."""
    m = ProcessMetrics()
    for seconds in (0.01, 0.02, 3.0):
        m.observe(STEP_DURATION, ("devops_engineer",), seconds)
    out = Exposition()
    hist = merge([m.snapshot()]).histograms[STEP_DURATION.name][("devops_engineer",)]
    out.histogram(
        STEP_DURATION.name, STEP_DURATION.help, [({"agent_type": "devops_engineer"}, hist)]
    )
    lines = out.text().splitlines()
    name = STEP_DURATION.name
    assert lines[1] == f"# TYPE {name} histogram"
    kind = 'agent_type="devops_engineer"'
    assert f'{name}_bucket{{{kind},le="0.005"}} 0' in lines
    assert f'{name}_bucket{{{kind},le="0.01"}} 1' in lines
    assert f'{name}_bucket{{{kind},le="0.025"}} 2' in lines
    assert f'{name}_bucket{{{kind},le="2.5"}} 2' in lines
    assert f'{name}_bucket{{{kind},le="5.0"}} 3' in lines
    assert f'{name}_bucket{{{kind},le="+Inf"}} 3' in lines
    assert f"{name}_count{{{kind}}} 3" in lines
    assert f"{name}_sum{{{kind}}} 3.03" in lines


def state(**fields: Any) -> AgentState:
    base = {
        "agent_id": "agent_a", "task_id": "task_t", "agent_type": "backend_developer",
        "max_steps": 10, "created_at": T0, "updated_at": T0,
    }  # fmt: skip
    return AGENT_STATE_ADAPTER.validate_python({**base, **fields})


def test_a_transition_counts_the_steps_it_starts_and_the_step_it_ends() -> None:
    """A new step ends the one before (its duration from `step_started_at`); a run's end ends
    the current step and counts the run by status; a follow-up run's first step ends none."""
    m = ProcessMetrics()
    kind = ("backend_developer",)
    first = state(status="running", step=1, step_started_at=T0, updated_at=T0)
    count_transition(m, None, first)
    later = T0 + timedelta(seconds=2)
    second = state(status="running", step=2, step_started_at=later, updated_at=later)
    count_transition(m, first, second)
    waiting = second.model_copy(update={"status": "awaiting_human"})
    count_transition(m, second, waiting)  # the step goes on while a human answers
    end = later + timedelta(seconds=30)
    done = waiting.model_copy(update={"status": "completed", "updated_at": end})
    count_transition(m, waiting, done)
    follow = done.model_copy(update={"status": "running", "step": 3, "step_started_at": end})
    count_transition(m, done, follow)
    assert m.counters[STEPS.name] == {kind: 3.0}
    assert m.counters[TASKS_FINISHED.name] == {("backend_developer", "completed"): 1.0}
    hist = m.histograms[STEP_DURATION.name][kind]
    assert hist.count == 2 and hist.sum == 32.0
