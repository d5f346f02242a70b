"""The counter store: an atomic check-and-add per window, windows aligned to the epoch."""

from __future__ import annotations

import asyncio

import pytest

from llamakey.store import CounterStore, MemoryCounterStore, Window


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_add_within_admits_up_to_the_limit_and_says_when_it_resets() -> None:
    clock = Clock(1_000_000.5)  # 20.5 s into a minute window
    store: CounterStore = MemoryCounterStore(clock)
    minute = Window(60)
    results = [await store.add_within("alice", 1, 3, minute) for _ in range(4)]
    assert [r.admitted for r in results] == [True, True, True, False]
    assert results[2].total == 3 and results[3].total == 3  # a refusal adds nothing
    assert results[3].retry_after == pytest.approx(60 - 40.5)
    assert await store.total("alice", minute) == 3


async def test_a_new_window_starts_from_zero_and_windows_are_separate() -> None:
    clock = Clock(120.0)
    store = MemoryCounterStore(clock)
    minute, hour = Window(60), Window(3600)
    assert (await store.add_within("k", 5, 5, minute)).admitted
    assert (await store.add_within("k", 5, 10, hour)).admitted
    assert not (await store.add_within("k", 1, 5, minute)).admitted
    clock.now = 180.0  # the next minute
    assert await store.total("k", minute) == 0
    assert await store.total("k", hour) == 5
    assert (await store.add_within("k", 5, 5, minute)).admitted


async def test_add_gives_back_a_reservation() -> None:
    store = MemoryCounterStore(Clock(0.0))
    day = Window(86400)
    await store.add_within("budget", 0.75, 1.0, day)  # reserve the worst case
    assert await store.add("budget", -0.5, day) == pytest.approx(0.25)  # settle to the real cost
    assert (await store.add_within("budget", 0.75, 1.0, day)).admitted


async def test_concurrent_requests_never_overshoot() -> None:
    store = MemoryCounterStore(Clock(0.0))
    minute = Window(60)
    results = await asyncio.gather(*(store.add_within("u", 1, 10, minute) for _ in range(100)))
    assert sum(r.admitted for r in results) == 10


def test_a_window_has_a_length() -> None:
    with pytest.raises(ValueError, match="at least one second"):
        Window(0)
