"""Step: authenticate the master key."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import _hooks as http_hooks
from mitmproxy.test import tflow

from llamakey import config, credentials
from llamakey import flowstate as keys
from llamakey.gateway import gateway_addons
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.authenticate import Authenticate
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    CAROL_KEY,
    DAVE_KEY,
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
    request,
    request_text,
)

# Authenticate


CARRIER_CASES = [
    pytest.param(
        "https://api.openai.com/v1/chat/completions",
        {"Authorization": "Bearer {}"},
        id="openai-bearer",
    ),
    pytest.param(
        "https://api.anthropic.com/v1/messages", {"x-api-key": "{}"}, id="anthropic-x-api-key"
    ),
    pytest.param(
        "https://api.anthropic.com/v1/messages",
        {"Authorization": "Bearer {}"},
        id="anthropic-bearer",
    ),
    pytest.param(
        "https://r.openai.azure.com/openai/deployments/d/chat/completions",
        {"api-key": "{}"},
        id="azure-api-key",
    ),
    pytest.param(
        "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent",
        {"x-goog-api-key": "{}"},
        id="gemini-header",
    ),
    pytest.param(
        "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?key={}",
        {},
        id="gemini-query",
    ),
    pytest.param(
        "https://router.huggingface.co/v1/chat/completions",
        {"Authorization": "Bearer hf_{}"},
        id="hf-prefixed",
    ),
]


@pytest.mark.parametrize(("url", "headers"), CARRIER_CASES)
async def test_authenticate_valid_key_in_each_carrier(
    state: GatewayState, url: str, headers: dict[str, str]
) -> None:
    auth = Authenticate(state)
    with mitm_context(auth):
        f = authenticate(state, provider_flow(*fill(url, headers, ALICE_KEY)), auth)
        assert f.response is None
        assert f.metadata[keys.USER] == "alice"
        assert f.metadata[keys.GROUPS] == ["research"]
        marker = state.flows(f).marker
        assert marker == f"lmk_...{ALICE_KEY[-4:]} (alice)"
        shown = request_text(f)
        assert ALICE_KEY not in shown
        assert ALICE_KEY[4:] not in shown
        ((carrier, value),) = credentials.presented(f.request)
        assert value == marker
        assert state.flows(f).carriers == [carrier]


@pytest.mark.parametrize(
    ("url", "shape"),
    [
        ("https://api.openai.com/v1/models", ErrorShape.OPENAI),
        ("https://api.anthropic.com/v1/messages", ErrorShape.ANTHROPIC),
        ("https://generativelanguage.googleapis.com/v1beta/models", ErrorShape.GOOGLE),
        ("https://api.cohere.com/v2/chat", ErrorShape.COHERE),
        ("https://router.huggingface.co/v1/chat/completions", ErrorShape.HUGGINGFACE),
        ("https://api.vectara.io/v2/query", ErrorShape.VECTARA),
    ],
)
async def test_authenticate_unknown_key_gets_401_in_provider_shape(
    state: GatewayState, url: str, shape: ErrorShape
) -> None:
    with mitm_context(Authenticate(state)):
        f = authenticate(state, provider_flow(url, {"Authorization": f"Bearer {STRANGER_KEY}"}))
        assert f.response is not None
        assert f.response.status_code == 401
        assert f.response.headers["x-should-retry"] == "false"
        assert "not a valid LlaMaKey master key" in assert_shape(shape, body(f), 401)
        assert f.metadata[keys.REFUSED] == Refusal.UNKNOWN_KEY.value
        assert keys.USER not in f.metadata
        assert STRANGER_KEY not in request_text(f)


async def test_authenticate_without_any_key(state: GatewayState) -> None:
    with mitm_context(Authenticate(state)):
        f = authenticate(state, provider_flow("https://api.openai.com/v1/models"))
        assert f.response is not None and f.response.status_code == 401
        assert f.metadata[keys.REFUSED] == Refusal.NO_KEY.value
        f = authenticate(
            state,
            provider_flow("https://api.openai.com/v1/models", {"Authorization": "Bearer sk-x"}),
        )
        assert f.response is not None and f.response.status_code == 401
        assert f.metadata[keys.REFUSED] == Refusal.UNKNOWN_KEY.value


@pytest.mark.parametrize(
    ("key", "refusal", "why"),
    [
        (BOB_KEY, Refusal.DISABLED, "'bob' is disabled"),
        (CAROL_KEY, Refusal.EXPIRED, "'carol' is expired"),
    ],
)
async def test_authenticate_refuses_disabled_and_expired(
    state: GatewayState, key: str, refusal: Refusal, why: str
) -> None:
    with mitm_context(Authenticate(state)):
        f = authenticate(
            state, provider_flow("https://api.anthropic.com/v1/messages", {"x-api-key": key})
        )
        assert f.response is not None and f.response.status_code == 401
        assert why in assert_shape(ErrorShape.ANTHROPIC, body(f), 401)
        assert f.metadata[keys.REFUSED] == refusal.value
        assert key not in request_text(f)


async def test_authenticate_accepts_key_expiring_later(state: GatewayState) -> None:
    with mitm_context(Authenticate(state)):
        f = authenticate(
            state,
            provider_flow(
                "https://api.openai.com/v1/models", {"Authorization": f"Bearer {DAVE_KEY}"}
            ),
        )
        assert f.response is None
        assert f.metadata[keys.USER] == "dave"


async def test_proxy_credentials_authenticate_the_tunnel(state: GatewayState) -> None:
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow("api.openai.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)})
        auth.http_connect(c)
        assert c.response is None
        assert "proxy-authorization" not in c.request.headers

        # Same client connection: the SDK's placeholder key is enough, and is replaced.
        f = provider_flow(
            "https://api.openai.com/v1/models",
            {"Authorization": "Bearer sk-dummy"},
            client=c.client_conn,
        )
        authenticate(state, f, auth)
        assert f.response is None
        assert f.metadata[keys.USER] == "alice"
        assert f.request.headers["authorization"] == f"Bearer {state.flows(f).marker}"
        assert "(alice)" in state.flows(f).marker
        assert "sk-dummy" not in request_text(f)

        # No key at all in the tunnel also works.
        f = provider_flow("https://api.openai.com/v1/models", client=c.client_conn)
        authenticate(state, f, auth)
        assert f.metadata[keys.USER] == "alice"

        # Another connection is not authenticated by alice's CONNECT.
        f = provider_flow("https://api.openai.com/v1/models", {"Authorization": "Bearer sk-dummy"})
        authenticate(state, f, auth)
        assert f.response is not None and f.response.status_code == 401


async def test_revoked_user_is_refused_inside_an_open_tunnel(state: GatewayState) -> None:
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow("api.openai.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)})
        auth.http_connect(c)
        f = authenticate(
            state, provider_flow("https://api.openai.com/v1/models", client=c.client_conn), auth
        )
        assert f.metadata[keys.USER] == "alice"
        # `lmk keys revoke alice`, then the reload installs the new configuration
        data = config_data()
        del data["users"]["alice"]
        state.install(config.resolve(config.parse(data), None))
        f = authenticate(
            state, provider_flow("https://api.openai.com/v1/models", client=c.client_conn), auth
        )
        assert f.response is not None and f.response.status_code == 401


async def test_blocked_connect_drops_proxy_credentials(
    isolated_log_scrubber: None,
) -> None:
    state = make_state(config_data(other_hosts="block"))
    with mitm_context(*gateway_addons(state)) as tctx:
        c = connect_flow("example.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)})
        await tctx.master.addons.trigger_event(http_hooks.HttpConnectHook(c))
        assert c.response is not None and c.response.status_code == 403
        assert "proxy-authorization" not in c.request.headers


async def test_connect_through_gateway_chain_drops_proxy_credentials(
    state: GatewayState, isolated_log_scrubber: None
) -> None:
    with mitm_context(*gateway_addons(state)) as tctx:
        for authority in ("api.openai.com:443", "example.com:443"):
            c = connect_flow(authority, {"Proxy-Authorization": basic("alice", ALICE_KEY)})
            await tctx.master.addons.trigger_event(http_hooks.HttpConnectHook(c))
            assert c.response is None
            assert "proxy-authorization" not in c.request.headers


async def test_hf_prefixed_proxy_password_is_accepted(state: GatewayState) -> None:
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow(
            "router.huggingface.co:443", {"Proxy-Authorization": basic("alice", "hf_" + ALICE_KEY)}
        )
        auth.http_connect(c)
        f = authenticate(
            state,
            provider_flow("https://router.huggingface.co/v1/models", client=c.client_conn),
            auth,
        )
        assert f.metadata[keys.USER] == "alice"


@pytest.mark.parametrize(
    "header",
    [None, basic("alice", STRANGER_KEY), basic("bob", "not-a-key"), "Bearer " + ALICE_KEY],
)
async def test_proxy_auth_required_without_valid_credentials(header: str | None) -> None:
    state = make_state(config_data(proxy_auth=True))
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow("api.openai.com:443", {"Proxy-Authorization": header} if header else {})
        auth.http_connect(c)
        assert c.response is not None
        assert c.response.status_code == 407
        assert c.response.headers["Proxy-Authenticate"].startswith("Basic")
        assert "proxy-authorization" not in c.request.headers


@pytest.mark.parametrize(
    ("key", "refusal", "why"),
    [(BOB_KEY, Refusal.DISABLED, "disabled"), (CAROL_KEY, Refusal.EXPIRED, "expired")],
)
async def test_proxy_auth_refuses_disabled_and_expired_users(
    key: str, refusal: Refusal, why: str
) -> None:
    state = make_state(config_data(proxy_auth=True))
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow("api.openai.com:443", {"Proxy-Authorization": basic("x", key)})
        auth.http_connect(c)
        assert c.response is not None and c.response.status_code == 407
        assert why in (c.response.text or "")
        assert c.metadata[keys.REFUSED] == refusal.value


def plain_proxy_request(headers: dict[str, str]) -> http.HTTPFlow:
    """``GET http://example.test/`` sent to the proxy itself: plain-HTTP proxying, no CONNECT."""
    f = tflow.tflow(req=request("http://example.test/", headers, method="GET"))
    f.client_conn.tls = False
    f.server_conn.address = None
    return f


