"""Unit tests of each LlaMaKey addon, driven with mitmproxy's own test helpers.

Each test builds the flow a client would send (`http.Request.make` + Host header + the TLS
server name on the client connection), runs the addon's hooks in mitmproxy's order and checks
what the user would see: the answer the SDK gets, the key the provider gets, and what a saved
flow, a log line or mitmweb would show.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection, flow, hooks, http, io
from mitmproxy.addons import onboarding
from mitmproxy.proxy.layers.http import _hooks as http_hooks
from mitmproxy.test import taddons, tflow

from llamakey import config, credentials
from llamakey import state as keys
from llamakey.gateway import gateway_addons
from llamakey.providers import BUILTIN_PROVIDERS, Carrier, ErrorShape, ProviderIndex
from llamakey.refusals import Refusal, error_body, proxy_auth_required, refusal_response
from llamakey.state import GatewayState
from llamakey.steps import redact
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.configload import ConfigLoader
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.keyswap import KeySwap

# Fake real provider keys (what the provider must get, and what must never leak).
REAL = {
    "openai": "sk-proj-UNITopenaiKEY0123456789abcdefgh",
    "openai2": "sk-proj-UNITopenaiSECOND0123456789abcd",
    "anthropic": "sk-ant-api03-UNITanthropicKEY0123456789",
    "gemini": "AIzaUNITgeminiKEY0123456789abcdefghijk",
    "azure": "UNITazureKEY0123456789abcdefghijklmnop",
    "cohere": "UNITcohereKEY0123456789abcdefghijklmn",
    "huggingface": "hf_UNIThuggingfaceKEY0123456789abcdefg",
}
ENV = {
    "LMK_UT_OPENAI": REAL["openai"],
    "LMK_UT_ANTHROPIC": REAL["anthropic"],
    "LMK_UT_GEMINI": REAL["gemini"],
    "LMK_UT_AZURE": REAL["azure"],
    "LMK_UT_COHERE": REAL["cohere"],
    "LMK_UT_HF": REAL["huggingface"],
}

ALICE_KEY = credentials.new_master_key()  # active, group research
BOB_KEY = credentials.new_master_key()  # disabled
CAROL_KEY = credentials.new_master_key()  # expired
DAVE_KEY = credentials.new_master_key()  # expires next year
STRANGER_KEY = credentials.new_master_key()  # well formed, in no config
MASTER_KEYS = (ALICE_KEY, BOB_KEY, CAROL_KEY, DAVE_KEY, STRANGER_KEY)


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config_data(**proxy: Any) -> dict[str, Any]:
    """A configuration as parsed TOML: keys for most providers, none for vectara."""
    return {
        "proxy": proxy,
        "providers": {
            "openai": {"keys": ["${LMK_UT_OPENAI}"]},
            "anthropic": {"keys": ["${LMK_UT_ANTHROPIC}"]},
            "gemini": {"keys": ["${LMK_UT_GEMINI}"]},
            "azure": {"keys": ["${LMK_UT_AZURE}"]},
            "cohere": {"keys": ["${LMK_UT_COHERE}"]},
            "huggingface": {"keys": ["${LMK_UT_HF}"]},
            "vectara": {"keys": ["${LMK_UT_VECTARA_UNSET}"]},
        },
        "groups": {"research": {}, "ops": {}},
        "users": {
            "alice": {"key_sha256": sha(ALICE_KEY), "groups": ["research"]},
            "bob": {"key_sha256": sha(BOB_KEY), "groups": ["ops"], "disabled": True},
            "carol": {"key_sha256": sha(CAROL_KEY), "expires": datetime(2020, 1, 1, tzinfo=UTC)},
            "dave": {
                "key_sha256": sha(DAVE_KEY),
                "expires": datetime.now(UTC) + timedelta(days=365),
            },
        },
    }


@pytest.fixture(autouse=True)
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LMK_UT_VECTARA_UNSET", raising=False)


def make_state(data: Mapping[str, Any] | None = None) -> GatewayState:
    state = GatewayState()
    state.install(config.resolve(config.parse(data or config_data()), None))
    return state


@pytest.fixture
def state() -> GatewayState:
    return make_state()


@pytest.fixture
def isolated_log_scrubber(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test install the (process-wide) log scrubber, and take it out afterwards."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redact, "_installed_for", [])
    yield
    logging.setLogRecordFactory(factory)


def mitm_context(*addons: object) -> taddons.context:
    """mitmproxy's test Master with these addons loaded (`ctx` works inside)."""
    return taddons.context(*addons)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------
