"""Step: load and reload the configuration."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from mitmproxy.addons import onboarding

from llamakey.state import GatewayState
from llamakey.steps.configload import ConfigLoader
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    mitm_context,
    sha,
)

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
    onboard = onboarding.Onboarding()  # type: ignore[no-untyped-call]
    with mitm_context(onboard, loader) as tctx:
        tctx.configure(loader, lmk_config=str(path))
        first = state.settings
        assert first is not None
        assert tctx.options.allow_hosts == [first.index.allow_hosts_regex()]
        assert state.master_keys.find(ALICE_KEY) is not None
        assert state.master_keys.find(BOB_KEY) is None
        assert await loader.reload_if_changed() is False  # nothing changed

        # A valid edit takes effect: bob is accepted.
        rewrite(path, toml_config(("alice", ALICE_KEY), ("bob", BOB_KEY)))
        assert await loader.reload_if_changed() is True
        second = state.settings
        assert second is not first
        user = state.master_keys.find(BOB_KEY)
        assert user is not None and user.name == "bob"

        # An invalid edit is refused with a logged error, and the running config stays.
        rewrite(path, toml_config(("alice", ALICE_KEY)) + "[proxy_typo]\nlisten_port = 1\n")
        with caplog.at_level(logging.ERROR):
            assert await loader.reload_if_changed() is False
        assert state.settings is second
        user = state.master_keys.find(BOB_KEY)
        assert user is not None and user.name == "bob"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "not reloaded" in errors[0]
        assert "proxy_typo" in errors[0]

        # Not valid TOML at all: same.
        rewrite(path, "[proxy\n")
        assert await loader.reload_if_changed() is False
        assert state.settings is second
