"""Memos of pure functions over frozen data: results reused, never wrong, bounded."""

from __future__ import annotations

from agentops.core.memo import GrowingMap, IdentityMemo


def counting(fn):  # type: ignore[no-untyped-def]
    calls: list[object] = []

    def wrapped(x):  # type: ignore[no-untyped-def]
        calls.append(x)
        return fn(x)

    return wrapped, calls


def test_growing_map_computes_only_the_appended_items() -> None:
    """A tuple that grew by appending costs only its new items; the result is the full map."""
    fn, calls = counting(lambda x: x * 10)
    m = GrowingMap(fn)
    a = (1, 2, 3)
    assert m("agent", a) == (10, 20, 30)
    assert m("agent", (*a, 4, 5)) == (10, 20, 30, 40, 50)
    assert calls == [1, 2, 3, 4, 5]
    assert m("agent", (*a, 4, 5)) == (10, 20, 30, 40, 50) and len(calls) == 5


def test_growing_map_starts_over_when_the_items_are_not_an_extension() -> None:
    """A different or shorter sequence is mapped anew, and owners do not share results."""
    # Such sequences come from another run or a state read back.
    fn, calls = counting(lambda x: -x)
    m = GrowingMap(fn)
    m("a", (1, 2, 3))
    assert m("a", (1, 9, 3, 4)) == (-1, -9, -3, -4)
    assert m("a", (1,)) == (-1,)
    assert m("b", (1, 9)) == (-1, -9)
    assert calls == [1, 2, 3, 1, 9, 3, 4, 1, 1, 9]


def test_growing_map_keeps_a_bounded_number_of_owners() -> None:
    """Past `owners` the least recently used owner is forgotten; one in use stays."""
    # A forgotten owner is recomputed if it comes back.
    fn, calls = counting(str)
    m = GrowingMap(fn, owners=2)
    m("a", (1,))
    m("b", (1,))
    m("a", (1,))  # a is used again: b is now the least recent
    m("c", (1,))
    assert set(m._last) == {"a", "c"}
    m("b", (1,))
    assert len(calls) == 4


def test_identity_memo_reuses_by_identity_and_is_bounded() -> None:
    """Equal but distinct keys are computed separately; past the limit, the oldest go."""
    fn, calls = counting(len)
    memo: IdentityMemo[list[int], int] = IdentityMemo(fn, limit=10)
    kept = [[i] for i in range(30)]
    for key in kept:
        assert memo(key) == 1
    assert memo(kept[-1]) == 1 and len(calls) == 30
    assert len(memo) <= 10
    assert memo([29]) == 1 and len(calls) == 31
