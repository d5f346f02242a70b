"""Step: load and reload the configuration."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from mitmproxy.addons import onboarding

from llamakey.files import write_atomically
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


# The users file: reloaded like the config


def users_toml(*users: tuple[str, str], extra: str = "") -> str:
    text = "# our users\n"
    for name, key in users:
        text += f'[users.{name}]\nkey_sha256 = "{sha(key)}"\ngroups = ["research"]\n{extra}\n'
    return text


async def test_config_loader_reloads_the_users_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lmk_config.toml"
    path.write_text(toml_config(), encoding="utf-8")
    config_bytes = path.read_bytes()
    users = tmp_path / "lmk_users.toml"
    state = GatewayState()
    loader = ConfigLoader(state)
    with mitm_context(loader) as tctx:
        # No users file yet: no users.
        tctx.configure(loader, lmk_config=str(path))
        assert state.settings is not None and state.settings.users_by_hash == {}
        assert await loader.reload_if_changed() is False

        # The file appears: alice is accepted.
        write_atomically(users, users_toml(("alice", ALICE_KEY)), 0o600)
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is not None
        assert await loader.reload_if_changed() is False

        # A new key of the same length: the same size, maybe the same clock tick, but the file
        # was replaced (a new inode), so it is seen.
        write_atomically(users, users_toml(("alice", BOB_KEY)), 0o600)
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is None
        user = state.master_keys.find(BOB_KEY)
        assert user is not None and user.name == "alice"

        # Disabled: still found (authenticate refuses it as disabled).
        rewrite(users, users_toml(("alice", BOB_KEY), extra="disabled = true"))
        assert await loader.reload_if_changed() is True
        user = state.master_keys.find(BOB_KEY)
        assert user is not None and user.disabled
        running = state.settings

        # An invalid users file is refused with a logged error; the running users stay.
        caplog.clear()
        rewrite(users, users_toml(("alice", ALICE_KEY), extra="colour = 1"))
        with caplog.at_level(logging.ERROR):
            assert await loader.reload_if_changed() is False
        assert state.settings is running
        assert state.master_keys.find(BOB_KEY) is not None
        (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert "not reloaded" in error
        assert str(users) in error and "users.alice.colour" in error
        assert await loader.reload_if_changed() is False  # not read again until it changes

        # A user naming a group the config does not define: refused, naming both files.
        caplog.clear()
        rewrite(users, users_toml(("alice", ALICE_KEY)).replace("research", "finance"))
        with caplog.at_level(logging.ERROR):
            assert await loader.reload_if_changed() is False
        (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert "[groups.finance]" in error and str(path) in error and str(users) in error
        assert state.settings is running

        # Fixed: taken.
        rewrite(users, users_toml(("alice", ALICE_KEY)))
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is not None

        # The users file removed: nobody is let in.
        users.unlink()
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is None
        assert path.read_bytes() == config_bytes  # none of this touched the config


async def test_config_loader_follows_the_users_file_setting_and_the_both_files_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lmk_config.toml"
    path.write_text(toml_config(), encoding="utf-8")
    (tmp_path / "lmk_users.toml").write_text(users_toml(("alice", ALICE_KEY)), encoding="utf-8")
    other = tmp_path / "team.toml"
    other.write_text(users_toml(("bob", BOB_KEY)), encoding="utf-8")
    state = GatewayState()
    loader = ConfigLoader(state)
    with mitm_context(loader) as tctx:
        tctx.configure(loader, lmk_config=str(path))
        assert state.master_keys.find(ALICE_KEY) is not None

        # The config names another users file: its users replace the first file's.
        rewrite(path, toml_config().replace("[proxy]\n", '[proxy]\nusers_file = "team.toml"\n'))
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is None
        assert state.master_keys.find(BOB_KEY) is not None
        assert await loader.reload_if_changed() is False
        # ... and a change of that file is seen.
        rewrite(other, users_toml(("bob", BOB_KEY), ("alice", ALICE_KEY)))
        assert await loader.reload_if_changed() is True
        assert state.master_keys.find(ALICE_KEY) is not None
        running = state.settings

        # bob in the config's [users] too: refused, naming both files; the running users stay.
        caplog.clear()
        text = path.read_text(encoding="utf-8") + f'[users.bob]\nkey_sha256 = "{"b" * 64}"\n'
        rewrite(path, text)
        with caplog.at_level(logging.ERROR):
            assert await loader.reload_if_changed() is False
        (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert f"users.bob is in both {path} and {other}" in error
        assert state.settings is running
