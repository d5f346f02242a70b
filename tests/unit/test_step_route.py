"""Step: route a catalogued model to its deployments (the relay's attempts are tested end to
end in tests/e2e/test_routing.py); and the key swap's rule that a key goes only to its own
provider's host."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llamakey.flowstate import FlowState
from llamakey.refusals import Refusal
from llamakey.routing.relay import ROUTE_HEADER
from llamakey.steps.keyswap import KeySwap
from llamakey.steps.ratelimit import RateLimits
from llamakey.steps.route import RouteToDeployment
from llamakey.steps.settle import Settle
from llamakey.usage import Usage
from tests.unit.builders import (
    ALICE_KEY,
    REAL,
    authenticate,
    body,
    cleared,
    config_data,
    make_state,
    mitm_context,
    provider_flow,
)

COMPATIBLE = {
    "name": "groq",
    "kind": "openai_compatible",
    "base_url": "https://api.groq.com/openai/v1",
    "keys": ["${LMK_UT_AZURE}"],
}


def routed_config(**model: Any) -> dict[str, Any]:
    data = config_data()
    data["models"] = {"pool": {"aliases": ["fast"], "deployments": [COMPATIBLE], **model}}
    return data


def chat(model: str, path: str = "/v1/chat/completions") -> Any:
    content = json.dumps({"model": model, "messages": []}).encode()
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    return provider_flow(f"https://api.openai.com{path}", headers, content=content)


async def test_a_catalogued_model_goes_to_the_relay_with_no_key_in_the_flow() -> None:
    state = make_state(routed_config())
    route, swap = RouteToDeployment(state), KeySwap(state)
    with mitm_context():
        f = chat("fast")
        authenticate(state, f)
        cleared(state, f)
        pending = route.request(f)
        assert pending is not None
        await pending
        swap.request(f)
        assert f.response is None and state.flows(f).routed
        assert (f.request.scheme, f.request.host, f.request.port) == (
            "http",
            "127.0.0.1",
            route.relay.port,
        )
        assert f.request.host_header == "api.openai.com"
        assert f.request.headers[ROUTE_HEADER]
        assert all(key not in str(f.request.headers) for key in REAL.values())
        assert "authorization" not in f.request.headers
        route.response(f)  # the answer came: the flow shows the request as the client sent it
        assert (f.request.scheme, f.request.host) == ("https", "api.openai.com")
        assert ROUTE_HEADER not in f.request.headers
        await route.done()


async def test_other_models_and_paths_go_to_openai_as_sent() -> None:
    state = make_state(routed_config())
    route = RouteToDeployment(state)
    for f in (chat("gpt-4o-mini"), chat("fast", "/v1/completions")):
        authenticate(state, f)
        cleared(state, f)
        assert route.request(f) is None
        assert not state.flows(f).routed and f.request.host == "api.openai.com"


async def test_no_deployment_serving_the_api_is_a_refusal() -> None:
    state = make_state(routed_config())
    route = RouteToDeployment(state)
    f = chat("fast", "/v1/responses")  # an openai_compatible deployment: no Responses API
    authenticate(state, f)
    cleared(state, f)
    pending = route.request(f)
    assert pending is not None
    await pending
    assert f.response is not None and f.response.status_code == 400
    assert state.flows(f).refusal is Refusal.NO_DEPLOYMENT
    assert "no deployment of pool serves /v1/responses" in body(f)["error"]["message"]


def test_an_uncleared_flow_is_not_routed() -> None:
    state = make_state(routed_config())
    f = chat("fast")
    authenticate(state, f)  # authenticated, neither authorized nor audited
    assert RouteToDeployment(state).request(f) is None
    KeySwap(state).request(f)
    assert state.flows(f).refusal is Refusal.NOT_CLEARED


def test_the_key_swap_sends_no_key_to_a_host_not_its_providers() -> None:
    state = make_state()
    f = chat("gpt-4o-mini")
    authenticate(state, f)
    cleared(state, f)
    f.request.host = "evil.example"  # anything that changed the destination after identify
    KeySwap(state).request(f)
    assert state.flows(f).refusal is Refusal.MISDIRECTED
    assert REAL["openai"] not in str(f.request.headers)


async def test_the_relay_serves_only_a_registered_route_and_only_once() -> None:
    state = make_state(routed_config())
    route = RouteToDeployment(state)
    with mitm_context():
        f = chat("fast")
        authenticate(state, f)
        cleared(state, f)
        pending = route.request(f)
        assert pending is not None
        await pending
        token = f.request.headers[ROUTE_HEADER]
        route.response(f)  # the flow ended without reaching the relay: its token goes too
        for presented in ("guessed-token", token):
            reader, writer = await asyncio.open_connection("127.0.0.1", route.relay.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\n"
                + f"{ROUTE_HEADER}: {presented}\r\ncontent-length: 2\r\n\r\n{{}}".encode()
            )
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 403 "), status
            writer.close()
        await route.done()


PRICED = {
    "cheap": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
    "dear": {"input_per_mtok": 3_000_000, "output_per_mtok": 3_000_000},
}


def priced_config() -> dict[str, Any]:
    data = routed_config()
    data["models"]["pool"]["deployments"] = [
        {**COMPATIBLE, "model": "cheap", "weight": 5},
        {**COMPATIBLE, "name": "groq2", "model": "dear"},
    ]
    data["prices"] = PRICED
    return data


def test_a_budget_reserves_at_the_dearest_deployment() -> None:
    state = make_state(priced_config())
    flow_state = FlowState(provider="openai", model="fast")
    body = b"x" * 400  # 100 tokens in, and 100 out at most: 200 tokens at $3 each
    assert RateLimits(state).worst_cost(flow_state, body, 100) == 600.0


def test_the_deployment_that_served_is_the_price_settled() -> None:
    state = make_state(priced_config())
    f = chat("fast")
    flow_state = state.flows(f)
    flow_state.provider, flow_state.model = "openai", "fast"
    assert state.settings is not None
    cheap, _ = state.settings.models.deployments()
    flow_state.route_pricing, flow_state.upstream_model = cheap.pricing, cheap.model
    flow_state.usage = Usage(input_tokens=10, output_tokens=5)  # the answer named no model
    Settle(state).settle(f)
    assert flow_state.cost_usd == 15.0
