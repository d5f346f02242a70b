"""Shared builders for the unit tests: a configuration, flows as clients send them, checks."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mitmproxy import connection, http
from mitmproxy.test import taddons, tflow

from llamakey import config, credentials
from llamakey.providers import ErrorShape
from llamakey.state import GatewayState
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.authorize import Authorize
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


def make_state(data: Mapping[str, Any] | None = None) -> GatewayState:
    state = GatewayState()
    state.install(config.resolve(config.parse(data or config_data()), None))
    return state


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
    connect: tuple[str, int] | None = None,
) -> http.HTTPFlow:
    """A request inside an intercepted TLS tunnel to `connect` (default: the URL's host and
    port); `sni=True` uses the URL's host."""
    req = request(url, headers, content)
    f = tflow.tflow(req=req, client_conn=client)
    f.client_conn.sni = req.host if sni is True else (sni or None)
    f.server_conn.address = connect or (req.host, req.port)  # the tunnel's CONNECT target
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


def authenticate(
    state: GatewayState, f: http.HTTPFlow, auth: Authenticate | None = None
) -> http.HTTPFlow:
    IdentifyProvider(state).requestheaders(f)
    (auth or Authenticate(state)).requestheaders(f)
    return f


def fill(url: str, headers: Mapping[str, str], key: str) -> tuple[str, dict[str, str]]:
    return url.replace("{}", key), {k: v.replace("{}", key) for k, v in headers.items()}


def through_request(
    state: GatewayState, f: http.HTTPFlow, swap: KeySwap, auth: Authenticate | None = None
) -> None:
    authenticate(state, f, auth)
    cleared(state, f)
    swap.request(f)


def cleared(state: GatewayState, f: http.HTTPFlow) -> None:
    """The steps between authenticate and the key swap: identify the request, authorize it,
    and (as WriteAhead does once its row is committed; its own tests cover that) audit it."""
    IdentifyProvider(state).request(f)
    Authorize(state).request(f)
    if f.response is None:
        state.flows(f).audited = True