@pytest.mark.parametrize(
    "header", [None, basic("alice", STRANGER_KEY), basic("bob", BOB_KEY), basic("c", CAROL_KEY)]
)
async def test_proxy_auth_holds_for_plain_http_proxying(header: str | None) -> None:
    state = make_state(config_data(proxy_auth=True))
    auth = Authenticate(state)
    with mitm_context(auth):
        f = plain_proxy_request({"Proxy-Authorization": header} if header else {})
        auth.requestheaders(f)
        assert f.response is not None and f.response.status_code == 407
        assert "proxy-authorization" not in f.request.headers


async def test_plain_http_proxying_with_valid_credentials_passes_without_them() -> None:
    state = make_state(config_data(proxy_auth=True))
    auth = Authenticate(state)
    with mitm_context(auth):
        f = plain_proxy_request({"Proxy-Authorization": basic("alice", ALICE_KEY)})
        auth.requestheaders(f)
        assert f.response is None
        assert "proxy-authorization" not in f.request.headers  # never forwarded


async def test_proxy_auth_required_passes_valid_credentials() -> None:
    state = make_state(config_data(proxy_auth=True))
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow("example.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)})
        auth.http_connect(c)
        assert c.response is None
        assert "proxy-authorization" not in c.request.headers


async def test_wrong_proxy_credentials_without_proxy_auth_are_dropped(state: GatewayState) -> None:
    auth = Authenticate(state)
    with mitm_context(auth):
        c = connect_flow(
            "api.openai.com:443", {"Proxy-Authorization": basic("alice", STRANGER_KEY)}
        )
        auth.http_connect(c)
        assert c.response is None
        assert "proxy-authorization" not in c.request.headers
        f = authenticate(
            state, provider_flow("https://api.openai.com/v1/models", client=c.client_conn), auth
        )
        assert f.response is not None and f.response.status_code == 401
