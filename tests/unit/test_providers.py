"""The provider catalogue: host lookup and the allow_hosts regex."""

from __future__ import annotations

import re

import pytest

from llamakey.providers import BUILTIN_PROVIDERS, ProviderIndex

# providers.ProviderIndex


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.openai.com", "openai"),
        ("API.OpenAI.com.", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("myres.openai.azure.com", "azure"),
        ("a.b.cognitiveservices.azure.com", "azure"),
        ("x.endpoints.huggingface.cloud", "huggingface"),
        ("openai.azure.com", None),
        ("api.openai.com.evil.net", None),
        ("evilapi.openai.com", None),
        ("openai.com", None),
        ("example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_provider_index_lookup(host: str | None, expected: str | None) -> None:
    found = ProviderIndex(BUILTIN_PROVIDERS.values()).lookup(host)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    ("address", "intercepted"),
    [
        ("api.openai.com:443", True),
        ("x.openai.azure.com:443", True),
        ("generativelanguage.googleapis.com:443", True),
        ("api.openai.com.evil.net:443", False),
        ("evilapi.openai.com:443", False),
        ("openai.azure.com:443", False),
        ("evil.net:443", False),
        ("api.openai.com", False),
        ("apiXopenai.com:443", False),  # the dot is escaped
    ],
)
def test_allow_hosts_regex_is_anchored(address: str, intercepted: bool) -> None:
    pattern = ProviderIndex(BUILTIN_PROVIDERS.values()).allow_hosts_regex()
    # mitmproxy matches allow_hosts with re.search against "host:port"
    assert (re.search(pattern, address) is not None) is intercepted