# Flow builders


def request(
    url: str, headers: Mapping[str, str] | None = None, content: bytes = b"{}", method: str = "POST"
) -> http.Request:
    req = http.Request.make(method, url, content, dict(headers or {}))  # type: ignore[arg-type]
    req.headers["Host"] = req.host if req.port in (80, 443) else f"{req.host}:{req.port}"
    return req


def provider_flow(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    sni: str | bool | None = True,
    client: connection.Client | None = None,
    content: bytes = b"{}",
) -> http.HTTPFlow:
    """A request inside an intercepted TLS tunnel; `sni=True` uses the URL's host."""
    req = request(url, headers, content)
    f = tflow.tflow(req=req, client_conn=client)
    f.client_conn.sni = req.host if sni is True else (sni or None)
    return f


def connect_flow(
    authority: str,
    headers: Mapping[str, str] | None = None,
    client: connection.Client | None = None,
) -> http.HTTPFlow:
    """The CONNECT request that opens a tunnel (authority form, as HTTPS_PROXY clients send it)."""
    host, _, port = authority.rpartition(":")
    req = http.Request(
        host=host,
        port=int(port),
        method=b"CONNECT",
        scheme=b"",
        authority=authority.encode(),
        path=b"",
        http_version=b"HTTP/1.1",
        headers=http.Headers([(k.encode(), v.encode()) for k, v in (headers or {}).items()]),
        content=b"",
        trailers=None,
        timestamp_start=0.0,
        timestamp_end=0.0,
    )
    f = tflow.tflow(req=req, client_conn=client)
    f.client_conn.sni = None
    return f


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_text(f: http.HTTPFlow) -> str:
    """Everything of the request a viewer could show: header lines and the full URL."""
    lines = [f"{k}: {v}" for k, v in f.request.headers.items(multi=True)]  # type: ignore[no-untyped-call]
    return "\n".join([f.request.url, *lines])


def body(f: http.HTTPFlow) -> dict[str, Any]:
    assert f.response is not None
    data: dict[str, Any] = json.loads(f.response.content or b"")
    return data


def assert_shape(shape: ErrorShape, data: dict[str, Any], status: int) -> str:
    """Check `data` is an error body of this provider's shape; return its message."""
    match shape:
        case ErrorShape.OPENAI:
            assert set(data["error"]) >= {"message", "type", "code"}
            return str(data["error"]["message"])
        case ErrorShape.ANTHROPIC:
            assert data["type"] == "error"
            assert data["error"]["type"] == (
                "authentication_error" if status == 401 else data["error"]["type"]
            )
            return str(data["error"]["message"])
        case ErrorShape.GOOGLE:
            assert data["error"]["code"] == status
            if status == 401:
                assert data["error"]["status"] == "UNAUTHENTICATED"
            return str(data["error"]["message"])
        case ErrorShape.COHERE:
            assert list(data) == ["message"]
            return str(data["message"])
        case ErrorShape.HUGGINGFACE:
            assert isinstance(data["error"], str)
            return data["error"]
        case ErrorShape.VECTARA:
            assert isinstance(data["messages"], list)
            assert data["request_id"]
            return str(data["messages"][0])
    raise AssertionError(shape)


