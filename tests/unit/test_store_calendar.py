"""Calendar windows (a week from Monday 00:00 UTC, the UTC month) in every counter store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llamakey.store import Window
from tests.unit.test_store import Clock, MakeStore, make_store, redis_server

__all__ = ["make_store", "redis_server"]  # the fixtures, shared with test_store


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_a_month_counts_until_the_first_of_the_next(make_store: MakeStore) -> None:
    clock = Clock(ts("2027-02-27T12:00:00"))
    store = make_store(clock)
    month = Window.month()
    assert (await store.add_within("bg:k", 3.5, 5.0, month)).admitted
    refused = await store.add_within("bg:k", 3.5, 5.0, month)
    assert not refused.admitted and refused.total == 3.5
    assert refused.retry_after == pytest.approx(ts("2027-03-01T00:00:00") - clock.now)
    clock.now = ts("2027-03-01T00:00:01")
    assert await store.total("bg:k", month) == 0
    assert (await store.add_within("bg:k", 5.0, 5.0, month)).admitted


async def test_a_week_runs_from_monday_and_stays_apart_from_a_day(make_store: MakeStore) -> None:
    clock = Clock(ts("2026-12-06T23:00:00"))  # a Sunday
    store = make_store(clock)
    week, day = Window.week(), Window(86400)
    await store.add("bg:k", 2.0, week)
    await store.add("bg:k", 1.0, day)
    assert await store.total("bg:k", week) == 2.0
    assert await store.total("bg:k", day) == 1.0
    clock.now = ts("2026-12-07T00:00:00")  # Monday: a new week
    assert await store.total("bg:k", week) == 0
