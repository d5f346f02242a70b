"""The rate-limit admission in the authorize step and its settlement after Settle: atomic
admission per limit, give-back when one refuses, 429 with Retry-After, token reservations
settled to the real usage, a store that cannot be reached failing closed (or open)."""

from __future__ import annotations

import copy
import inspect
import json
from typing import Any

from mitmproxy import http

from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.authorize import Authorize
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.ratelimit import RateLimits
from llamakey.store import Admission, MemoryCounterStore, StoreUnavailable, Window
from llamakey.usage import Usage
from tests.unit.builders import ALICE_KEY, authenticate, config_data, make_state, provider_flow

CHAT = "https://api.openai.com/v1/chat/completions"


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


class DownStore(MemoryCounterStore):
    """A store whose backend is gone."""

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        raise StoreUnavailable("down")

    async def add(self, key: str, amount: float, window: Window) -> float:
        raise StoreUnavailable("down")


def setup(
    limits: list[dict[str, Any]],
    store: MemoryCounterStore | None = None,
    on_store_error: str = "deny",
    research: list[dict[str, Any]] | None = None,
) -> tuple[GatewayState, Authorize, RateLimits, MemoryCounterStore]:
    d = copy.deepcopy(config_data())
    d["defaults"] = {"rate_limits": limits}
    d["state"] = {"on_store_error": on_store_error}
    if research is not None:
        d["groups"]["research"]["rate_limits"] = research
    state = make_state(d)
    store = store if store is not None else MemoryCounterStore(Clock())
    rate = RateLimits(state, store)
    return state, Authorize(state, rate), rate, store


async def call(
    state: GatewayState, authorize: Authorize, body: bytes = b'{"model": "gpt-4o-mini"}'
) -> http.HTTPFlow:
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=body)
    authenticate(state, f)
    IdentifyProvider(state).request(f)
    pending = authorize.request(f)
    if pending is not None:
        assert inspect.isawaitable(pending)
        await pending
    return f


async def test_a_user_without_limits_gets_no_coroutine() -> None:
    state, authorize, _, _ = setup([])
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=b"{}")
    authenticate(state, f)
    IdentifyProvider(state).request(f)
    assert authorize.request(f) is None
    assert state.flows(f).authorized


