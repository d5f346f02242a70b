"""`rebuilt_totals`: each counter of the configuration from the spend of its window, counted as
the live rules count (requests; real tokens or the reservation of a request without usage; the
settled cost or the worst case of a request without one); holders only, except that a user no
longer configured still counts on group and gateway counters."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llamakey import config
from llamakey.rules.rebuild import Counter, Spend, counters, rebuilt_totals
from llamakey.store import Window
from tests.unit.builders import config_data

START = 1_000_000


def policies(defaults: dict[str, Any], research: dict[str, Any] | None = None) -> Any:
    d = copy.deepcopy(config_data())
    d["defaults"] = defaults
    d["groups"]["research"] = research or {}
    return config.resolve(config.parse(d), None).policies


def spend(user: str = "alice", **fields: Any) -> Spend:
    base: dict[str, Any] = {
        "groups": ("research",),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "requests": 0,
        "tokens": 0,
        "unmetered": 0,
        "unmetered_input": 0,
        "usd": 0.0,
        "unpriced": 0,
        "unpriced_input": 0,
    }
    return Spend(user=user, **(base | fields))


def totals(pols: Any, *spends: Spend, price: float | None = 1.0) -> dict[Counter, float]:
    def priced(provider: str, model: str, given: int, output: int) -> float | None:
        return None if price is None else price * (given + output)

    return rebuilt_totals(pols, counters(pols), {START: spends}, lambda w: START, priced)


def test_requests_tokens_and_usd_count_as_the_live_rules_do() -> None:
    pols = policies(
        {
            "rate_limits": [
                {"requests": 10, "per": "minute"},
                {"tokens": 10000, "per": "hour", "reserve_output": 100},
            ],
            "budgets": [{"usd": 25.0, "per": "day", "reserve_output": 50}],
        }
    )
    got = totals(
        pols,
        spend(
            requests=4,
            tokens=300,
            unmetered=1,
            unmetered_input=7,
            usd=1.5,
            unpriced=1,
            unpriced_input=7,
        ),
    )
    assert got[("rl:user:alice:*:*:requests", Window(60))] == 4
    assert got[("rl:user:alice:*:*:tokens", Window(3600))] == 300 + 7 + 100
    assert got[("bg:user:alice:*:*:usd", Window(86400))] == pytest.approx(1.5 + (7 + 50) * 1.0)
    assert got[("rl:user:dave:*:*:requests", Window(60))] == 0  # dave spent nothing


def test_a_request_without_a_model_or_price_adds_no_worst_case() -> None:
    pols = policies({"budgets": [{"usd": 25.0, "per": "day"}]})
    key = ("bg:user:alice:*:*:usd", Window(86400))
    assert totals(pols, spend(model=None, unpriced=2, unpriced_input=9))[key] == 0
    assert totals(pols, spend(usd=0.5, unpriced=1), price=None)[key] == 0.5


def test_only_spend_the_rule_targets_counts() -> None:
    pols = policies({"rate_limits": [{"requests": 5, "per": "day", "provider": "anthropic"}]})
    key = ("rl:user:alice:anthropic:*:requests", Window(86400))
    got = totals(pols, spend(requests=3), spend(requests=2, provider="anthropic"))
    assert got[key] == 2


def test_group_and_gateway_counters_add_their_holders_and_users_no_longer_configured() -> None:
    pols = policies(
        {"rate_limits": [{"requests": 100, "per": "day", "scope": "gateway"}]},
        research={"rate_limits": [{"requests": 50, "per": "day", "scope": "group"}]},
    )
    got = totals(
        pols,
        spend("alice", requests=1),  # in research
        spend("dave", groups=(), requests=2),  # in no group
        spend("zoe", groups=("research",), requests=4),  # revoked since
        spend("yann", groups=("ops",), requests=8),  # revoked since, not in research
    )
    assert got[("rl:gateway:all:*:*:requests", Window(86400))] == 1 + 2 + 4 + 8
    assert got[("rl:group:research:*:*:requests", Window(86400))] == 1 + 4
    # A user-scope counter never takes anyone else's spend.
    alone = policies({"rate_limits": [{"requests": 5, "per": "day"}]})
    assert (
        totals(alone, spend("zoe", requests=4))[("rl:user:alice:*:*:requests", Window(86400))] == 0
    )
