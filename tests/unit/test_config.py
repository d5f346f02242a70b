"""The configuration: validation errors name the TOML path and never echo a secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from llamakey import config
from tests.unit.builders import (
    ALICE_KEY,
    config_data,
    sha,
)

# config


def config_error(data: Mapping[str, Any]) -> str:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve(config.parse(data, "lmk_config.toml"), None)
    return str(caught.value)


def test_unknown_key_is_refused_with_its_toml_path() -> None:
    message = config_error({"proxy": {"listen_prot": 8080}})
    assert "proxy.listen_prot" in message
    assert "unknown key" in message
    message = config_error({"providers": {"openai": {"keys": [], "conect_to": "127.0.0.1:1"}}})
    assert "providers.openai.conect_to" in message


@pytest.mark.parametrize(
    ("data", "path", "value", "expected"),
    [
        ({"proxy": {"listen_port": "eighty"}}, "proxy.listen_port", "'eighty'", "integer"),
        ({"proxy": {"listen_port": 70000}}, "proxy.listen_port", "70000", "65535"),
        (
            {"proxy": {"other_hosts": "allow"}},
            "proxy.other_hosts",
            "'allow'",
            "'tunnel' or 'block'",
        ),
        ({"audit": {"enabled": "maybe"}}, "audit.enabled", "'maybe'", "bool"),
        (
            {"providers": {"openai": {"connect_to": "localhost"}}},
            "providers.openai.connect_to",
            "'localhost'",
            "host:port",
        ),
    ],
)
def test_bad_type_names_path_value_and_expectation(
    data: dict[str, Any], path: str, value: str, expected: str
) -> None:
    message = config_error(data)
    line = next(line for line in message.splitlines() if line.strip().startswith(path + ":"))
    assert value in line
    assert expected in line


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


SECRET = "sk-proj-NEVERECHOED0123456789abcdefghij"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"providers": {"openai": {"keys": SECRET}}}, id="keys-not-a-list"),
        pytest.param({"providers": {"openai": {"keys": [SECRET, 42]}}}, id="keys-bad-item"),
        pytest.param({"providers": {"openai": {"keys": [{"k": SECRET}]}}}, id="keys-table"),
        pytest.param(
            {"providers": {"vectara": {"extra_headers": SECRET}}}, id="extra-headers-not-a-table"
        ),
        pytest.param(
            {"providers": {"vectara": {"extra_headers": {"x": [SECRET]}}}}, id="extra-header-list"
        ),
        pytest.param(
            {"providers": {"openai": {"keys": [SECRET]}}, "proxy": {"listen_port": "x"}},
            id="valid-keys-next-to-error",
        ),
        pytest.param(
            {"providers": {"newco": {"keys": [SECRET]}}}, id="unknown-provider-without-hosts"
        ),
        pytest.param(
            {"providers": {"openai": {"key": SECRET}}},
            id="misspelt-keys",
        ),
        pytest.param(
            {"providers": {"openai": SECRET}},
            id="provider-not-a-table",
        ),
    ],
)
def test_config_errors_never_contain_a_provider_key(data: dict[str, Any]) -> None:
    message = config_error(data)
    assert "providers." in message or "proxy." in message
    assert SECRET not in message
