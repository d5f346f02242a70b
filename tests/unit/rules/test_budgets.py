"""Budgets in the policy: validated with TOML paths, every level's budgets apply, folded per
counter, keys resolved at load; the calendar windows (UTC day, week from Monday, month)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from llamakey import config
from llamakey.rules.budgets import PERIODS
from llamakey.store import MemoryCounterStore, Window
from tests.unit.builders import config_data


def data(defaults: list[Any] | None = None, **levels: list[Any]) -> dict[str, Any]:
    d = copy.deepcopy(config_data())
    if defaults is not None:
        d["defaults"] = {"budgets": defaults}
    if "research" in levels:
        d["groups"]["research"]["budgets"] = levels["research"]
    if "alice" in levels:
        d["users"]["alice"]["budgets"] = levels["alice"]
    return d


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_every_level_applies_folded_and_keys_resolved_at_load() -> None:
    settings = config.resolve(
        config.parse(
            data(
                [{"usd": 25.0, "per": "day"}],
                research=[
                    {"usd": 10, "per": "day"},  # the same counter as defaults': folded to 10
                    {"usd": 500, "per": "month", "scope": "group"},
                ],
                alice=[
                    {"usd": 1000, "per": "week", "scope": "gateway", "provider": "openai"},
                    {"usd": 2, "per": "day", "model": "gpt-4o*", "reserve_output": 10},
                ],
            )
        ),
        None,
    )
    alice = settings.policies["alice"].budgets
    got = {(b.key, b.per, b.usd, b.source) for b in alice}
    assert got == {
        ("bg:user:alice:*:*:usd", "day", 10, "groups.research.budgets.0"),
        ("bg:group:research:*:*:usd", "month", 500, "groups.research.budgets.1"),
        ("bg:gateway:all:openai:*:usd", "week", 1000, "users.alice.budgets.0"),
        ("bg:user:alice:*:gpt-4o*:usd", "day", 2, "users.alice.budgets.1"),
    }
    assert {b.reserve_output for b in alice} == {1024, 10}
    dave = settings.policies["dave"].budgets
    assert [(b.key, b.usd) for b in dave] == [("bg:user:dave:*:*:usd", 25)]
    assert dave[0].describe() == "$25.00 per day (defaults.budgets.0)"


def test_no_budget_no_cost() -> None:
    settings = config.resolve(config.parse(data()), None)
    assert all(p.budgets == () for p in settings.policies.values())


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"usd": 0, "per": "day"}, "groups.research.budgets.0.usd"),
        ({"usd": -1, "per": "day"}, "groups.research.budgets.0.usd"),
        ({"usd": "nan", "per": "day"}, "groups.research.budgets.0.usd"),
        ({"usd": 1, "per": "hour"}, "groups.research.budgets.0.per"),
        ({"usd": 1, "per": "day", "scope": "team"}, "groups.research.budgets.0.scope"),
        ({"usd": 1, "per": "day", "model": ""}, "groups.research.budgets.0.model"),
        ({"usd": 1, "per": "day", "reserve_output": -1}, "groups.research.budgets.0.reserve"),
        ({"usd": 1, "per": "day", "color": "red"}, "groups.research.budgets.0.color"),
        ({"per": "day"}, "groups.research.budgets.0.usd"),
    ],
)
def test_a_bad_budget_names_its_toml_path(entry: dict[str, Any], path: str) -> None:
    with pytest.raises(config.ConfigError, match=path.replace(".", r"\.")):
        config.parse(data(research=[entry]))


def test_an_unknown_provider_in_a_budget_names_its_toml_path() -> None:
    d = data([{"usd": 1, "per": "day", "provider": "opneai"}])
    with pytest.raises(config.ConfigError, match=r"defaults\.budgets\.0\.provider: unknown"):
        config.resolve(config.parse(d), None)


def test_the_day_is_the_utc_day() -> None:
    day = PERIODS["day"]
    now = ts("2026-12-01T22:13:00")
    assert day.start(now) == ts("2026-12-01T00:00:00")
    assert day.end(now) == ts("2026-12-02T00:00:00")
    assert day.resets_in(now) == ts("2026-12-02T00:00:00") - now


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        ("2026-12-01T22:13:00", "2026-11-30T00:00:00"),  # a Tuesday
        ("2026-11-30T00:00:00", "2026-11-30T00:00:00"),  # Monday 00:00 starts a week
        ("2026-11-29T23:59:59", "2026-11-23T00:00:00"),  # Sunday ends the one before
        ("1970-01-01T00:00:00", "1969-12-29T00:00:00"),  # the epoch was a Thursday
    ],
)
def test_the_week_starts_monday_utc(now: str, monday: str) -> None:
    week = Window.week()
    assert week.start(ts(now)) == ts(monday)
    assert week.end(ts(now)) == ts(monday) + 7 * 86400
    assert datetime.fromtimestamp(week.start(ts(now)), UTC).weekday() == 0


@pytest.mark.parametrize(
    ("now", "first", "next_first"),
    [
        ("2026-12-01T22:13:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        ("2027-02-28T23:59:59", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
        ("2026-04-30T10:00:00", "2026-04-01T00:00:00", "2026-05-01T00:00:00"),
    ],
)
def test_the_month_is_the_calendar_month(now: str, first: str, next_first: str) -> None:
    month = Window.month()
    assert month.start(ts(now)) == ts(first)
    assert month.end(ts(now)) == ts(next_first)
    assert month.resets_in(ts(now)) == ts(next_first) - ts(now)
    assert month.seconds >= month.end(ts(now)) - month.start(ts(now))  # stores' nominal length


async def test_a_store_counts_each_calendar_window_apart() -> None:
    now = [ts("2026-02-27T12:00:00")]
    store = MemoryCounterStore(lambda: now[0])
    month = Window.month()
    assert (await store.add_within("bg:x", 3.0, 5.0, month)).admitted
    refused = await store.add_within("bg:x", 3.0, 5.0, month)
    assert not refused.admitted
    assert refused.retry_after == ts("2026-03-01T00:00:00") - now[0]
    now[0] = ts("2026-03-01T00:00:00")  # a new month: a fresh counter
    assert await store.total("bg:x", month) == 0
    assert (await store.add_within("bg:x", 5.0, 5.0, month)).admitted
