"""Budgets in the authorize step and their settlement after Settle: the worst-case cost
reserved atomically per budget, given back on any refusal, settled to the real cost; an
unpriced model refused; 429 budget_exceeded naming the budget and its reset; store down."""

from __future__ import annotations

import copy
import inspect
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from mitmproxy import http

from llamakey.refusals import Refusal
from llamakey.rules.budgets import PERIODS
from llamakey.state import GatewayState
from llamakey.steps.authorize import Authorize
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.ratelimit import RateLimits
from llamakey.store import Admission, MemoryCounterStore, StoreUnavailable, Window
from llamakey.usage import Usage
from tests.unit.builders import ALICE_KEY, authenticate, config_data, make_state, provider_flow

CHAT = "https://api.openai.com/v1/chat/completions"
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC).timestamp()
KEY = "bg:user:alice:*:*:usd"
DAY = PERIODS["day"]
# $1000 / $2000 per million tokens: $0.001 an input token, $0.002 an output token
PRICES = {"gpt-4o-mini": {"input_per_mtok": 1000, "output_per_mtok": 2000}}


class DownStore(MemoryCounterStore):
    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        raise StoreUnavailable("down")

    async def add(self, key: str, amount: float, window: Window) -> float:
        raise StoreUnavailable("down")


def setup(
    budgets: list[dict[str, Any]],
    store: MemoryCounterStore | None = None,
    on_store_error: str = "deny",
    rate_limits: list[dict[str, Any]] | None = None,
    prices: dict[str, Any] | None = None,
) -> tuple[GatewayState, Authorize, RateLimits, MemoryCounterStore]:
    d = copy.deepcopy(config_data())
    d["defaults"] = {"budgets": budgets, "rate_limits": rate_limits or []}
    d["state"] = {"on_store_error": on_store_error}
    d["prices"] = PRICES if prices is None else prices
    state = make_state(d)
    store = store if store is not None else MemoryCounterStore(lambda: NOW)
    rate = RateLimits(state, store, clock=lambda: NOW)
    return state, Authorize(state, rate), rate, store


def body(max_tokens: int = 100, model: str = "gpt-4o-mini") -> bytes:
    return json.dumps({"model": model, "max_tokens": max_tokens}).encode()


def worst(content: bytes, output: int) -> float:
    return (len(content) + 3) // 4 * 0.001 + output * 0.002


async def call(state: GatewayState, authorize: Authorize, content: bytes) -> http.HTTPFlow:
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=content)
    authenticate(state, f)
    IdentifyProvider(state).request(f)
    pending = authorize.request(f)
    if pending is not None:
        assert inspect.isawaitable(pending)
        await pending
    return f


async def answer(
    state: GatewayState, rate: RateLimits, f: http.HTTPFlow, cost: float | None, usage: bool = True
) -> None:
    fs = state.flows(f)
    fs.audited = True
    f.response = http.Response.make(200, b"{}")
    fs.usage = Usage(input_tokens=10, output_tokens=5) if usage else None
    fs.cost_usd = cost
    pending = rate.response(f)
    assert pending is not None
    await pending


async def test_a_user_without_budgets_gets_no_coroutine() -> None:
    state, authorize, rate, _ = setup([])
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=body())
    authenticate(state, f)
    IdentifyProvider(state).request(f)
    assert authorize.request(f) is None
    assert state.flows(f).authorized and f not in rate.reservations


async def test_reserves_the_worst_case_cost_and_settles_to_the_real_one() -> None:
    state, authorize, rate, store = setup([{"usd": 25.0, "per": "day"}])
    content = body(100)
    f = await call(state, authorize, content)
    assert f.response is None and state.flows(f).authorized
    assert await store.total(KEY, DAY) == pytest.approx(worst(content, 100))
    await answer(state, rate, f, 0.0123)
    assert await store.total(KEY, DAY) == pytest.approx(0.0123)
    assert rate.response(f) is None  # settled once


async def test_no_max_tokens_reserves_the_budgets_reserve_output() -> None:
    state, authorize, _, store = setup([{"usd": 25.0, "per": "day", "reserve_output": 500}])
    content = b'{"model": "gpt-4o-mini"}'
    await call(state, authorize, content)
    assert await store.total(KEY, DAY) == pytest.approx(worst(content, 500))