# --------------------------------------------------------------------------------------------
# providers.ProviderIndex


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.openai.com", "openai"),
        ("API.OpenAI.com.", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("myres.openai.azure.com", "azure"),
        ("a.b.cognitiveservices.azure.com", "azure"),
        ("x.endpoints.huggingface.cloud", "huggingface"),
        ("openai.azure.com", None),
        ("api.openai.com.evil.net", None),
        ("evilapi.openai.com", None),
        ("openai.com", None),
        ("example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_provider_index_lookup(host: str | None, expected: str | None) -> None:
    found = ProviderIndex(BUILTIN_PROVIDERS.values()).lookup(host)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    ("address", "intercepted"),
    [
        ("api.openai.com:443", True),
        ("x.openai.azure.com:443", True),
        ("generativelanguage.googleapis.com:443", True),
        ("api.openai.com.evil.net:443", False),
        ("evilapi.openai.com:443", False),
        ("openai.azure.com:443", False),
        ("evil.net:443", False),
        ("api.openai.com", False),
        ("apiXopenai.com:443", False),  # the dot is escaped
    ],
)
def test_allow_hosts_regex_is_anchored(address: str, intercepted: bool) -> None:
    pattern = ProviderIndex(BUILTIN_PROVIDERS.values()).allow_hosts_regex()
    # mitmproxy matches allow_hosts with re.search against "host:port"
    assert (re.search(pattern, address) is not None) is intercepted


# --------------------------------------------------------------------------------------------
# config


def config_error(data: Mapping[str, Any]) -> str:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve(config.parse(data, "lmk_config.toml"), None)
    return str(caught.value)


def test_unknown_key_is_refused_with_its_toml_path() -> None:
    message = config_error({"proxy": {"listen_prot": 8080}})
    assert "proxy.listen_prot" in message
    assert "unknown key" in message
    message = config_error({"providers": {"openai": {"keys": [], "conect_to": "127.0.0.1:1"}}})
    assert "providers.openai.conect_to" in message


@pytest.mark.parametrize(
    ("data", "path", "value", "expected"),
    [
        ({"proxy": {"listen_port": "eighty"}}, "proxy.listen_port", "'eighty'", "integer"),
        ({"proxy": {"listen_port": 70000}}, "proxy.listen_port", "70000", "65535"),
        (
            {"proxy": {"other_hosts": "allow"}},
            "proxy.other_hosts",
            "'allow'",
            "'tunnel' or 'block'",
        ),
        ({"audit": {"enabled": "maybe"}}, "audit.enabled", "'maybe'", "bool"),
        (
            {"providers": {"openai": {"connect_to": "localhost"}}},
            "providers.openai.connect_to",
            "'localhost'",
            "host:port",
        ),
    ],
)
def test_bad_type_names_path_value_and_expectation(
    data: dict[str, Any], path: str, value: str, expected: str
) -> None:
    message = config_error(data)
    line = next(line for line in message.splitlines() if line.strip().startswith(path + ":"))
    assert value in line
    assert expected in line


def test_unset_key_variable_leaves_provider_without_key_naming_it() -> None:
    settings = config.resolve(config.parse(config_data()), None)
    vectara = settings.providers["vectara"]
    assert vectara.keyring is None
    assert vectara.missing_key is not None
    assert "LMK_UT_VECTARA_UNSET" in vectara.missing_key
    assert "providers.vectara.keys" in vectara.missing_key
    # a provider with a key is ready
    openai = settings.providers["openai"]
    assert openai.keyring is not None and openai.missing_key is None


@pytest.mark.parametrize("prefix", ["", "hf_"])
def test_master_key_in_provider_key_variable_is_not_used_as_real_key(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    # `lmk env` output sourced in the proxy's shell sets OPENAI_API_KEY to a master key.
    leaked = prefix + ALICE_KEY
    monkeypatch.setenv("LMK_UT_OPENAI", leaked)
    settings = config.resolve(config.parse(config_data()), None)
    openai = settings.providers["openai"]
    assert openai.keyring is None
    assert openai.missing_key is not None
    assert "master key" in openai.missing_key
    assert "LMK_UT_OPENAI" in openai.missing_key
    assert ALICE_KEY not in openai.missing_key
    assert leaked not in settings.real_keys


def test_literal_master_key_in_keys_is_not_echoed() -> None:
    data = config_data()
    data["providers"]["openai"] = {"keys": [ALICE_KEY]}
    openai = config.resolve(config.parse(data), None).providers["openai"]
    assert openai.keyring is None
    assert openai.missing_key is not None
    assert ALICE_KEY not in openai.missing_key


def test_user_in_group_without_table_is_refused() -> None:
    data = config_data()
    data["users"]["alice"]["groups"] = ["research", "finance"]
    message = config_error(data)
    assert "users.alice.groups" in message
    assert "[groups.finance]" in message


def test_same_master_key_for_two_users_is_refused() -> None:
    data = config_data()
    data["users"]["eve"] = {"key_sha256": sha(ALICE_KEY)}
    message = config_error(data)
    assert "same key" in message


def test_keyring_hands_out_three_keys_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        monkeypatch.setenv(f"LMK_UT_RR{i}", f"sk-roundrobin-key-{i}-0123456789")
    data = config_data()
    data["providers"]["openai"] = {"keys": ["${LMK_UT_RR0}", "${LMK_UT_RR1}", "${LMK_UT_RR2}"]}
    ring = config.resolve(config.parse(data), None).providers["openai"].keyring
    assert ring is not None
    got = [ring.next() for _ in range(7)]
    assert got == [f"sk-roundrobin-key-{i % 3}-0123456789" for i in range(7)]


SECRET = "sk-proj-NEVERECHOED0123456789abcdefghij"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"providers": {"openai": {"keys": SECRET}}}, id="keys-not-a-list"),
        pytest.param({"providers": {"openai": {"keys": [SECRET, 42]}}}, id="keys-bad-item"),
        pytest.param({"providers": {"openai": {"keys": [{"k": SECRET}]}}}, id="keys-table"),
        pytest.param(
            {"providers": {"vectara": {"extra_headers": SECRET}}}, id="extra-headers-not-a-table"
        ),
        pytest.param(
            {"providers": {"vectara": {"extra_headers": {"x": [SECRET]}}}}, id="extra-header-list"
        ),
        pytest.param(
            {"providers": {"openai": {"keys": [SECRET]}}, "proxy": {"listen_port": "x"}},
            id="valid-keys-next-to-error",
        ),
        pytest.param(
            {"providers": {"newco": {"keys": [SECRET]}}}, id="unknown-provider-without-hosts"
        ),
        pytest.param(
            {"providers": {"openai": {"key": SECRET}}},
            id="misspelt-keys",
        ),
        pytest.param(
            {"providers": {"openai": SECRET}},
            id="provider-not-a-table",
        ),
    ],
)
def test_config_errors_never_contain_a_provider_key(data: dict[str, Any]) -> None:
    message = config_error(data)
    assert "providers." in message or "proxy." in message
    assert SECRET not in message