async def test_requests_limit_admits_n_then_refuses_with_retry_after() -> None:
    state, authorize, _, store = setup([{"requests": 3, "per": "minute"}])
    for _ in range(3):
        f = await call(state, authorize)
        assert f.response is None and state.flows(f).authorized
    f = await call(state, authorize)
    assert f.response is not None and f.response.status_code == 429
    assert f.response.headers["x-lmk-refused"] == Refusal.RATE_LIMITED.value
    assert f.response.headers["retry-after"] == "40"  # 20 s into the minute
    assert f.response.headers["x-should-retry"] == "true"
    error = json.loads(f.response.content or b"{}")["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limited"
    assert (
        "alice: 3 requests per minute (defaults.rate_limits.0); retry in 40 s" in (error["message"])
    )
    assert not state.flows(f).authorized and state.flows(f).refusal is Refusal.RATE_LIMITED
    assert await store.total("rl:user:alice:*:*:requests", Window(60)) == 3


async def test_next_window_admits_again() -> None:
    clock = Clock()
    state, authorize, _, _ = setup([{"requests": 1, "per": "minute"}], MemoryCounterStore(clock))
    assert (await call(state, authorize)).response is None
    assert (await call(state, authorize)).response is not None
    clock.now += 60
    assert (await call(state, authorize)).response is None


async def test_a_daily_limit_says_not_worth_retrying() -> None:
    state, authorize, _, _ = setup([{"requests": 1, "per": "day"}])
    await call(state, authorize)
    f = await call(state, authorize)
    assert f.response is not None and f.response.headers["x-should-retry"] == "false"
    assert int(f.response.headers["retry-after"]) > 60


async def test_a_refusal_gives_back_what_other_limits_admitted() -> None:
    state, authorize, _, store = setup(
        [{"requests": 10, "per": "minute"}],
        research=[{"requests": 1, "per": "hour", "scope": "group"}],
    )
    assert (await call(state, authorize)).response is None
    f = await call(state, authorize)
    assert f.response is not None and "groups.research.rate_limits.0" in (f.response.text or "")
    assert await store.total("rl:user:alice:*:*:requests", Window(60)) == 1  # given back
    assert await store.total("rl:group:research:*:*:requests", Window(3600)) == 1


async def test_a_limit_on_another_model_or_provider_does_not_count() -> None:
    state, authorize, _, store = setup(
        [
            {"requests": 1, "per": "minute", "model": "gpt-4o"},
            {"requests": 1, "per": "minute", "provider": "anthropic"},
        ]
    )
    for _ in range(3):
        assert (await call(state, authorize)).response is None  # gpt-4o-mini on openai
    f = await call(state, authorize, b'{"model": "gpt-4o"}')
    assert f.response is None
    f = await call(state, authorize, b'{"model": "gpt-4o"}')
    assert f.response is not None and f.response.status_code == 429
    assert await store.total("rl:user:alice:anthropic:*:requests", Window(60)) == 0


async def test_tokens_reserve_an_estimate_and_settle_to_real_usage() -> None:
    state, authorize, rate, store = setup([{"tokens": 1000, "per": "minute"}])
    key, window = "rl:user:alice:*:*:tokens", Window(60)
    body = b'{"model": "gpt-4o-mini", "max_tokens": 200}'
    f = await call(state, authorize, body)
    reserved = (len(body) + 3) // 4 + 200
    assert f.response is None and await store.total(key, window) == reserved
    # the answer: 30 in, 12 out
    state.flows(f).audited = True
    f.response = http.Response.make(200, b"{}")
    state.flows(f).usage = Usage(input_tokens=30, output_tokens=12)
    pending = rate.response(f)
    assert pending is not None
    await pending
    assert await store.total(key, window) == 42
    assert rate.response(f) is None  # settled once


async def test_token_limit_refuses_what_would_not_fit() -> None:
    state, authorize, rate, store = setup([{"tokens": 100, "per": "minute"}])
    f = await call(state, authorize, b'{"model": "gpt-4o-mini", "max_tokens": 500}')
    assert f.response is not None and f.response.status_code == 429
    assert "100 tokens per minute" in (f.response.text or "")
    assert await store.total("rl:user:alice:*:*:tokens", Window(60)) == 0
    assert f not in rate.reservations


async def test_unknown_usage_keeps_the_reservation() -> None:
    state, authorize, rate, store = setup([{"tokens": 5000, "per": "minute"}])
    f = await call(state, authorize, b"{}")
    state.flows(f).audited = True
    pending = rate.error(f)
    assert pending is not None
    await pending
    assert await store.total("rl:user:alice:*:*:tokens", Window(60)) == 1 + 1024


async def test_refused_after_admission_gives_everything_back() -> None:
    state, authorize, rate, store = setup(
        [{"requests": 5, "per": "minute"}, {"tokens": 5000, "per": "minute"}]
    )
    f = await call(state, authorize)
    fs = state.flows(f)
    fs.refusal = Refusal.AUDIT_UNAVAILABLE  # the write-ahead row failed: nothing went upstream
    f.response = http.Response.make(503, b"{}")
    pending = rate.response(f)
    assert pending is not None
    await pending
    assert await store.total("rl:user:alice:*:*:requests", Window(60)) == 0
    assert await store.total("rl:user:alice:*:*:tokens", Window(60)) == 0


async def test_store_unavailable_fails_closed() -> None:
    state, authorize, _, _ = setup([{"requests": 5, "per": "minute"}], DownStore())
    f = await call(state, authorize)
    assert f.response is not None and f.response.status_code == 503
    assert f.response.headers["x-lmk-refused"] == "rules_store_unavailable"
    assert not state.flows(f).authorized


async def test_store_unavailable_allowed_when_configured() -> None:
    state, authorize, _, _ = setup(
        [{"requests": 5, "per": "minute"}], DownStore(), on_store_error="allow"
    )
    f = await call(state, authorize)
    assert f.response is None and state.flows(f).authorized


async def test_the_store_is_opened_from_state_and_closed_on_done() -> None:
    state = make_state()
    rate = RateLimits(state)
    store = rate.store()
    assert isinstance(store, MemoryCounterStore) and rate.store() is store
    await rate.done()


async def test_a_reload_keeps_the_store_unless_state_changes() -> None:
    d = copy.deepcopy(config_data())
    state = make_state(d)
    rate = RateLimits(state)
    first = rate.store()
    state.install(make_state(d).settings)  # type: ignore[arg-type]
    assert rate.store() is first  # an equal [state]: the counters survive the reload
    d["state"] = {"backend": "sqlite", "path": "/nonexistent-dir/state.db"}
    state.install(make_state(d).settings)  # type: ignore[arg-type]
    second = rate.store()
    assert second is not first and not isinstance(second, MemoryCounterStore)
    await rate.done()
