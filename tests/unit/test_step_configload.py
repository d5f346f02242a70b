"""Step: load and reload the configuration."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.addons import onboarding

from llamakey import ca
from llamakey.files import write_atomically
from llamakey.state import GatewayState
from llamakey.steps import configload
from llamakey.steps.configload import ConfigLoader
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    CAROL_KEY,
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


def reloaded_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Configuration reload")
    ]
    return line


async def test_a_reload_says_what_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lmk_config.toml"
    base = toml_config(("alice", ALICE_KEY), ("carol", CAROL_KEY))
    path.write_text(base, encoding="utf-8")
    state = GatewayState()
    loader = ConfigLoader(state)
    with mitm_context(loader) as tctx:
        tctx.configure(loader, lmk_config=str(path))

        # bob joins, carol leaves, alice changes group; a provider gains a key, another loses
        # it; two other settings change.
        monkeypatch.setenv("LMK_UT_GROQ_ONLY", "gsk_UNITgroqKEY0123456789abcdefghijkl")
        edited = (
            toml_config(("alice", ALICE_KEY), ("bob", BOB_KEY))
            .replace(
                '[providers.openai]\nkeys = ["${LMK_UT_OPENAI}"]',
                '[providers.openai]\nkeys = ["${LMK_UT_UNSET_HERE}"]\n'
                'connect_to = "127.0.0.1:9443"\n\n'
                '[providers.groq]\nkeys = ["${LMK_UT_GROQ_ONLY}"]',
            )
            .replace('certs_dir = "certs"', 'certs_dir = "certs"\nother_hosts = "block"')
            .replace("[groups.research]", "[groups.research]\n\n[groups.ops]")
            .replace(
                '[users.alice]\nkey_sha256 = "' + sha(ALICE_KEY) + '"\ngroups = ["research"]',
                '[users.alice]\nkey_sha256 = "' + sha(ALICE_KEY) + '"\ngroups = ["ops"]',
            )
        )
        edited += '[prices."my-model.v2"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
        rewrite(path, edited)
        with caplog.at_level(logging.INFO):
            assert await loader.reload_if_changed() is True
        assert reloaded_line(caplog) == (
            f"Configuration reloaded from {path}: users added: bob; users removed: carol; "
            "users changed: alice; providers with keys gained: groq; providers with keys lost: "
            'openai; other settings changed: groups.ops, prices."my-model.v2", '
            "providers.groq, providers.openai.connect_to, proxy.other_hosts"
        )
        for secret in ("gsk_UNIT", sha(BOB_KEY)[:12], sha(ALICE_KEY)[:12]):
            assert secret not in caplog.text

        # Touched but the same: it says so.
        caplog.clear()
        rewrite(path, edited)
        with caplog.at_level(logging.INFO):
            assert await loader.reload_if_changed() is True
        assert reloaded_line(caplog).endswith(": no change in effect")

        # [jwt] added, then one of its settings changed; the JWKS cache outlives a reload.
        jwt = (
            '\n[jwt]\nissuer = "https://idp.example"\naudience = ["lmk"]\n'
            'algorithms = ["RS256"]\njwks_url = "https://idp.example/keys"\n'
        )
        for text, said in (
            (edited + jwt, "other settings changed: jwt"),
            (edited + jwt.replace('["lmk"]', '["lmk2"]'), "other settings changed: jwt.audience"),
        ):
            before = state.jwt
            caplog.clear()
            rewrite(path, text)
            with caplog.at_level(logging.INFO):
                assert await loader.reload_if_changed() is True
            assert reloaded_line(caplog).endswith(said)
        assert state.jwt is not None and before is not None and state.jwt.keys is before.keys


async def test_the_proxy_warns_of_a_literal_key_at_start_never_showing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    literal = "sk-proj-LITERALinTHEfile0123456789abcdef"
    path = tmp_path / "lmk_config.toml"
    text = toml_config(("alice", ALICE_KEY)).replace(
        'keys = ["${LMK_UT_OPENAI}"]', f'keys = ["{literal}"]'
    )
    path.write_text(text, encoding="utf-8")
    loader = ConfigLoader(GatewayState())
    with mitm_context(loader) as tctx, caplog.at_level(logging.WARNING):
        tctx.configure(loader, lmk_config=str(path))
    (warning,) = [r for r in caplog.records if "literal key" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        f"providers.openai.keys[0] in {path} is a literal key, not a ${{VAR}} reference"
    )
    assert 'keys = ["${OPENAI_API_KEY}"]' in warning.getMessage()
    assert literal not in caplog.text and literal[-8:] not in caplog.text


@pytest.fixture
def running_loader(tmp_path: Path) -> Iterator[tuple[ConfigLoader, Path]]:
    path = tmp_path / "lmk_config.toml"
    path.write_text(toml_config(("alice", ALICE_KEY)), encoding="utf-8")
    loader = ConfigLoader(GatewayState())
    with mitm_context(loader) as tctx:
        tctx.configure(loader, lmk_config=str(path))
        yield loader, tmp_path / "certs"


def ca_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_ca_file_removed_under_the_proxy_is_an_error_at_once(
    running_loader: tuple[ConfigLoader, Path], caplog: pytest.LogCaptureFixture
) -> None:
    loader, certs = running_loader
    assert await loader.check_ca() == []  # nothing changed: nothing said
    (certs / ca.CA_KEY_FILE).unlink()
    with caplog.at_level(logging.INFO):
        problems = await loader.check_ca()
        assert await loader.check_ca() == problems  # said once, not at every poll
    (error,) = ca_errors(caplog)
    assert error.startswith(f"The CA files in {certs} changed under the running proxy")
    assert "clients will fail" in error
    assert f"{certs / ca.CA_KEY_FILE} (the CA's private key) is missing" in error
    assert "lmk ca init --force" in error and "Restore the file" in error


async def test_a_reload_does_not_replace_a_missing_ca_and_still_takes_effect(
    running_loader: tuple[ConfigLoader, Path], caplog: pytest.LogCaptureFixture
) -> None:
    loader, certs = running_loader
    for name in (ca.CA_KEY_FILE, ca.CA_CERT_FILE):
        (certs / name).unlink()
    path = certs.parent / "lmk_config.toml"
    rewrite(path, toml_config(("alice", ALICE_KEY), ("bob", BOB_KEY)))
    assert await loader.reload_if_changed() is True
    assert loader.state.master_keys.find(BOB_KEY) is not None  # the new users are in
    assert not (certs / ca.CA_KEY_FILE).exists()  # and no new CA that no client trusts
    with caplog.at_level(logging.ERROR):
        await loader.check_ca()
    assert "is missing" in ca_errors(caplog)[0]


async def test_a_ca_replaced_under_the_proxy_is_an_error_and_restoring_it_clears_it(
    running_loader: tuple[ConfigLoader, Path],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    loader, certs = running_loader
    saved = {n: (certs / n).read_bytes() for n in (ca.CA_KEY_FILE, ca.CA_CERT_FILE)}
    ca.init_ca(certs, ["api.openai.com"], force=True)  # `lmk ca init --force` while running
    with caplog.at_level(logging.INFO):
        await loader.check_ca()
        (error,) = ca_errors(caplog)
        assert f"{certs / ca.CA_KEY_FILE} now holds another CA than the one this proxy" in error
        assert "Restore the old files" in error and "restart the proxy" in error
        caplog.clear()
        for name, data in saved.items():  # the admin restores the files
            (certs / name).write_bytes(data)
        ca.write_client_bundle(certs)
        assert await loader.check_ca() == []
    assert ca_errors(caplog) == []
    assert f"The CA files in {certs} are in order again." in caplog.text


async def test_the_watch_loop_reports_a_broken_ca_within_seconds(
    running_loader: tuple[ConfigLoader, Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loader, certs = running_loader
    monkeypatch.setattr(configload, "RELOAD_POLL_SECONDS", 0.05)
    loader.running()
    try:
        with caplog.at_level(logging.ERROR):
            (certs / ca.BUNDLE_FILE).unlink()
            deadline = asyncio.get_running_loop().time() + 5
            while not ca_errors(caplog) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
    finally:
        loader.done()
    (error,) = ca_errors(caplog)
    assert f"{certs / ca.BUNDLE_FILE} is missing" in error
