"""The configuration's tables: validation errors name the TOML path and never echo a secret."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.config.helpers import config_error


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
