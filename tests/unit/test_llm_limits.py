"""Per-provider limits on a fake clock, and the backoff policy."""

from __future__ import annotations

import asyncio

from agentops.llm.limits import ProviderLimiter, backoff_delay
from agentops.llm.settings import ProviderLimits, RetryPolicy
from tests.helpers import until


class FakeClock:
    """Time moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_requests_per_minute_spaces_calls_over_the_window() -> None:
    """With 2 requests/min the third call waits until the first leaves the 60 s window."""
    clock = FakeClock()
    limiter = ProviderLimiter(ProviderLimits(requests_per_minute=2), clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(3):
        async with limiter.slot(10):
            starts.append(clock.now)
    assert starts == [1000.0, 1000.0, 1060.0]


async def test_tokens_per_minute_counts_settled_usage() -> None:
    """The token budget uses the actual usage once settled, not the reservation."""
    clock = FakeClock()
    limiter = ProviderLimiter(
        ProviderLimits(tokens_per_minute=1000), clock=clock, sleep=clock.sleep
    )
    async with limiter.slot(900) as reservation:
        reservation.settle(100)  # the reply was small
    async with limiter.slot(800):
        pass
    assert clock.sleeps == []  # 100 + 800 fits
    async with limiter.slot(500):
        pass
    assert clock.now == 1060.0  # 900 + 500 does not: wait for both to expire


async def test_a_call_larger_than_the_budget_runs_when_the_window_is_empty() -> None:
    """A single oversized call is not starved: it runs alone once the window is clear."""
    clock = FakeClock()
    limiter = ProviderLimiter(ProviderLimits(tokens_per_minute=100), clock=clock, sleep=clock.sleep)
    async with limiter.slot(500):
        pass
    async with limiter.slot(500):
        pass
    assert clock.now == 1060.0


async def test_concurrency_cap_holds_under_a_stampede() -> None:
    """100 simultaneous calls never have more than max_concurrency in flight."""
    limiter = ProviderLimiter(ProviderLimits(max_concurrency=3))
    peak = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal peak
        async with limiter.slot(1):
            peak = max(peak, limiter.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(100)]
    await until(lambda: limiter.in_flight == 3, what="three calls in flight")
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and limiter.in_flight == 0


def test_backoff_is_full_jitter_exponential_and_honours_retry_after() -> None:
    """Delays grow as base*2^n up to the cap, scaled by jitter, never below Retry-After."""
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    assert [backoff_delay(n, policy, 1.0) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(3, policy, 0.5) == 4.0
    assert backoff_delay(0, policy, 0.0) == 0.0
    assert backoff_delay(0, policy, 0.5, retry_after_s=7.0) == 7.0
