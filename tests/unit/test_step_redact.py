"""Step: redact logs and flow metadata."""

from __future__ import annotations

import json
import logging

import pytest
from mitmproxy import http

from llamakey import config, credentials
from llamakey.state import GatewayState
from llamakey.steps import redact
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.keyswap import KeySwap
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    REAL,
    body,
    config_data,
    make_state,
    mitm_context,
    provider_flow,
    request_text,
    through_request,
)

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
        state.flows(f).marker = credentials.marker(ALICE_KEY, "alice")
        addon.requestheaders(f)
        assert f.metadata["proxyauth"] == ("alice", state.flows(f).marker)


async def test_real_key_echoed_in_provider_error_is_masked(state: GatewayState) -> None:
    swap, redact_step = KeySwap(state), redact.Redact(state)
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
        redact_step.responseheaders(f)
        swap.response(f)
        redact_step.response(f)
        assert f.response.raw_content is not None
        assert REAL["openai"].encode() not in f.response.raw_content
        assert len(f.response.raw_content) == len(echoed)
        assert body(f)["error"]["code"] == "invalid_api_key"


async def test_real_key_echoed_in_a_compressed_body_and_in_headers_is_masked(
    state: GatewayState,
) -> None:
    redact_step = redact.Redact(state)
    with mitm_context():
        f = provider_flow("https://generativelanguage.googleapis.com/v1beta/models")
        key = REAL["gemini"]
        f.response = http.Response.make(
            302, b"", {"location": f"https://example.com/next?key={key}", "x-echo": key}
        )
        f.response.headers["content-encoding"] = "gzip"
        f.response.content = json.dumps({"error": {"message": f"bad key {key}"}}).encode()
        redact_step.responseheaders(f)
        redact_step.response(f)
        assert key not in str(f.response.headers)
        assert key.encode() not in (f.response.content or b"")
        assert f.response.headers["content-encoding"] == "gzip"  # still a valid gzip body


@pytest.mark.parametrize(
    "place",
    ["header", "tabbed bearer", "folded", "encoded query name", "encoded key", "body"],
)
async def test_master_key_anywhere_in_a_refused_request_is_masked(
    state: GatewayState, place: str
) -> None:
    """A refused flow (here: misdirected) never passes authentication, yet no key survives."""
    redact_step = redact.Redact(state)
    with mitm_context():
        url = "https://api.openai.com/v1/models"
        f = provider_flow(url, connect=("api.groq.com", 443))
        match place:
            case "header":
                f.request.headers["x-custom"] = ALICE_KEY
            case "tabbed bearer":
                f.request.headers["authorization"] = f"Bearer\t{ALICE_KEY}"
            case "folded":
                f.request.headers.fields += ((b"x-folded", f"a,\r\n {ALICE_KEY}".encode()),)
            case "encoded query name":
                f.request.path = f"/v1/models?%6bey={ALICE_KEY}"
            case "encoded key":
                f.request.path = "/v1/models?key=" + "".join(
                    f"%{b:02x}" for b in ALICE_KEY.encode()
                )
            case "body":
                f.request.content = json.dumps({"note": ALICE_KEY}).encode()
        IdentifyProvider(state).requestheaders(f)
        assert f.response is not None and f.response.status_code == 421
        redact_step.requestheaders(f)
        redact_step.request(f)
        shown = request_text(f) + f.request.path + str(f.request.content)
        assert ALICE_KEY not in shown
        assert ALICE_KEY not in f.request.path.replace("%", "")


@pytest.mark.parametrize("from_client", [True, False])
async def test_websocket_messages_are_masked_both_ways(
    state: GatewayState, from_client: bool
) -> None:
    from mitmproxy import websocket
    from mitmproxy.test import tflow

    redact_step = redact.Redact(state)
    f = tflow.twebsocketflow()
    secret = ALICE_KEY if from_client else REAL["openai"]
    text = json.dumps({"type": "session.update", "note": f"key {secret}"}).encode()
    f.websocket.messages.append(websocket.WebSocketMessage(1, from_client, text))  # type: ignore[union-attr]
    with mitm_context():
        redact_step.websocket_message(f)
    sent = f.websocket.messages[-1].content  # type: ignore[union-attr]
    assert secret.encode() not in sent and len(sent) == len(text)
    json.loads(sent)  # still well-formed
