"""The counter-store protocol and its in-memory implementation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window of `seconds`, aligned to the epoch (so every proxy agrees on its start)."""

    seconds: int

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"a window lasts at least one second, got {self.seconds}")

    def start(self, now: float) -> int:
        """Epoch second at which the window holding `now` began."""
        return int(now) - int(now) % self.seconds

    def resets_in(self, now: float) -> float:
        """Seconds from `now` until the next window begins."""
        return self.start(now) + self.seconds - now


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


class MemoryCounterStore:
    """Counters in this process's memory: exact for one proxy, lost on restart.

    Each call runs on the event loop without awaiting in between, so a check and its add are
    atomic with respect to every other request of this proxy.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (key, window length) -> (window start, total); an old window is dropped when touched.
        self._counters: dict[tuple[str, int], tuple[int, float]] = {}

    def _current(self, key: str, window: Window, now: float) -> float:
        start = window.start(now)
        found = self._counters.get((key, window.seconds))
        return found[1] if found is not None and found[0] == start else 0.0

    def _set(self, key: str, window: Window, now: float, total: float) -> None:
        self._counters[(key, window.seconds)] = (window.start(now), total)

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        now = self._clock()
        total = self._current(key, window, now) + amount
        if total > limit:
            return Admission(False, total - amount, window.resets_in(now))
        self._set(key, window, now, total)
        return Admission(True, total, 0.0)

    async def add(self, key: str, amount: float, window: Window) -> float:
        now = self._clock()
        total = self._current(key, window, now) + amount
        self._set(key, window, now, total)
        return total

    async def total(self, key: str, window: Window) -> float:
        return self._current(key, window, self._clock())