# --------------------------------------------------------------------------------------------
# credentials


def test_new_master_key_format() -> None:
    made = {credentials.new_master_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key), key
        assert credentials.key_sha256(key) == sha(key)


@pytest.mark.parametrize(
    ("url", "headers", "carrier"),
    [
        ("https://api.openai.com/v1/models", {"Authorization": "Bearer KEY"}, Carrier.BEARER),
        ("https://api.openai.com/v1/models", {"authorization": "bearer KEY "}, Carrier.BEARER),
        ("https://api.anthropic.com/v1/messages", {"x-api-key": "KEY"}, Carrier.X_API_KEY),
        ("https://r.openai.azure.com/openai/x", {"api-key": "KEY"}, Carrier.API_KEY),
        (
            "https://generativelanguage.googleapis.com/v1",
            {"x-goog-api-key": "KEY"},
            Carrier.GOOG_API_KEY,
        ),
        ("https://generativelanguage.googleapis.com/v1?alt=sse&key=KEY", {}, Carrier.QUERY_KEY),
    ],
)
def test_presented_finds_each_carrier(url: str, headers: dict[str, str], carrier: Carrier) -> None:
    assert credentials.presented(request(url, headers)) == [(carrier, "KEY")]


def test_presented_ignores_non_bearer_authorization_and_other_params() -> None:
    req = request("https://api.openai.com/v1/x?monkey=1&keyx=2", {"Authorization": basic("u", "p")})
    assert credentials.presented(req) == []


