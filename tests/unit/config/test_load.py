"""Resolving the configuration: keys from the environment, users, groups, the key ring."""

from __future__ import annotations

import pytest

from llamakey import config
from tests.unit.builders import (
    ALICE_KEY,
    config_data,
    sha,
)
from tests.unit.config.helpers import config_error


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
