"""Identity memos: the value of a pure function of an immutable object, computed once.

Thread items, rendered messages and tool schemas are frozen and shared by successive states
(a transition appends to the thread), so what is derived from each one alone (its message,
its token estimate, its JSON) need not be derived again at every step. Pure: a memo changes
the cost of a call, never its result.

Rules:
- Keys are objects compared by identity, never by value (hashing a large frozen model costs
  as much as the work saved); the entry holds the object, so its id cannot be reused by
  another object while the entry lives.
- Past `limit` entries (or, with `max_weight`, past that total weight of values) the oldest
  tenth goes first.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """`fn(key)` computed once per key object. With `max_weight`, values are weighed with
    `len` (bytes, say) and the memo holds at most that much."""

    def __init__(
        self, fn: Callable[[K], V], limit: int = 20_000, max_weight: int | None = None
    ) -> None:
        self.fn = fn
        self.limit = limit
        self.max_weight = max_weight
        self.weight = 0
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self.fn(key)
        weight = len(value) if self.max_weight is not None else 0  # type: ignore[arg-type]
        while self._entries and (
            len(self._entries) >= self.limit
            or (self.max_weight is not None and self.weight + weight > self.max_weight)
        ):
            self._evict()
        if self.max_weight is None or weight <= self.max_weight:
            self._entries[id(key)] = (key, value)
            self.weight += weight
        return value

    def _evict(self) -> None:
        for stale in list(self._entries)[: len(self._entries) // 10 or 1]:
            _, value = self._entries.pop(stale)
            if self.max_weight is not None:
                self.weight -= len(value)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._entries)


class GrowingMap(Generic[K, V]):
    """`tuple(fn(x) for x in items)` for sequences that grow by appending (a thread, the
    messages rendered from it), kept per owner: the results for the part seen last time are
    reused, so a step costs the new items, not the whole thread.

    Owners are kept least-recently-used first, at most `owners` of them (an agent process
    holds the agents it is running; one evicted is recomputed on its next step).

    The part seen before is recognised by identity, item by item (at C speed); a sequence
    that is not an extension of the last one by the very same objects (another run, a state
    read back from the store) is mapped anew rather than compared field by field.
    """

    def __init__(self, fn: Callable[[K], V], owners: int = 1024) -> None:
        self.fn = fn
        self.owners = owners
        self._last: dict[str, tuple[tuple[K, ...], tuple[V, ...]]] = {}

    def __call__(self, owner: str, items: tuple[K, ...]) -> tuple[V, ...]:
        last = self._last.pop(owner, None)
        if last is not None and len(items) >= len(last[0]) and all(map(is_, items, last[0])):
            seen, done = last
            if len(items) > len(seen):
                done += tuple(self.fn(x) for x in items[len(seen) :])
        else:
            done = tuple(self.fn(x) for x in items)
            if len(self._last) >= self.owners:  # the least recently used owner goes
                del self._last[next(iter(self._last))]
        self._last[owner] = (items, done)  # most recently used last
        return done
