"""`[models.NAME]`: the catalogue's tables are validated with TOML paths and resolved into
deployments whose paths, hosts and keys are what each target needs."""

from __future__ import annotations

from typing import Any

import pytest

from llamakey import advice, config
from llamakey.providers import Carrier
from tests.unit.config.helpers import config_error

AZURE = {
    "name": "east",
    "kind": "azure",
    "endpoint": "https://myres.openai.azure.com",
    "deployment": "gpt4o-east",
    "api_version": "2024-10-21",
    "keys": ["${LMK_UT_AZURE}"],
}
OPENAI = {"name": "oai", "kind": "openai", "model": "gpt-4o-mini", "weight": 3}
COMPATIBLE = {
    "name": "groq",
    "kind": "openai_compatible",
    "base_url": "https://api.groq.com/openai/v1",
    "model": "llama-3.1-8b-instant",
}


def catalogue(models: dict[str, Any]) -> config.Settings:
    return config.resolve(config.parse({"models": models}, "lmk_config.toml"), None)


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMK_UT_AZURE", "azure-real-key-0123456789abcdef")
    monkeypatch.setenv("LMK_UT_OPENAI", "sk-proj-real-key-0123456789abcdef")


def test_each_kind_is_resolved_to_its_target() -> None:
    settings = catalogue(
        {"pool": {"aliases": ["fast"], "deployments": [OPENAI, AZURE, COMPATIBLE]}}
    )
    model = settings.models.lookup("fast")
    assert model is not None and model is settings.models.lookup("pool")
    oai, east, groq = model.deployments
    assert (oai.host, oai.path_for("chat/completions"), oai.body_model) == (
        "api.openai.com",
        "/v1/chat/completions",
        "gpt-4o-mini",
    )
    assert east.path_for("embeddings") == (
        "/openai/deployments/gpt4o-east/embeddings?api-version=2024-10-21"
    )
    assert east.path_for("responses") == "/openai/responses?api-version=2024-10-21"
    assert (east.host, east.carrier, east.body_model) == (
        "myres.openai.azure.com",
        Carrier.API_KEY,
        "gpt4o-east",
    )
    assert east.keys == ("azure-real-key-0123456789abcdef",)
    assert (groq.host, groq.path_for("chat/completions"), groq.carrier) == (
        "api.groq.com",
        "/openai/v1/chat/completions",
        Carrier.BEARER,
    )
    assert groq.path_for("responses") is None  # not unless it says so
    # Pricing follows the host's catalogue entry; a deployment's keys are kept from the logs.
    assert (oai.pricing.name, east.pricing.name, groq.pricing.name) == (
        "openai",
        "azure",
        "groq",
    )
    assert "azure-real-key-0123456789abcdef" in settings.real_keys
    assert settings.models.lookup("gpt-4o-mini") is None


def test_a_deployment_without_keys_takes_its_hosts_provider_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = {
        "providers": {"openai": {"keys": ["${LMK_UT_OPENAI}"]}},
        "models": {"pool": {"deployments": [OPENAI]}},
    }
    settings = config.resolve(config.parse(data), None)
    (oai,) = settings.models.deployments()
    assert oai.keys == ("sk-proj-real-key-0123456789abcdef",)
    monkeypatch.delenv("LMK_UT_OPENAI")
    (unkeyed,) = config.resolve(config.parse(data), None).models.deployments()
    assert unkeyed.keys == ()
    assert unkeyed.missing_key is not None and "LMK_UT_OPENAI" in unkeyed.missing_key


@pytest.mark.parametrize(
    ("deployment", "path", "expected"),
    [
        ({**AZURE, "deployment": None}, "models.pool.deployments.0", "needs deployment"),
        ({**AZURE, "api_version": None}, "models.pool.deployments.0", "needs api_version"),
        ({**AZURE, "base_url": "https://x.example"}, "models.pool.deployments.0", "endpoint"),
        ({**COMPATIBLE, "base_url": None}, "models.pool.deployments.0", "needs base_url"),
        ({**OPENAI, "api_version": "1"}, "models.pool.deployments.0", 'only for kind = "azure"'),
        ({**OPENAI, "kind": "bedrock"}, "models.pool.deployments.0.kind", "'openai'"),
        (
            {**OPENAI, "base_url": "http://a.example/v1"},
            "models.pool.deployments.0.base_url",
            "https",
        ),
        ({**OPENAI, "weight": -1}, "models.pool.deployments.0.weight", "greater than or equal"),
        ({**OPENAI, "connect_to": "nowhere"}, "models.pool.deployments.0.connect_to", "host:port"),
        ({**OPENAI, "wieght": 2}, "models.pool.deployments.0.wieght", "unknown key"),
    ],
)
def test_a_bad_deployment_names_its_toml_path(
    deployment: dict[str, Any], path: str, expected: str
) -> None:
    entry = {k: v for k, v in deployment.items() if v is not None}
    message = config_error({"models": {"pool": {"deployments": [entry]}}})
    line = next(line for line in message.splitlines() if line.strip().startswith(path + ":"))
    assert expected in line


def test_names_are_unique_across_the_catalogue() -> None:
    other = {**OPENAI, "name": "oai2"}
    message = config_error(
        {
            "models": {
                "pool": {"aliases": ["fast"], "deployments": [OPENAI]},
                "other": {"aliases": ["fast"], "deployments": [other]},
            }
        }
    )
    assert message == "models.other.aliases.0: 'fast' is already a name of models.pool.aliases.0"
    message = config_error(
        {"models": {"pool": {"deployments": [OPENAI]}, "other": {"deployments": [OPENAI]}}}
    )
    assert message == "models.other.deployments.0.name: 'oai' is already models.pool.deployments.0"


def test_a_deployment_on_no_providers_host_needs_keys_of_its_own() -> None:
    entry = {**COMPATIBLE, "base_url": "https://llm.internal.example/v1"}
    message = config_error({"models": {"pool": {"deployments": [entry]}}})
    assert message.startswith("models.pool.deployments.0.keys: llm.internal.example is no")


def test_a_key_in_the_table_is_never_echoed() -> None:
    secret = "sk-proj-NEVERECHOED0123456789abcdefghij"
    message = config_error({"models": {"pool": {"deployments": [{**OPENAI, "keys": secret}]}}})
    assert "models.pool.deployments.0.keys" in message
    assert secret not in message


def test_a_literal_deployment_key_is_warned_of_by_its_toml_path() -> None:
    secret = "sk-proj-LITERAL0123456789abcdefghij"
    settings = catalogue({"pool": {"deployments": [{**OPENAI, "keys": [secret]}]}})
    (warning,) = advice.literal_keys(settings)
    assert warning.startswith("models.pool.deployments.0.keys[0] in the configuration is a")
    assert secret not in warning
