"""Identity memos: the value of a pure function of an immutable object, computed once.

Thread items, rendered messages and tool schemas are frozen and shared by successive states
(a transition appends to the thread), so what is derived from each one alone (its message,
its token estimate, its JSON) need not be derived again at every step. Pure: a memo changes
the cost of a call, never its result.

Rules:
- Keys are objects compared by identity, never by value (hashing a large frozen model costs
  as much as the work saved); the entry holds the object, so its id cannot be reused by
  another object while the entry lives.
- Past `limit` entries the oldest tenth goes first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    def __init__(self, fn: Callable[[K], V], limit: int = 20_000) -> None:
        self.fn = fn
        self.limit = limit
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self.fn(key)
        if len(self._entries) >= self.limit:
            for stale in list(self._entries)[: self.limit // 10 or 1]:
                del self._entries[stale]
        self._entries[id(key)] = (key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