def test_normalise_strips_hf_prefix_of_master_keys_only() -> None:
    assert credentials.normalise("hf_" + ALICE_KEY) == ALICE_KEY
    assert credentials.normalise(ALICE_KEY) == ALICE_KEY
    assert credentials.normalise(REAL["huggingface"]) == REAL["huggingface"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", ALICE_KEY), ("alice", ALICE_KEY)),
        (basic("alice", "a:b"), ("alice", "a:b")),
        ("basic " + base64.b64encode(b"u:p").decode(), ("u", "p")),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic !!!not-base64", None),
        ("Bearer " + ALICE_KEY, None),
        ("", None),
        (None, None),
    ],
)
def test_proxy_credentials_parses_basic(
    header: str | None, expected: tuple[str, str] | None
) -> None:
    assert credentials.proxy_credentials(header) == expected


def test_scrubber_text_replaces_real_and_master_keys() -> None:
    scrub = credentials.Scrubber([REAL["openai"], REAL["anthropic"]])
    text = (
        f"upstream said: bad key {REAL['openai']}; client sent {ALICE_KEY} "
        f"and hf_{BOB_KEY}, also {REAL['anthropic']}."
    )
    clean = scrub.text(text)
    for secret in (REAL["openai"], REAL["anthropic"], ALICE_KEY, BOB_KEY):
        assert secret not in clean
    assert clean.count("[provider key redacted]") == 2
    assert f"lmk_...{ALICE_KEY[-4:]} (unknown)" in clean
    assert clean.startswith("upstream said: bad key ")
    assert scrub.text("nothing secret here") == "nothing secret here"


def test_scrubber_same_length_keeps_byte_length() -> None:
    scrub = credentials.Scrubber([REAL["openai"]])
    data = json.dumps({"error": f"Incorrect API key {REAL['openai']}", "by": ALICE_KEY}).encode()
    assert scrub.has_secret(data)
    masked = scrub.same_length(data)
    assert len(masked) == len(data)
    assert REAL["openai"].encode() not in masked
    assert ALICE_KEY.encode() not in masked
    assert json.loads(masked)["error"].startswith("Incorrect API key ***")
    assert not scrub.has_secret(masked)


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("shape", list(ErrorShape))
def test_refusal_response_in_each_provider_shape(shape: ErrorShape) -> None:
    resp = refusal_response(shape, Refusal.UNKNOWN_KEY, "the key is wrong")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-lmk-refused"] == "unknown_master_key"
    data = json.loads(resp.content or b"")
    assert assert_shape(shape, data, 401) == "LlaMaKey: the key is wrong"


def test_refusal_body_details() -> None:
    openai = error_body(ErrorShape.OPENAI, 401, "m", "unknown_master_key")
    assert openai["error"] == {
        "message": "m",
        "type": "invalid_request_error",
        "param": None,
        "code": "unknown_master_key",
    }
    anthropic = error_body(ErrorShape.ANTHROPIC, 401, "m", "c")
    assert anthropic["error"] == {"type": "authentication_error", "message": "m"}
    assert error_body(ErrorShape.GOOGLE, 401, "m", "c") == {
        "error": {"code": 401, "message": "m", "status": "UNAUTHENTICATED"}
    }
    assert error_body(ErrorShape.COHERE, 401, "m", "c") == {"message": "m"}
    assert error_body(ErrorShape.HUGGINGFACE, 401, "m", "c") == {"error": "m"}
    assert error_body(ErrorShape.VECTARA, 401, "m", "c")["messages"] == ["m"]


