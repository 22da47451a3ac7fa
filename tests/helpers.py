"""Shared test helpers: poll with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Await `probe()` until it returns something truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = await probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def until(
    predicate: Callable[[], object], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Let the event loop run until a plain predicate holds (for state kept by callbacks)."""

    async def probe() -> bool:
        return bool(predicate())

    await eventually(probe, timeout=timeout, what=what)
