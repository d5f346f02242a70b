"""Master keys, credential carriers and the scrubber."""

from __future__ import annotations

import base64
import json
import re

import pytest

from llamakey import credentials
from llamakey.providers import Carrier
from llamakey.scrub import Scrubber
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    REAL,
    basic,
    request,
    sha,
)

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
    scrub = Scrubber([REAL["openai"], REAL["anthropic"]])
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
    scrub = Scrubber([REAL["openai"]])
    data = json.dumps({"error": f"Incorrect API key {REAL['openai']}", "by": ALICE_KEY}).encode()
    assert scrub.has_secret(data)
    masked = scrub.same_length(data)
    assert len(masked) == len(data)
    assert REAL["openai"].encode() not in masked
    assert ALICE_KEY.encode() not in masked
    assert json.loads(masked)["error"].startswith("Incorrect API key ***")
    assert not scrub.has_secret(masked)


def test_the_websocket_subprotocol_is_a_carrier() -> None:
    from mitmproxy import http

    key = credentials.new_master_key()
    header = f"realtime, openai-insecure-api-key.{key}, openai-beta.realtime-v1"
    req = http.Request.make(
        "GET",
        "https://api.openai.com/v1/realtime",
        b"",
        http.Headers(sec_websocket_protocol=header),
    )
    assert credentials.presented(req) == [(Carrier.WS_PROTOCOL, key)]
    credentials.set_credential(req, Carrier.WS_PROTOCOL, "sk-real")
    protocols = [p.strip() for p in req.headers["sec-websocket-protocol"].split(",")]
    assert protocols == ["realtime", "openai-beta.realtime-v1", "openai-insecure-api-key.sk-real"]
    credentials.clear_credentials(req, [Carrier.WS_PROTOCOL])
    assert req.headers["sec-websocket-protocol"] == "realtime, openai-beta.realtime-v1"
    plain = http.Request.make(
        "GET", "https://x/", b"", http.Headers(sec_websocket_protocol="realtime")
    )
    assert credentials.presented(plain) == []
