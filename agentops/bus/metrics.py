"""Metrics a process counts itself (histograms and counters), and how the edge sums them.

Rules:
- A process keeps its own counts in memory (`Runtime.metrics`) and pushes them nowhere: they
  ride in the `data` of its micro service's `status` endpoint in `$SRV.STATS`, which the edge
  already asks every instance for. The edge sums the instances at scrape time, so a figure is
  right with several edge replicas and after an edge restart. A process restart starts its
  counts from zero, which Prometheus reads as a counter reset (as for any restarted target).
- Every family is declared here, once (`FAMILIES`): name, type, help, label names. The edge
  renders each, with or without samples, so `/metrics` always lists them.
- Durations are in seconds with one bucket layout (`BUCKETS`); a snapshot carries its bounds,
  and one with other bounds (another version) is skipped rather than summed wrongly.
- Label values are bounded by what they come from (agent types, tool names the executor
  serves, outcomes): never free text.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


@dataclass(frozen=True)
class Family:
    name: str
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]


STEP_DURATION = Family(
    "agentops_step_duration_seconds", "histogram",
    "Agent steps, from the step's LLM request to the next step's (or the run's end): the "
    "model, the tools and any wait for a human or a child task. From the agent processes.",
    ("agent_type",),
)  # fmt: skip
STEPS = Family(
    "agentops_steps_total", "counter", "Agent steps started, by agent type.", ("agent_type",)
)
TASKS_FINISHED = Family(
    "agentops_tasks_finished_total", "counter",
    "Task runs that ended, by agent type and final status (completed, failed, cancelled); a "
    "follow-up run that ends counts again. From the agent processes.",
    ("agent_type", "status"),
)  # fmt: skip
LLM_DURATION = Family(
    "agentops_llm_call_duration_seconds", "histogram",
    "LLM calls as the gateway made them (retries and rate-limit waits included), by agent "
    "type and outcome.",
    ("agent_type", "outcome"),
)  # fmt: skip
LLM_CALLS = Family(
    "agentops_llm_calls_total", "counter",
    "LLM calls the gateway made, by agent type and outcome (ok, error).",
    ("agent_type", "outcome"),
)  # fmt: skip
LLM_TOKENS = Family(
    "agentops_llm_tokens_total", "counter",
    "LLM tokens the gateway's calls used, by agent type and direction (input, output).",
    ("agent_type", "direction"),
)  # fmt: skip
LLM_COST = Family(
    "agentops_llm_cost_usd_total", "counter", "LLM cost in USD of the gateway's calls.",
    ("agent_type",),
)  # fmt: skip
TOOL_DURATION = Family(
    "agentops_tool_call_duration_seconds", "histogram",
    "Tool calls the tool executor ran, by tool and outcome.",
    ("tool", "outcome"),
)  # fmt: skip
TOOL_CALLS = Family(
    "agentops_tool_calls_total", "counter",
    "Tool calls the tool executor answered, by tool and outcome (ok, error; a call found "
    "already claimed answers `interrupted`, an error).",
    ("tool", "outcome"),
)  # fmt: skip
FAMILIES: tuple[Family, ...] = (
    STEP_DURATION, STEPS, TASKS_FINISHED, LLM_DURATION, LLM_CALLS, LLM_TOKENS, LLM_COST,
    TOOL_DURATION, TOOL_CALLS,
)  # fmt: skip

Labels = tuple[str, ...]


@dataclass
class Histogram:
    counts: list[int]  # per bucket, not cumulative; the last one is +Inf
    sum: float = 0.0

    @classmethod
    def empty(cls, buckets: int = len(BUCKETS)) -> Histogram:
        return cls([0] * (buckets + 1))

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class ProcessMetrics:
    """One process's counts, by family and label values."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        self.histograms: dict[str, dict[Labels, Histogram]] = {}

    def inc(self, family: Family, labels: Labels, value: float = 1.0) -> None:
        assert family.kind == "counter" and len(labels) == len(family.labels), family.name
        series = self.counters.setdefault(family.name, {})
        series[labels] = series.get(labels, 0.0) + value

    def observe(self, family: Family, labels: Labels, seconds: float) -> None:
        assert family.kind == "histogram" and len(labels) == len(family.labels), family.name
        series = self.histograms.setdefault(family.name, {})
        series.setdefault(labels, Histogram.empty()).observe(max(seconds, 0.0))

    def snapshot(self) -> dict[str, Any]:
        """JSON for `$SRV.STATS`: `{"buckets", "counters": {name: [[labels, value]]},
        "histograms": {name: [[labels, counts, sum]]}}`."""
        return {
            "buckets": list(BUCKETS),
            "counters": {
                name: [[list(k), v] for k, v in series.items()]
                for name, series in self.counters.items()
            },
            "histograms": {
                name: [[list(k), h.counts, h.sum] for k, h in series.items()]
                for name, series in self.histograms.items()
            },
        }


@dataclass
class Totals:
    """Snapshots of every instance, summed."""

    counters: dict[str, dict[Labels, float]]
    histograms: dict[str, dict[Labels, Histogram]]


def _rows(
    snapshot: Mapping[str, Any], section: str, width: int
) -> Iterable[tuple[str, Labels, list[Any]]]:
    """(family name, label values, row) of one section of a snapshot, malformed rows left out."""
    families = {f.name: f for f in FAMILIES}
    for name, rows in (snapshot.get(section) or {}).items():
        family = families.get(name)
        if family is None or not isinstance(rows, list):
            continue
        for row in rows:
            if not isinstance(row, list) or len(row) != width or not isinstance(row[0], list):
                continue
            if len(row[0]) == len(family.labels):
                yield name, tuple(str(v) for v in row[0]), row


def merge(snapshots: Iterable[Mapping[str, Any]]) -> Totals:
    """The sum of the snapshots; anything malformed or with other bucket bounds is skipped."""
    totals = Totals({}, {})
    for snap in snapshots:
        if snap.get("buckets") != list(BUCKETS):
            continue
        for name, labels, row in _rows(snap, "counters", 2):
            if isinstance(row[1], int | float):
                series = totals.counters.setdefault(name, {})
                series[labels] = series.get(labels, 0.0) + float(row[1])
        for name, labels, row in _rows(snap, "histograms", 3):
            if _counts(row[1]) and isinstance(row[2], int | float):
                hist = totals.histograms.setdefault(name, {}).setdefault(labels, Histogram.empty())
                hist.counts = [a + b for a, b in zip(hist.counts, row[1], strict=True)]
                hist.sum += float(row[2])
    return totals


def _counts(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == len(BUCKETS) + 1
        and all(isinstance(c, int) for c in value)
    )
