"""Per-provider admission: calls in flight, requests and tokens per sliding minute; backoff.

Rules:
- `ProviderLimiter.slot(tokens)` waits for a concurrency slot, then for room in the last 60 s
  window (requests and tokens), records the call and yields a `Reservation`. Waiters are
  admitted in arrival order (the window lock is held while one waits), so 100 tasks queue
  instead of stampeding the API.
- The token reservation is an estimate (input estimate + output limit); `settle(actual)`
  replaces it with the provider's count once the reply is in.
- A single call larger than the whole token budget is admitted when the window is empty
  (otherwise it would wait forever).
- `backoff_delay` is pure: full jitter (`rand * min(cap, base * 2**attempt)`), and never
  shorter than the server's `Retry-After`.
- The clock and sleep are injectable, so tests run the limiter on a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentops.llm.settings import ProviderLimits, RetryPolicy

WINDOW_S = 60.0


@dataclass
class Reservation:
    at: float
    tokens: int

    def settle(self, actual_tokens: int) -> None:
        self.tokens = max(0, actual_tokens)


class ProviderLimiter:
    def __init__(
        self,
        limits: ProviderLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._window: deque[Reservation] = deque()
        self._lock = asyncio.Lock()
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Reservation]:
        async with self._slots:
            reservation = await self._admit(max(0, tokens))
            self.in_flight += 1
            try:
                yield reservation
            finally:
                self.in_flight -= 1

    async def _admit(self, tokens: int) -> Reservation:
        async with self._lock:
            while True:
                now = self._clock()
                while self._window and self._window[0].at <= now - WINDOW_S:
                    self._window.popleft()
                wait = self.wait_needed(now, tokens)
                if wait <= 0:
                    reservation = Reservation(at=now, tokens=tokens)
                    self._window.append(reservation)
                    return reservation
                await self._sleep(wait)

    def wait_needed(self, now: float, tokens: int) -> float:
        """Seconds until a call of `tokens` fits the window (0: it fits now)."""
        entries = list(self._window)
        wait = 0.0
        rpm = self.limits.requests_per_minute
        if rpm is not None and len(entries) >= rpm:
            wait = entries[len(entries) - rpm].at + WINDOW_S - now
        tpm = self.limits.tokens_per_minute
        if tpm is not None and entries:
            used = sum(e.tokens for e in entries)
            need = min(tokens, tpm)
            for entry in entries:  # oldest first: expire until the call fits
                if used + need <= tpm:
                    break
                used -= entry.tokens
                wait = max(wait, entry.at + WINDOW_S - now)
        return max(wait, 0.0)


def backoff_delay(
    attempt: int, policy: RetryPolicy, rand: float, retry_after_s: float | None = None
) -> float:
    """Delay before retry number `attempt + 1` (attempt counts from 0); `rand` in [0, 1)."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2.0**attempt))
    delay = rand * ceiling
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
