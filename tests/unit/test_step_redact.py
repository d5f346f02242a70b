"""Step: redact logs and flow metadata."""

from __future__ import annotations

import logging

import pytest

from llamakey import config, credentials
from llamakey.state import GatewayState
from llamakey.steps import redact
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    REAL,
    config_data,
    make_state,
    mitm_context,
    provider_flow,
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
