"""Step: swap in the real key, and saved flows that hold none."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mitmproxy import flow, hooks, http, io
from mitmproxy.proxy.layers.http import _hooks as http_hooks

from llamakey import credentials
from llamakey import flowstate as keys
from llamakey.gateway import gateway_addons
from llamakey.providers import Carrier, ErrorShape
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.authorize import Authorize
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.keyswap import KeySwap
from tests.unit.builders import (
    ALICE_KEY,
    REAL,
    STRANGER_KEY,
    assert_shape,
    authenticate,
    basic,
    body,
    config_data,
    connect_flow,
    fill,
    make_state,
    mitm_context,
    provider_flow,
    request_text,
    through_request,
)

# KeySwap


def upstream_response(content: bytes = b'{"ok": true}') -> http.Response:
    return http.Response.make(200, content, {"content-type": "application/json"})


@pytest.mark.parametrize(
    ("url", "headers", "real", "carrier"),
    [
        (
            "https://api.openai.com/v1/chat/completions",
            {"Authorization": "Bearer {}"},
            "openai",
            Carrier.BEARER,
        ),
        # openai takes no x-api-key: the real key goes in its default carrier
        (
            "https://api.openai.com/v1/chat/completions",
            {"x-api-key": "{}"},
            "openai",
            Carrier.BEARER,
        ),
        (
            "https://api.anthropic.com/v1/messages",
            {"x-api-key": "{}"},
            "anthropic",
            Carrier.X_API_KEY,
        ),
        (
            "https://api.anthropic.com/v1/messages",
            {"Authorization": "Bearer {}"},
            "anthropic",
            Carrier.BEARER,
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent",
            {"x-goog-api-key": "{}"},
            "gemini",
            Carrier.GOOG_API_KEY,
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?alt=sse&key={}",
            {},
            "gemini",
            Carrier.QUERY_KEY,
        ),
        (
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=1",
            {"api-key": "{}"},
            "azure",
            Carrier.API_KEY,
        ),
        (
            "https://router.huggingface.co/v1/chat/completions",
            {"Authorization": "Bearer hf_{}"},
            "huggingface",
            Carrier.BEARER,
        ),
    ],
)
@pytest.mark.parametrize("end", ["responseheaders", "error", "done"])
async def test_keyswap_puts_real_key_in_the_clients_carrier_then_removes_it(
    state: GatewayState, url: str, headers: dict[str, str], real: str, carrier: Carrier, end: str
) -> None:
    swap = KeySwap(state)
    with mitm_context(swap):
        f = provider_flow(*fill(url, headers, ALICE_KEY))
        through_request(state, f, swap)
        key = REAL[real]
        # What the provider receives: exactly one credential, the real key, where the client put it.
        assert credentials.presented(f.request) == [(carrier, key)]
        if carrier is Carrier.BEARER:
            assert f.request.headers["authorization"] == f"Bearer {key}"
        elif carrier is Carrier.QUERY_KEY:
            assert f.request.query["key"] == key
            assert f.request.query["alt"] == "sse"
        else:
            assert f.request.headers[carrier.value] == key
        assert ALICE_KEY not in request_text(f)

        if end == "responseheaders":
            f.response = upstream_response()
            swap.responseheaders(f)
        elif end == "error":
            f.error = flow.Error("Connection killed.")
            swap.error(f)
        else:
            swap.done()
        shown = request_text(f)
        assert key not in shown
        assert ALICE_KEY not in shown
        assert credentials.presented(f.request) == [(carrier, state.flows(f).marker)]


@pytest.mark.parametrize("skipped", ["authorize", "audit"])
async def test_keyswap_refuses_a_flow_that_skipped_a_step(
    state: GatewayState, skipped: str
) -> None:
    """Fail closed: a flow that was not authorized or audited gets no key and goes nowhere."""
    swap = KeySwap(state)
    with mitm_context(swap):
        f = authenticate(
            state,
            provider_flow(
                "https://api.openai.com/v1/models", {"Authorization": f"Bearer {ALICE_KEY}"}
            ),
        )
        IdentifyProvider(state).request(f)
        if skipped != "authorize":
            Authorize(state).request(f)
        if skipped != "audit":
            state.flows(f).audited = True
        swap.request(f)
        assert f.response is not None and f.response.status_code == 500
        assert f.metadata[keys.REFUSED] == Refusal.NOT_CLEARED.value
        assert REAL["openai"] not in request_text(f)
        assert swap.armed == {}


async def test_keyswap_without_provider_key_answers_500_naming_the_setting(
    state: GatewayState,
) -> None:
    swap = KeySwap(state)
    with mitm_context(swap):
        f = provider_flow("https://api.vectara.io/v2/query", {"x-api-key": ALICE_KEY})
        through_request(state, f, swap)
        assert f.response is not None
        assert f.response.status_code == 500
        assert f.response.headers["x-should-retry"] == "false"
        message = assert_shape(ErrorShape.VECTARA, body(f), 500)
        assert "providers.vectara.keys" in message
        assert "LMK_UT_VECTARA_UNSET" in message
        assert f.metadata[keys.REFUSED] == Refusal.NO_PROVIDER_KEY.value
        assert swap.armed == {}


async def test_keyswap_gives_refused_flows_no_key(state: GatewayState) -> None:
    swap = KeySwap(state)
    with mitm_context(swap):
        f = provider_flow(
            "https://api.openai.com/v1/models", {"Authorization": f"Bearer {STRANGER_KEY}"}
        )
        through_request(state, f, swap)
        assert f.response is not None and f.response.status_code == 401
        assert REAL["openai"] not in request_text(f)
        assert swap.armed == {}


async def test_keyswap_round_robin_over_two_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMK_UT_OPENAI2", REAL["openai2"])
    data = config_data()
    data["providers"]["openai"] = {"keys": ["${LMK_UT_OPENAI}", "${LMK_UT_OPENAI2}"]}
    state = make_state(data)
    swap = KeySwap(state)
    with mitm_context(swap):
        sent = []
        for _ in range(4):
            f = provider_flow(
                "https://api.openai.com/v1/models", {"Authorization": f"Bearer {ALICE_KEY}"}
            )
            through_request(state, f, swap)
            sent.append(f.request.headers["authorization"].removeprefix("Bearer "))
            f.response = upstream_response()
            swap.responseheaders(f)
        assert sent == [REAL["openai"], REAL["openai2"], REAL["openai"], REAL["openai2"]]


async def test_keyswap_uses_default_carrier_for_proxy_authenticated_tunnel(
    state: GatewayState,
) -> None:
    auth, swap = Authenticate(state), KeySwap(state)
    with mitm_context(auth, swap):
        c = connect_flow(
            "api.anthropic.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)}
        )
        auth.http_connect(c)
        f = provider_flow("https://api.anthropic.com/v1/messages", client=c.client_conn)
        through_request(state, f, swap, auth)
        assert f.request.headers["x-api-key"] == REAL["anthropic"]
        f.response = upstream_response()
        swap.responseheaders(f)
        assert f.request.headers["x-api-key"] == state.flows(f).marker


# A saved flow file holds no key


@pytest.mark.parametrize("end", ["response", "error", "done"])
async def test_saved_flow_file_holds_no_key(
    state: GatewayState,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    isolated_log_scrubber: None,
    end: str,
) -> None:
    addons = gateway_addons(state)
    with mitm_context(*addons) as tctx:
        trigger = tctx.master.addons.trigger_event
        f = provider_flow(
            "https://api.openai.com/v1/chat/completions",
            {"Authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"},
            content=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
        )
        f.metadata["proxyauth"] = ("alice", ALICE_KEY)  # as mitmproxy's proxyauth addon leaves it
        await trigger(http_hooks.HttpRequestHeadersHook(f))
        await trigger(http_hooks.HttpRequestHook(f))
        assert (
            f.request.headers["authorization"] == f"Bearer {REAL['openai']}"
        )  # what upstream gets

        if end == "response":
            f.response = http.Response.make(
                401,
                json.dumps({"error": {"message": f"Incorrect API key provided: {REAL['openai']}"}}),
                {"content-type": "application/json"},
            )
            await trigger(http_hooks.HttpResponseHeadersHook(f))
            await trigger(http_hooks.HttpResponseHook(f))
        elif end == "error":
            f.error = flow.Error("Connection killed.")
            await trigger(http_hooks.HttpErrorHook(f))
        else:
            await trigger(hooks.DoneHook())  # type: ignore[no-untyped-call]

        path = tmp_path / "flows.mitm"
        with path.open("wb") as out:
            io.FlowWriter(out).add(f)  # type: ignore[no-untyped-call]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    saved = path.read_bytes()
    for secret in (REAL["openai"], ALICE_KEY, ALICE_KEY[4:]):
        assert secret.encode() not in saved
    # The file is a real flow of alice's, with the marker where the key was.
    with path.open("rb") as handle:
        (loaded,) = list(io.FlowReader(handle).stream())
    assert isinstance(loaded, http.HTTPFlow)
    assert loaded.metadata[keys.USER] == "alice"
    assert loaded.request.headers["authorization"] == f"Bearer lmk_...{ALICE_KEY[-4:]} (alice)"


async def test_realtime_websocket_subprotocol_key_is_swapped(state: GatewayState) -> None:
    swap = KeySwap(state)
    with mitm_context(swap):
        f = provider_flow(
            "https://api.openai.com/v1/realtime?model=gpt-4o-realtime-preview",
            {"sec-websocket-protocol": f"realtime, openai-insecure-api-key.{ALICE_KEY}"},
        )
        f.request.method = "GET"
        through_request(state, f, swap)
        upstream = f.request.headers["sec-websocket-protocol"]
        assert upstream == f"realtime, openai-insecure-api-key.{REAL['openai']}"
        f.response = http.Response.make(101)
        swap.responseheaders(f)
        assert REAL["openai"] not in request_text(f) and ALICE_KEY not in request_text(f)
