"""`window_usage`: what each counter holds in its current window, counted again from the
admitted requests as `steps.ratelimit` counts them (per scope, provider and model, tokens and
cost, calendar windows), under the current configuration."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from llamakey import config
from llamakey.rules.usage_now import (
    Spent,
    counter_of,
    counters_of,
    earliest_start,
    sharing,
    window_usage,
)
from tests.unit.builders import config_data, sha

NOW = datetime(2026, 12, 2, 10, 30, 30, tzinfo=UTC).timestamp()  # a Wednesday


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def spent(
    user: str = "alice",
    started: str = "2026-12-02T10:30:10",
    *,
    provider: str = "openai",
    model: str | None = "gpt-4o-mini",
    tokens: int | None = 100,
    request_bytes: int = 400,
    cost: float | None = 0.25,
) -> Spent:
    return Spent(user, provider, model, at(started), tokens, request_bytes, cost)


def settings(defaults: dict[str, Any], research: dict[str, Any] | None = None) -> config.Settings:
    data = copy.deepcopy(config_data())
    data["defaults"] = defaults
    data["groups"]["research"] = research or {}
    data["users"]["erin"] = {"key_sha256": sha("erin"), "groups": ["research"]}
    return config.resolve(config.parse(data), None)


def totals(s: config.Settings, user: str, rows: list[Spent], **kw: Any) -> dict[str, float]:
    """The totals of `user`'s counters, by the TOML path of the rule."""
    found = window_usage(rows, s.policies, NOW, **kw)
    policy = s.policies[user]
    limits = {r.source: found.get(counter_of(r), 0.0) for r in policy.rate_limits}
    return limits | {b.source: found.get(counter_of(b), 0.0) for b in policy.budgets}


def test_a_request_limit_counts_the_admitted_requests_of_the_current_window_only() -> None:
    s = settings({"rate_limits": [{"requests": 3, "per": "minute"}]})
    rows = [
        spent(started="2026-12-02T10:30:00"),  # this minute
        spent(started="2026-12-02T10:30:29.900"),
        spent(started="2026-12-02T10:29:59.999"),  # the minute before
        spent(started="2026-12-02T10:31:00"),  # a clock ahead: not in this window
        spent("bob", "2026-12-02T10:30:05"),  # another user's own counter
    ]
    assert totals(s, "alice", rows) == {"defaults.rate_limits.0": 2}
    assert totals(s, "bob", rows) == {"defaults.rate_limits.0": 1}


def test_a_token_limit_counts_real_tokens_else_the_reservation_the_proxy_kept() -> None:
    s = settings({"rate_limits": [{"tokens": 10000, "per": "hour", "reserve_output": 50}]})
    rows = [
        spent(tokens=120),
        spent(tokens=None, request_bytes=401),  # usage unknown: (401 + 3) // 4 + 50 = 151
    ]
    assert totals(s, "alice", rows) == {"defaults.rate_limits.0": 271}


def test_a_budget_counts_the_cost_else_the_reservation_and_nothing_for_no_model() -> None:
    s = settings({"budgets": [{"usd": 25, "per": "day", "reserve_output": 7}]})
    asked: list[tuple[str | None, int]] = []

    def worst(request: Spent, reserve_output: int) -> float | None:
        asked.append((request.model, reserve_output))
        return 0.5

    rows = [
        spent(cost=0.1),
        spent(cost=0.2),
        spent(cost=None, tokens=None),  # answer never priced: its reservation stays
        spent(cost=None, model=None, tokens=None),  # a listing: reserved nothing
        spent(started="2026-12-01T23:59:59", cost=9.0),  # yesterday (UTC)
    ]
    assert totals(s, "alice", rows, worst_cost=worst) == {"defaults.budgets.0": 0.8}
    assert asked == [("gpt-4o-mini", 7)]
    assert totals(s, "alice", rows) == {"defaults.budgets.0": pytest.approx(0.3)}


def test_sums_are_kept_in_millionths_as_the_stores_keep_them() -> None:
    s = settings({"budgets": [{"usd": 25, "per": "day"}]})
    rows = [spent(cost=0.1), spent(cost=0.2)]
    assert totals(s, "alice", rows) == {"defaults.budgets.0": 0.3}  # not 0.30000000000000004


def test_group_and_gateway_counters_count_everyone_who_has_them_user_counters_one() -> None:
    s = settings(
        {"rate_limits": [{"requests": 100, "per": "day", "scope": "gateway"}]},
        {"budgets": [{"usd": 500, "per": "month", "scope": "group"}]},
    )
    rows = [
        spent("alice", cost=1.0),
        spent("erin", cost=2.0),  # also in research
        spent("dave", cost=4.0),  # in no group: the gateway's counter only
        spent("mallory", cost=8.0),  # no longer configured: counts nothing
    ]
    assert totals(s, "alice", rows) == {
        "defaults.rate_limits.0": 3,
        "groups.research.budgets.0": 3.0,
    }
    assert totals(s, "dave", rows) == {"defaults.rate_limits.0": 3}


def test_provider_and_model_filters_count_only_the_requests_they_target() -> None:
    s = settings(
        {
            "rate_limits": [
                {"requests": 10, "per": "minute", "provider": "anthropic"},
                {"requests": 10, "per": "minute", "model": "gpt-4o*"},
            ]
        }
    )
    rows = [
        spent(model="gpt-4o-mini"),
        spent(model="gpt-3.5-turbo"),
        spent(model=None),  # a model limit does not count a request whose model is unknown
        spent(provider="anthropic", model="claude-3-5-haiku-20241022"),
    ]
    assert totals(s, "alice", rows) == {"defaults.rate_limits.0": 1, "defaults.rate_limits.1": 1}


def test_weeks_start_on_monday_and_months_on_the_first_utc() -> None:
    s = settings({"budgets": [{"usd": 25, "per": "week"}, {"usd": 99, "per": "month"}]})
    rows = [
        spent(started="2026-11-30T00:00:00", cost=1.0),  # Monday of this week
        spent(started="2026-11-29T23:59:59", cost=2.0),  # the Sunday before, in November
        spent(started="2026-12-01T00:00:00", cost=4.0),  # this month, this week
    ]
    assert totals(s, "alice", rows) == {"defaults.budgets.0": 5.0, "defaults.budgets.1": 4.0}


def test_wanted_counters_who_shares_them_and_how_far_back_to_read() -> None:
    s = settings(
        {"rate_limits": [{"requests": 3, "per": "minute"}]},
        {"budgets": [{"usd": 500, "per": "month", "scope": "group"}]},
    )
    alice = counters_of(s.policies["alice"])
    assert sharing(s.policies, alice) == ["alice", "erin"]  # erin shares research's counter
    assert earliest_start(alice.values(), NOW) == at("2026-12-01T00:00:00")
    assert earliest_start([], NOW) is None
    rows = [spent("alice", cost=1.0), spent("erin", cost=2.0), spent("dave", cost=4.0)]
    found = window_usage(rows, s.policies, NOW, wanted=alice)
    assert set(found) == set(alice)  # dave's own counter was not wanted
