"""Step: settle metered usage into USD, and say so in mitmweb's comment column."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from mitmproxy import http

from llamakey import config
from llamakey import flowstate as keys
from llamakey.state import GatewayState
from llamakey.steps.settle import Settle
from llamakey.usage import Usage
from tests.unit.builders import config_data, mitm_context, provider_flow


def metered(state: GatewayState, usage: Usage | None, model: str = "gpt-4o-mini") -> http.HTTPFlow:
    """An answered openai flow of alice's, as meter leaves it."""
    f = provider_flow("https://api.openai.com/v1/chat/completions")
    fs = state.flows(f)
    fs.provider, fs.user, fs.model, fs.usage = "openai", "alice", model, usage
    f.response = http.Response.make(200, b"{}")
    return f


async def test_settle_prices_the_usage_as_genai_prices_does(state: GatewayState) -> None:
    usage = Usage(input_tokens=600, output_tokens=100, cache_read_tokens=400, model="gpt-4o")
    settle = Settle(state)
    with mitm_context(settle):
        f = metered(state, usage)
        settle.response(f)
    now = datetime.now(UTC)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400),
        "gpt-4o",  # the model the provider reported wins over the one asked for
        provider_id="openai",
        genai_request_timestamp=now,
    ).total_price
    cost = state.flows(f).cost_usd
    assert cost is not None and Decimal(str(cost)) == pytest.approx(expected, rel=Decimal("1e-9"))
    assert f.metadata[keys.COST] == cost  # a saved flow shows it
    assert f.comment == f"alice | gpt-4o | 1100 tokens | ${cost:.6f}"


async def test_settle_keeps_the_providers_own_cost_out_of_ours(state: GatewayState) -> None:
    reported = Usage(input_tokens=10, output_tokens=10, provider_cost_usd=123.0)
    settle = Settle(state)
    with mitm_context(settle):
        f = metered(state, reported)
        settle.response(f)
    cost = state.flows(f).cost_usd
    assert cost is not None and cost < 1
    assert state.flows(f).usage == reported  # the audit row still gets the provider's figure


async def test_unknown_model_is_unpriced_not_free(state: GatewayState) -> None:
    settle = Settle(state)
    with mitm_context(settle):
        f = metered(state, Usage(input_tokens=5, output_tokens=5), model="no-such-model-xyz")
        settle.error(f)  # a broken-off answer is settled too
    assert state.flows(f).cost_usd is None
    assert keys.COST not in f.metadata
    assert f.comment.endswith("| unpriced")


async def test_a_price_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    data = config_data()
    data["prices"] = {"my-finetune": {"input_per_mtok": 1, "output_per_mtok": 2}}
    state = GatewayState()
    state.install(config.resolve(config.parse(data), None))
    settle = Settle(state)
    with mitm_context(settle):
        f = metered(state, Usage(input_tokens=1_000_000, output_tokens=500_000), "my-finetune")
        settle.response(f)
    assert state.flows(f).cost_usd == pytest.approx(2.0)


async def test_nothing_metered_nothing_settled(state: GatewayState) -> None:
    settle = Settle(state)
    with mitm_context(settle):
        f = metered(state, None)
        settle.response(f)
    assert state.flows(f).cost_usd is None
    assert f.comment == ""
