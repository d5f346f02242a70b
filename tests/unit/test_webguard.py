"""`lmk web`'s option guard: outside its allow-list no option changes once sealed, except what
the config loader applies; a refused update is rolled back whole."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import exceptions

from llamakey import webguard
from llamakey.webguard import OptionGuard
from tests.unit.builders import mitm_context

ALLOWED = frozenset({"showhost"})


async def test_sealed_guard_refuses_options_outside_the_allow_list() -> None:
    guard = OptionGuard()
    with mitm_context(guard) as tctx:
        guard.seal(ALLOWED)
        for change in (
            {"ssl_insecure": True},
            {"mode": ["upstream:http://127.0.0.1:1"]},
            {"listen_host": "0.0.0.0"},
            {"allow_hosts": [".*"]},
            {"confdir": "/tmp"},
        ):
            with pytest.raises(exceptions.OptionsError, match="does not let") as refused:
                tctx.options.update(**change)
            assert next(iter(change)) in str(refused.value)
            assert "showhost" in str(refused.value)  # what may change instead
        assert tctx.options.ssl_insecure is False
        assert tctx.options.mode == ["regular"]
        assert tctx.options.allow_hosts == []


async def test_a_refused_update_is_rolled_back_whole() -> None:
    guard = OptionGuard()
    with mitm_context(guard) as tctx:
        guard.seal(ALLOWED)
        with pytest.raises(exceptions.OptionsError):
            tctx.options.update(showhost=True, ssl_insecure=True)
        assert tctx.options.showhost is False
        tctx.options.update(showhost=True)  # alone, the allowed one changes
        assert tctx.options.showhost is True


async def test_unchanged_values_and_unsealed_changes_pass() -> None:
    guard = OptionGuard()
    with mitm_context(guard) as tctx:
        tctx.options.update(confdir="/before/seal")  # the server's own start-up settings
        guard.seal(ALLOWED)
        tctx.options.update(confdir="/before/seal", allow_hosts=[])  # no change: no refusal
        with pytest.raises(exceptions.OptionsError):
            tctx.options.update(confdir="/after/seal")
        assert tctx.options.confdir == "/before/seal"


async def test_trusted_changes_are_accepted_and_then_pinned() -> None:
    guard = OptionGuard()
    with mitm_context(guard) as tctx:
        guard.seal(ALLOWED)

        def apply_config(hosts: list[str]) -> str:
            tctx.options.update(allow_hosts=hosts)
            return "applied"

        trusted = guard.trusted(apply_config)
        assert trusted([r"^api\.openai\.com:443$"]) == "applied"
        assert tctx.options.allow_hosts == [r"^api\.openai\.com:443$"]
        with pytest.raises(exceptions.OptionsError):
            tctx.options.update(allow_hosts=[".*"])  # untrusted again once it returned
        tctx.options.update(allow_hosts=[r"^api\.openai\.com:443$"])  # the pinned value


def test_refusal_is_one_line_naming_options_and_allowed_ones() -> None:
    message = webguard.refusal(["scripts", "map_remote"], webguard.UI_OPTIONS)
    assert "\n" not in message
    assert message.startswith("lmk web does not let map_remote, scripts change")
    assert "web_columns" in message


def test_allow_lists_hold_no_option_that_steers_traffic() -> None:
    steering = {
        "map_remote",
        "map_local",
        "modify_headers",
        "modify_body",
        "scripts",
        "mode",
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "upstream_cert",
        "allow_hosts",
        "ignore_hosts",
        "listen_host",
        "listen_port",
        "connection_strategy",
        "confdir",
        "client_certs",
        "certs",
        "upstream_auth",
        "proxyauth",
        "block_global",
        "lmk_config",
        "rfile",
        "server_replay",
        "intercept",
    }
    assert not steering & webguard.START_OPTIONS
    assert webguard.UI_OPTIONS <= webguard.START_OPTIONS
    assert "save_stream_file" not in webguard.UI_OPTIONS  # a file path: at start only
    assert "set" not in webguard.SAFE_COMMANDS and "script.run" not in webguard.SAFE_COMMANDS


def test_hidden_secret_never_reaches_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    secret = "tok-" + "Q" * 20
    webguard.hide_in_logs(secret)
    with caplog.at_level(logging.INFO):
        logging.getLogger("tornado.access").warning("403 GET /flows?token=%s (127.0.0.1)", secret)
        logging.getLogger("x").info(f"plain {secret} text")
    assert secret not in caplog.text
    assert caplog.text.count("[mitmweb token]") == 2
