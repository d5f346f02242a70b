"""Saved flows (`lmk serve -w FILE`) hold no secret, wherever a client put its master key and
whatever the provider echoed back: refused or served, in any header, the target or the body."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mitmproxy import http, io

from tests.conftest import make_gateway
from tests.e2e.test_attacks import basic, exchange, raw_request, send, tunnel
from tests.harness import REAL_KEYS, Gateway, wait_until
from tests.mock_upstream import MockUpstream


@dataclass
class Saved:
    gateway: Gateway
    path: Path
    statuses: dict[str, int]  # what each attack got, by name


def _attacks(gateway: Gateway) -> dict[str, int]:
    """alice's full master key everywhere a client could put it; what each request got."""
    key = gateway.keys["alice"]
    auth = ("Authorization", f"Bearer {key}")
    json_type = ("Content-Type", "application/json")
    chat = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    openai, gemini = "api.openai.com", "generativelanguage.googleapis.com"
    got: dict[str, int] = {}
    # Refused: the request names another provider than its tunnel.
    got["misdirected"] = send(
        gateway, "api.anthropic.com", "GET", "/v1/models", [auth], connect_host=openai
    ).status
    # A tab after "Bearer": no credential we recognise, but the key is there.
    tabbed = ("Authorization", f"Bearer\t{key}")
    got["tabbed bearer"] = send(gateway, openai, "GET", "/v1/models", [tabbed]).status
    # `?%6bey=` is `?key=` percent-encoded.
    got["percent-encoded query"] = send(
        gateway, gemini, "GET", f"/v1beta/models?%6bey={key}", []
    ).status
    # An obs-folded header (RFC 9112 5.2): the key on a continuation line; served.
    folded = ("X-Note", f"see:\r\n {key}")
    got["obs-fold"] = send(gateway, openai, "GET", "/v1/models", [auth, folded]).status
    # A custom header, on a request that goes upstream.
    custom = ("X-My-Token", key)
    got["custom header"] = send(gateway, openai, "GET", "/v1/models", [auth, custom]).status
    # The body, on a request that goes upstream.
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"my key is {key}"}]}
    ).encode()
    got["body"] = send(
        gateway, openai, "POST", "/v1/chat/completions", [auth, json_type], body
    ).status
    # The provider echoes the real key back, in the body and in headers.
    for name, knob in (
        ("echoed", ("x-mock-echo-auth", "1")),
        ("echoed in a header", ("x-mock-echo-key", "header")),
    ):
        headers: list[tuple[str, str | bytes]] = [auth, json_type, knob]
        got[name] = send(
            gateway, openai, "POST", "/v1/chat/completions", headers, chat.encode()
        ).status
    # Proxy credentials on the CONNECT, and the key again in the body of a refused request.
    sock = tunnel(gateway, openai, sni=openai, proxy_authorization=basic(f"alice:{key}"))
    wrong = "lmk_" + "m" * 43
    request = raw_request(
        "POST",
        "/v1/chat/completions",
        [("Host", openai), ("x-api-key", wrong)],
        f'{{"api_key": "{key}"}}'.encode(),
    )
    got["proxy credentials"] = exchange(sock, request, "POST").status
    return got


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Saved]:
    tmp = tmp_path_factory.mktemp("saved")
    path = tmp / "flows" / "saved.flows"
    path.parent.mkdir()
    gateway = make_gateway(tmp / "gw", mock, extra_args=("-w", str(path)))
    gateway.start()
    try:
        mock.clear()
        statuses = _attacks(gateway)
        wait_until(lambda: path.exists() and path.stat().st_size > 0, "the saved flows file")
    finally:
        gateway.stop()
    yield Saved(gateway, path, statuses)


def _secrets(gateway: Gateway) -> dict[str, bytes]:
    key = gateway.keys["alice"]
    found = {"alice's master key": key.encode(), "its tail after lmk_": key[4:].encode()}
    found |= {f"{name}'s real key": real.encode() for name, real in REAL_KEYS.items()}
    # A key in proxy credentials travels base64-encoded.
    found["alice:KEY base64"] = base64.b64encode(f"alice:{key}".encode())
    return found


def _flow_blobs(flow: http.HTTPFlow) -> list[tuple[str, bytes]]:
    """What a reader of the saved flow sees, decoded (headers, target, bodies, metadata)."""
    request = flow.request
    blobs = [
        ("request headers", b"\n".join(k + b": " + v for k, v in request.headers.fields)),
        ("target", request.data.path + b" " + (request.data.authority or b"")),
        ("request body", request.get_content(strict=False) or b""),
        ("metadata", repr(flow.metadata).encode()),
    ]
    if flow.response is not None:
        response = flow.response
        blobs += [
            ("response headers", b"\n".join(k + b": " + v for k, v in response.headers.fields)),
            ("response body", response.get_content(strict=False) or b""),
        ]
    return blobs


def test_saved_flows_hold_no_secret(saved: Saved) -> None:
    statuses = saved.statuses
    assert statuses["misdirected"] == 421
    assert statuses["tabbed bearer"] == 401
    assert statuses["percent-encoded query"] == 401
    assert statuses["obs-fold"] == statuses["custom header"] == statuses["body"] == 200
    assert statuses["echoed"] == 401 and statuses["echoed in a header"] == 302
    assert statuses["proxy credentials"] == 200  # the tunnel's credentials identify alice

    raw = saved.path.read_bytes()
    with saved.path.open("rb") as file:
        flows = [f for f in io.FlowReader(file).stream() if isinstance(f, http.HTTPFlow)]
    paths = {f.request.path for f in flows}
    assert len([f for f in flows if f.request.method != "CONNECT"]) >= len(statuses), paths
    leaks = [
        f"{secret} in the file's bytes"
        for secret, value in _secrets(saved.gateway).items()
        if value in raw
    ]
    for flow in flows:
        for where, blob in _flow_blobs(flow):
            leaks += [
                f"{secret} in the {where} of {flow.request.method} {flow.request.pretty_url}"
                for secret, value in _secrets(saved.gateway).items()
                if value in blob
            ]
    assert leaks == []


def test_saved_flows_file_is_private(saved: Saved) -> None:
    assert oct(saved.path.stat().st_mode & 0o777) == "0o600"
