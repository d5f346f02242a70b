"""The provider catalogue: host lookup, the allow_hosts regex, and complete entries."""

from __future__ import annotations

import re

import pytest
from genai_prices.data_snapshot import get_snapshot

from llamakey import config, credentials
from llamakey.providers import (
    BUILTIN_PROVIDERS,
    Pricing,
    Provider,
    ProviderIndex,
    UsageFamily,
)
from llamakey.usage import PARSERS_BY_FAMILY, ApiFlavor, api_flavor
from tests.unit.builders import config_data

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


# The catalogue entries


@pytest.mark.parametrize("entry", BUILTIN_PROVIDERS.values(), ids=BUILTIN_PROVIDERS.keys())
def test_catalogue_entry_is_complete(entry: Provider) -> None:
    assert BUILTIN_PROVIDERS[entry.name] is entry
    assert entry.hosts and entry.key_env
    assert entry.default_carrier in entry.carriers
    # Its usage family has registered parsers (NONE: it reports no usage, so it is all "other").
    if entry.usage_family is UsageFamily.NONE:
        assert api_flavor(entry, "POST", "/v1/chat/completions") == ApiFlavor.OTHER
    else:
        assert PARSERS_BY_FAMILY[entry.usage_family]
    # Its pricing id is a genai-prices provider (for a routed one, the prefix of some).
    ids = {p.id for p in get_snapshot().providers}
    if entry.pricing is None:
        assert entry.name in {"vectara", "anyscale"}  # the only ones without price data
    elif entry.pricing.routed:
        assert any(i.startswith(entry.pricing.provider_id) for i in ids)
    else:
        assert entry.pricing.provider_id in ids
    # What `lmk env` writes before the master key comes off again on the way in.
    key = credentials.new_master_key()
    assert credentials.normalise(entry.key_env_prefix + key) == key


def test_only_hugging_face_takes_a_prefixed_key() -> None:
    prefixed = {p.name: p.key_env_prefix for p in BUILTIN_PROVIDERS.values() if p.key_env_prefix}
    assert prefixed == {"huggingface": credentials.HF_PREFIX}


def test_config_providers_keep_their_entry_or_get_openai_compatible_defaults() -> None:
    data = config_data()
    data["providers"]["openai"]["hosts"] = ["llm-gateway.example.com"]
    data["providers"]["mycorp"] = {"hosts": ["llm.mycorp.example"], "keys": ["sk-mycorp"]}
    settings = config.resolve(config.parse(data), None)
    # An override changes what the file sets, and keeps everything else of the entry.
    openai = settings.providers["openai"].provider
    assert openai.hosts == ("llm-gateway.example.com",)
    builtin = BUILTIN_PROVIDERS["openai"]
    assert openai.pricing == builtin.pricing == Pricing("openai")
    assert openai.usage_family is builtin.usage_family is UsageFamily.OPENAI
    assert openai.include_stream_usage and builtin.include_stream_usage
    assert settings.providers["xai"].provider.reasoning_beside_output
    assert settings.providers["huggingface"].provider.key_env_prefix == credentials.HF_PREFIX
    # A provider the file adds speaks OpenAI's format, has no prices and no quirks.
    mycorp = settings.providers["mycorp"].provider
    assert mycorp.hosts == ("llm.mycorp.example",)
    assert mycorp.usage_family is UsageFamily.OPENAI
    assert mycorp.pricing is None
    assert not mycorp.include_stream_usage and not mycorp.reasoning_beside_output
    assert (mycorp.key_env, mycorp.key_env_prefix, mycorp.legacy) == ((), "", None)