async def test_a_spent_budget_refuses_with_429_naming_it_and_its_reset() -> None:
    content = body(1000)  # about $2.01 each
    state, authorize, _, store = setup([{"usd": 5.0, "per": "day"}])
    assert (await call(state, authorize, content)).response is None
    assert (await call(state, authorize, content)).response is None
    f = await call(state, authorize, content)
    assert f.response is not None and f.response.status_code == 429
    headers = f.response.headers
    assert headers["x-lmk-refused"] == "budget_exceeded"
    assert headers["x-should-retry"] == "false"
    assert headers["retry-after"] == str(2 * 3600)  # 22:00 UTC: two hours to midnight
    error = json.loads(f.response.content or b"{}")["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "budget_exceeded"
    assert (
        "alice: $5.00 per day (defaults.budgets.0) is spent; resets 2026-12-02T00:00:00Z"
        in error["message"]
    )
    fs = state.flows(f)
    assert fs.refusal is Refusal.BUDGET_EXCEEDED and not fs.authorized
    assert await store.total(KEY, DAY) == pytest.approx(2 * worst(content, 1000))


async def test_a_monthly_budget_resets_on_the_first() -> None:
    state, authorize, _, _ = setup([{"usd": 0.01, "per": "month"}])
    f = await call(state, authorize, body(1000))
    assert f.response is not None
    assert "resets 2027-01-01T00:00:00Z" in (f.response.text or "")


async def test_the_strictest_budget_wins_and_a_refusal_gives_back_the_others() -> None:
    state, authorize, _, store = setup(
        [{"usd": 100.0, "per": "week", "scope": "gateway"}, {"usd": 1.0, "per": "day"}],
        rate_limits=[{"requests": 10, "per": "minute"}],
    )
    f = await call(state, authorize, body(1000))
    assert f.response is not None and f.response.headers["x-lmk-refused"] == "budget_exceeded"
    assert await store.total("bg:gateway:all:*:*:usd", Window.week()) == 0
    assert await store.total(KEY, DAY) == 0
    assert await store.total("rl:user:alice:*:*:requests", Window(60)) == 0


async def test_an_unpriced_model_is_refused_under_a_budget() -> None:
    state, authorize, _, store = setup(
        [{"usd": 25.0, "per": "day"}], rate_limits=[{"requests": 10, "per": "minute"}], prices={}
    )
    f = await call(state, authorize, body(10, "my-own-model"))
    assert f.response is not None and f.response.status_code == 403
    assert f.response.headers["x-lmk-refused"] == "budget_unpriced_model"
    message = json.loads(f.response.content or b"{}")["error"]["message"]
    assert 'no price known for my-own-model: set [prices."my-own-model"]' in message
    assert await store.total("rl:user:alice:*:*:requests", Window(60)) == 0  # given back


async def test_an_admin_price_lets_an_unknown_model_run_under_a_budget() -> None:
    prices = {"my-own-model": {"input_per_mtok": 1, "output_per_mtok": 1}}
    state, authorize, _, _ = setup([{"usd": 25.0, "per": "day"}], prices=prices)
    assert (await call(state, authorize, body(10, "my-own-model"))).response is None


async def test_a_known_model_is_priced_by_genai_prices() -> None:
    state, authorize, _, store = setup([{"usd": 25.0, "per": "day"}], prices={})
    f = await call(state, authorize, body(1000))
    assert f.response is None
    assert 0 < await store.total(KEY, DAY) < 0.01  # gpt-4o-mini: well under a cent


async def test_an_answer_that_could_not_be_priced_keeps_the_reservation() -> None:
    state, authorize, rate, store = setup([{"usd": 25.0, "per": "day"}])
    content = body(100)
    f = await call(state, authorize, content)
    await answer(state, rate, f, None)
    assert await store.total(KEY, DAY) == pytest.approx(worst(content, 100))
    g = await call(state, authorize, content)
    await answer(state, rate, g, None, usage=False)
    assert await store.total(KEY, DAY) == pytest.approx(2 * worst(content, 100))


async def test_refused_after_admission_gives_the_reservation_back() -> None:
    state, authorize, rate, store = setup([{"usd": 25.0, "per": "day"}])
    f = await call(state, authorize, body())
    fs = state.flows(f)
    fs.refusal = Refusal.AUDIT_UNAVAILABLE
    f.response = http.Response.make(503, b"{}")
    pending = rate.response(f)
    assert pending is not None
    await pending
    assert await store.total(KEY, DAY) == 0


async def test_a_budget_on_another_model_or_provider_does_not_apply() -> None:
    state, authorize, rate, _ = setup(
        [
            {"usd": 0.001, "per": "day", "provider": "anthropic"},
            {"usd": 0.001, "per": "day", "model": "gpt-4o"},
        ]
    )
    f = await call(state, authorize, body(1000))
    assert f.response is None and f not in rate.reservations


async def test_store_unavailable_fails_closed_unless_allowed() -> None:
    state, authorize, _, _ = setup([{"usd": 25.0, "per": "day"}], DownStore())
    f = await call(state, authorize, body())
    assert f.response is not None and f.response.status_code == 503
    assert f.response.headers["x-lmk-refused"] == "rules_store_unavailable"
    state, authorize, _, _ = setup([{"usd": 25.0, "per": "day"}], DownStore(), "allow")
    f = await call(state, authorize, body())
    assert f.response is None and state.flows(f).authorized


async def test_a_budget_about_to_reset_still_says_not_worth_retrying() -> None:
    d = copy.deepcopy(config_data())
    d["defaults"] = {"budgets": [{"usd": 0.01, "per": "day"}]}
    d["prices"] = PRICES
    state = make_state(d)
    just_before = datetime(2026, 12, 1, 23, 59, 30, tzinfo=UTC).timestamp()
    authorize = Authorize(
        state, RateLimits(state, MemoryCounterStore(lambda: just_before), lambda: just_before)
    )
    f = await call(state, authorize, body(1000))
    assert f.response is not None and f.response.headers["retry-after"] == "30"
    assert f.response.headers["x-should-retry"] == "false"
    assert "resets 2026-12-02T00:00:00Z" in (f.response.text or "")