@pytest.mark.parametrize(
    ("refusal", "status", "retry"),
    [
        (Refusal.NO_KEY, 401, "false"),
        (Refusal.DISABLED, 401, "false"),
        (Refusal.MISDIRECTED, 421, "false"),
        (Refusal.NOT_HTTPS, 400, "false"),
        (Refusal.BLOCKED_HOST, 403, "false"),
        (Refusal.NO_PROVIDER_KEY, 500, "false"),  # SDKs retry 5xx unless told not to
        (Refusal.AUDIT_UNAVAILABLE, 503, "true"),
    ],
)
def test_refusal_status_and_retry_hint(refusal: Refusal, status: int, retry: str) -> None:
    resp = refusal_response(ErrorShape.ANTHROPIC, refusal, "x")
    assert resp.status_code == status
    assert resp.headers["x-should-retry"] == retry
    assert ("retry-after" in resp.headers) is (retry == "true")


def test_proxy_auth_required_is_407_with_challenge() -> None:
    resp = proxy_auth_required("need a key")
    assert resp.status_code == 407
    assert resp.headers["Proxy-Authenticate"].startswith("Basic ")


# --------------------------------------------------------------------------------------------
# IdentifyProvider


async def test_identify_tags_provider_flows(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        for url, name in [
            ("https://api.openai.com/v1/chat/completions", "openai"),
            ("https://myres.openai.azure.com/openai/deployments/d/chat/completions", "azure"),
            ("https://generativelanguage.googleapis.com/v1beta/models", "gemini"),
        ]:
            f = provider_flow(url)
            addon.requestheaders(f)
            assert f.response is None
            assert f.metadata[keys.PROVIDER] == name


@pytest.mark.parametrize(
    ("host", "sni", "shape"),
    [
        ("api.anthropic.com", "api.openai.com", ErrorShape.OPENAI),
        ("api.openai.com", "api.anthropic.com", ErrorShape.ANTHROPIC),
        ("api.openai.com", "evil.example.net", ErrorShape.OPENAI),
    ],
)
async def test_identify_refuses_host_sni_mismatch(
    state: GatewayState, host: str, sni: str, shape: ErrorShape
) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(f"https://{host}/v1/messages", {"x-api-key": ALICE_KEY}, sni=sni)
        addon.requestheaders(f)
        assert f.response is not None
        assert f.response.status_code == 421
        assert f.metadata[keys.REFUSED] == Refusal.MISDIRECTED.value
        assert host in assert_shape(shape, body(f), 421)


async def test_identify_refuses_plain_http_to_a_provider(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(
            "http://api.openai.com/v1/models", {"Authorization": f"Bearer {ALICE_KEY}"}, sni=None
        )
        addon.requestheaders(f)
        assert f.response is not None
        assert f.response.status_code == 400
        assert f.metadata[keys.REFUSED] == Refusal.NOT_HTTPS.value
        assert "https://api.openai.com" in body(f)["error"]["message"]


async def test_identify_leaves_other_hosts_alone_in_tunnel_mode(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow("https://example.com/", {"Authorization": "Bearer x"})
        addon.requestheaders(f)
        assert f.response is None
        assert keys.PROVIDER not in f.metadata
        c = connect_flow("example.com:443")
        addon.http_connect(c)
        assert c.response is None


async def test_identify_block_mode_refuses_other_hosts() -> None:
    addon = IdentifyProvider(make_state(config_data(other_hosts="block")))
    with mitm_context(addon):
        f = provider_flow("https://example.com/")
        addon.requestheaders(f)
        assert f.response is not None and f.response.status_code == 403
        assert f.metadata[keys.REFUSED] == Refusal.BLOCKED_HOST.value

        c = connect_flow("example.com:443")
        addon.http_connect(c)
        assert c.response is not None and c.response.status_code == 403
        assert b"example.com" in (c.response.content or b"")

        for authority in ("api.openai.com:443", "myres.openai.azure.com:443"):
            c = connect_flow(authority)
            addon.http_connect(c)
            assert c.response is None
            f = provider_flow(f"https://{authority.split(':')[0]}/v1/x")
            addon.requestheaders(f)
            assert f.response is None


# --------------------------------------------------------------------------------------------
# Authenticate


def authenticate(
    state: GatewayState, f: http.HTTPFlow, auth: Authenticate | None = None
) -> http.HTTPFlow:
    IdentifyProvider(state).requestheaders(f)
    (auth or Authenticate(state)).requestheaders(f)
    return f


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


def fill(url: str, headers: Mapping[str, str], key: str) -> tuple[str, dict[str, str]]:
    return url.replace("{}", key), {k: v.replace("{}", key) for k, v in headers.items()}


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
        marker = f.metadata[keys.MARKER]
        assert marker == f"lmk_...{ALICE_KEY[-4:]} (alice)"
        shown = request_text(f)
        assert ALICE_KEY not in shown
        assert ALICE_KEY[4:] not in shown
        ((carrier, value),) = credentials.presented(f.request)
        assert value == marker
        assert f.metadata[keys.CARRIERS] == [carrier.value]


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
        assert f.request.headers["authorization"] == f"Bearer {f.metadata[keys.MARKER]}"
        assert "(alice)" in f.metadata[keys.MARKER]
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


# --------------------------------------------------------------------------------------------
# KeySwap


def through_request(
    state: GatewayState, f: http.HTTPFlow, swap: KeySwap, auth: Authenticate | None = None
) -> None:
    authenticate(state, f, auth)
    swap.request(f)


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
        assert credentials.presented(f.request) == [(carrier, f.metadata[keys.MARKER])]


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


async def test_keyswap_scrubs_real_key_echoed_in_provider_error(state: GatewayState) -> None:
    swap = KeySwap(state)
    with mitm_context(swap):
        f = provider_flow(
            "https://api.openai.com/v1/chat/completions", {"Authorization": f"Bearer {ALICE_KEY}"}
        )
        through_request(state, f, swap)
        echoed = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {REAL['openai']}.",
                    "code": "invalid_api_key",
                }
            }
        ).encode()
        f.response = http.Response.make(401, echoed, {"content-type": "application/json"})
        swap.responseheaders(f)
        swap.response(f)
        assert f.response.raw_content is not None
        assert REAL["openai"].encode() not in f.response.raw_content
        assert len(f.response.raw_content) == len(echoed)
        assert body(f)["error"]["code"] == "invalid_api_key"


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
        assert f.request.headers["x-api-key"] == f.metadata[keys.MARKER]


# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Redact


def test_log_records_are_scrubbed(
    state: GatewayState, caplog: pytest.LogCaptureFixture, isolated_log_scrubber: None
) -> None:
    redact.install_log_scrubber(state)
    with caplog.at_level(logging.INFO, logger="x"):
        logging.getLogger("x").warning("upstream refused %s sent for %s", REAL["openai"], ALICE_KEY)
        logging.getLogger("x").info(f"literal {REAL['gemini']} and hf_{BOB_KEY}")
        logging.getLogger("x").info("nothing to hide: %d tokens", 12)
    messages = [r.getMessage() for r in caplog.records if r.name == "x"]
    assert len(messages) == 3
    text = "\n".join(messages) + caplog.text
    for secret in (REAL["openai"], REAL["gemini"], ALICE_KEY, BOB_KEY):
        assert secret not in text
    assert (
        messages[0]
        == f"upstream refused [provider key redacted] sent for lmk_...{ALICE_KEY[-4:]} (unknown)"
    )
    assert messages[2] == "nothing to hide: 12 tokens"


def test_log_scrubber_follows_a_reloaded_configuration(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, isolated_log_scrubber: None
) -> None:
    state = make_state()
    redact.install_log_scrubber(state)
    rotated = "sk-proj-ROTATEDkey0123456789abcdefghijk"
    monkeypatch.setenv("LMK_UT_OPENAI", rotated)
    state.install(config.resolve(config.parse(config_data()), None))
    with caplog.at_level(logging.INFO, logger="x"):
        logging.getLogger("x").warning("key %s", rotated)
    assert rotated not in caplog.text


async def test_redact_replaces_proxyauth_password_in_metadata(state: GatewayState) -> None:
    addon = redact.Redact(state)
    with mitm_context():
        f = provider_flow("https://api.openai.com/v1/models")
        f.metadata["proxyauth"] = ("alice", ALICE_KEY)
        f.metadata[keys.MARKER] = credentials.marker(ALICE_KEY, "alice")
        addon.requestheaders(f)
        assert f.metadata["proxyauth"] == ("alice", f.metadata[keys.MARKER])


