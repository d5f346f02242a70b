"""The counter-store protocol and its in-memory implementation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

MICRO = 1_000_000
"""Counters hold integers in millionths of a unit (micro-dollars for budgets, micro-tokens).

Every store adds integers, so sums are exact and every backend returns the same totals: a
reservation of 0.3 settled with -0.2 leaves exactly 0.1, not 0.09999999999999998. Amounts and
limits are rounded to the nearest millionth.
"""

MAX_MICROS = 2**53
"""The largest counter or limit kept exactly (Redis' Lua numbers are doubles): about 9.0e9 units.

A larger limit (or an infinite one) is taken as this, which no real counter reaches.
"""


class StoreUnavailable(Exception):
    """The shared store cannot be reached or did not answer in time (Redis down, SQLite locked).

    Nothing was counted when an admission raises this. The store retries the backend on the next
    call, so it recovers by itself; the rules decide whether to refuse (503, the default) or
    allow the request (`[state] on_store_error = "allow"`).
    """


def to_micros(amount: float) -> int:
    """`amount` in millionths, rounded; clamped to +-MAX_MICROS (so an infinite limit works)."""
    if amount != amount:  # NaN
        raise ValueError("a counter amount or limit is a number, got NaN")
    if amount >= MAX_MICROS / MICRO:
        return MAX_MICROS
    if amount <= -MAX_MICROS / MICRO:
        return -MAX_MICROS
    return round(amount * MICRO)


def from_micros(micros: int) -> float:
    return micros / MICRO


WEEK_OFFSET = 4 * 86400
"""The epoch (1970-01-01) was a Thursday: weeks start 4 days later, on a Monday 00:00 UTC."""

MONTH_SECONDS = 31 * 86400
"""The nominal length of a calendar-month window: what stores key it by (the longest month, so
a store that drops ended windows by ``start + seconds`` never drops a live one)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window of `seconds`, aligned to the epoch (so every proxy agrees on its start),
    shifted by `offset` seconds (a week from Monday 00:00 UTC: `Window.week()`); or, with
    `monthly`, the calendar month in UTC (`Window.month()`, `seconds` nominal).

    Stores need only `start`, `resets_in` and `seconds` (part of a counter's identity)."""

    seconds: int
    offset: int = 0
    monthly: bool = False

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"a window lasts at least one second, got {self.seconds}")

    @classmethod
    def week(cls) -> Window:
        """Monday 00:00 UTC to the next Monday."""
        return cls(7 * 86400, WEEK_OFFSET)

    @classmethod
    def month(cls) -> Window:
        """The calendar month in UTC."""
        return cls(MONTH_SECONDS, 0, True)

    def start(self, now: float) -> int:
        """Epoch second at which the window holding `now` began."""
        if self.monthly:
            day = datetime.fromtimestamp(int(now), UTC)
            return int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp())
        second = int(now)
        return second - (second - self.offset) % self.seconds

    def end(self, now: float) -> int:
        """Epoch second at which the window holding `now` ends (the next one begins)."""
        if self.monthly:
            day = datetime.fromtimestamp(int(now), UTC)
            year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
            return int(datetime(year, month, 1, tzinfo=UTC).timestamp())
        return self.start(now) + self.seconds

    def resets_in(self, now: float) -> float:
        """Seconds from `now` until the next window begins."""
        return self.end(now) - now


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to `CounterStore.add_within`."""

    admitted: bool
    total: float  # the counter after the call (unchanged when not admitted)
    retry_after: float  # seconds until the window resets (0 when admitted)


class CounterStore(Protocol):
    """Windowed counters with an atomic check-and-add."""

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        """Add `amount` to `key`'s counter in the current window if the total stays <= `limit`."""
        ...

    async def add(self, key: str, amount: float, window: Window) -> float:
        """Add `amount` (negative to give back a reservation) unconditionally; the new total."""
        ...

    async def total(self, key: str, window: Window) -> float:
        """The counter of `key` in the current window."""
        ...


class ClosableCounterStore(CounterStore, Protocol):
    """A store that holds a connection or a thread, released by `aclose` (what `open_store`
    returns)."""

    async def aclose(self) -> None: ...


class MemoryCounterStore:
    """Counters in this process's memory: exact for one proxy, lost on restart.

    Each call runs on the event loop without awaiting in between, so a check and its add are
    atomic with respect to every other request of this proxy. Totals are kept in millionths
    (`MICRO`), as in the shared stores.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (key, window length) -> (window start, total in micros); an old window is dropped
        # when touched.
        self._counters: dict[tuple[str, int], tuple[int, int]] = {}

    def _current(self, key: str, window: Window, now: float) -> int:
        start = window.start(now)
        found = self._counters.get((key, window.seconds))
        return found[1] if found is not None and found[0] == start else 0

    def _set(self, key: str, window: Window, now: float, total: int) -> None:
        self._counters[(key, window.seconds)] = (window.start(now), total)

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        now = self._clock()
        current = self._current(key, window, now)
        total = current + to_micros(amount)
        if total > to_micros(limit):
            return Admission(False, from_micros(current), window.resets_in(now))
        self._set(key, window, now, total)
        return Admission(True, from_micros(total), 0.0)

    async def add(self, key: str, amount: float, window: Window) -> float:
        now = self._clock()
        total = self._current(key, window, now) + to_micros(amount)
        self._set(key, window, now, total)
        return from_micros(total)

    async def total(self, key: str, window: Window) -> float:
        return from_micros(self._current(key, window, self._clock()))

    async def aclose(self) -> None:
        """Nothing to release; here so every store can be closed alike."""