# --------------------------------------------------------------------------------------------
# ConfigLoader


def toml_config(*users: tuple[str, str]) -> str:
    lines = [
        'certs_dir = "certs"',
        "",
    ]
    text = "[proxy]\n" + "\n".join(lines)
    text += '[providers.openai]\nkeys = ["${LMK_UT_OPENAI}"]\n\n[groups.research]\n\n'
    for name, key in users:
        text += f'[users.{name}]\nkey_sha256 = "{sha(key)}"\ngroups = ["research"]\n\n'
    return text


def rewrite(path: Path, text: str) -> None:
    """Write and move the mtime on, so a change is seen even within one clock tick."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


async def test_config_loader_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "lmk_config.toml"
    path.write_text(toml_config(("alice", ALICE_KEY)), encoding="utf-8")
    state = GatewayState()
    loader = ConfigLoader(state)
    auth = Authenticate(state)
    onboard = onboarding.Onboarding()  # type: ignore[no-untyped-call]
    with mitm_context(onboard, loader) as tctx:
        tctx.configure(loader, lmk_config=str(path))
        first = state.settings
        assert first is not None
        assert tctx.options.allow_hosts == [first.index.allow_hosts_regex()]
        assert auth.lookup(ALICE_KEY) is not None
        assert auth.lookup(BOB_KEY) is None
        assert await loader.reload_if_changed() is False  # nothing changed

        # A valid edit takes effect: bob is accepted.
        rewrite(path, toml_config(("alice", ALICE_KEY), ("bob", BOB_KEY)))
        assert await loader.reload_if_changed() is True
        second = state.settings
        assert second is not first
        user = auth.lookup(BOB_KEY)
        assert user is not None and user.name == "bob"

        # An invalid edit is refused with a logged error, and the running config stays.
        rewrite(path, toml_config(("alice", ALICE_KEY)) + "[proxy_typo]\nlisten_port = 1\n")
        with caplog.at_level(logging.ERROR):
            assert await loader.reload_if_changed() is False
        assert state.settings is second
        user = auth.lookup(BOB_KEY)
        assert user is not None and user.name == "bob"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "not reloaded" in errors[0]
        assert "proxy_typo" in errors[0]

        # Not valid TOML at all: same.
        rewrite(path, "[proxy\n")
        assert await loader.reload_if_changed() is False
        assert state.settings is second


# --------------------------------------------------------------------------------------------
# Meter: answers of unknown size pass through chunk by chunk, and are still metered


async def test_chunked_plain_answer_streams_and_is_metered(state: GatewayState) -> None:
    from llamakey.steps.meter import USAGE, Meter

    meter = Meter(state)
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/chat/completions", content=body)
        f.metadata.update({keys.PROVIDER: "openai", keys.USER: "alice"})
        meter.request(f)
        answer = json.dumps(
            {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}
        ).encode()
        f.response = http.Response.make(200, b"", {"content-type": "application/json"})
        del f.response.headers["content-length"]  # chunked: size unknown
        meter.responseheaders(f)
        tap = f.response.stream
        assert callable(tap), "an answer of unknown size must not be buffered"
        halves = [answer[:20], answer[20:]]
        assert [tap(part) for part in halves] == halves  # forwarded as they come
        tap(b"")
        meter.response(f)
    assert f.metadata[USAGE]["input_tokens"] == 11
    assert f.metadata[USAGE]["output_tokens"] == 5


async def test_plain_answer_of_known_size_is_read_whole(state: GatewayState) -> None:
    from llamakey.steps.meter import Meter

    meter = Meter(state)
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/embeddings", content=b'{"model":"m"}')
        f.metadata.update({keys.PROVIDER: "openai", keys.USER: "alice"})
        meter.request(f)
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        meter.responseheaders(f)
        assert f.response.stream is False
