"""`[traces]`: destinations named by groups and users must exist, bodies need the audit log's
consent, and neither headers nor endpoints are ever echoed in an error."""

from __future__ import annotations

import copy
from typing import Any

from llamakey import advice, config
from llamakey.steps.configload import describe_changes
from tests.unit.builders import config_data
from tests.unit.config.helpers import config_error

SECRET = "sk-lf-0123456789abcdef-SECRET"


def traced(**traces: Any) -> dict[str, Any]:
    data = config_data()
    data["traces"] = {"enabled": True, "endpoint": "http://127.0.0.1:4318/v1/traces", **traces}
    return data


def test_a_group_or_user_naming_an_undefined_destination_is_an_error_naming_its_path() -> None:
    data = traced(destinations={"team": {"endpoint": "https://otel.example/v1/traces"}})
    data["groups"]["research"]["traces"] = "teem"
    assert config_error(data) == (
        "lmk_config.toml: groups.research.traces: got 'teem', expected a "
        "[traces.destinations.NAME] table (defined: default, team)"
    )
    data["groups"]["research"]["traces"] = "team"
    data["users"]["alice"]["traces"] = "nowhere"
    assert "users.alice.traces: got 'nowhere'" in config_error(data)
    # Checked with tracing off too: a typo must not wait for the day it is switched on.
    data["traces"]["enabled"] = False
    assert "users.alice.traces: got 'nowhere'" in config_error(data)


def test_default_names_traces_own_endpoint_and_no_table() -> None:
    data = traced(destinations={"default": {"endpoint": "https://otel.example/v1/traces"}})
    assert "traces.destinations.default: the name 'default' is [traces]'s own endpoint" in (
        config_error(data)
    )
    no_endpoint = config_data()
    no_endpoint["traces"] = {"enabled": True}
    no_endpoint["users"]["alice"]["traces"] = "default"
    assert "(defined: none is defined)" in config_error(no_endpoint)


def test_bodies_need_the_audit_logs_consent() -> None:
    data = traced(
        include_bodies=True,
        destinations={
            "team": {"endpoint": "https://otel.example/v1/traces", "include_bodies": True}
        },
    )
    assert config_error(data) == (
        "lmk_config.toml: traces.include_bodies, traces.destinations.team.include_bodies = true "
        "needs audit.log_bodies = true (prompts and completions leave the proxy only when the "
        "audit log keeps them)"
    )
    data["audit"] = {"log_bodies": True}
    settings = config.resolve(config.parse(data), None)
    assert settings.traces is not None
    assert settings.traces.destinations["team"].include_bodies
    # A destination's own setting wins over [traces]'s.
    data["traces"]["destinations"]["team"]["include_bodies"] = False
    settings = config.resolve(config.parse(data), None)
    assert settings.traces is not None and not settings.traces.destinations["team"].include_bodies


def test_headers_and_endpoints_are_never_echoed() -> None:
    message = config_error(traced(headers={"authorization": ["Basic", SECRET]}))
    assert "traces.headers.authorization" in message and SECRET not in message
    bad = traced(destinations={"team": {"endpoint": f"https://user:{SECRET}@otel.example/"}})
    message = config_error(bad)
    assert "traces.destinations.team.endpoint" in message and SECRET not in message
    assert "credentials go in headers, not in the URL" in message
    misspelt = traced(destinations={"team": {"endpoint": "http://x/v1/traces", "header": SECRET}})
    message = config_error(misspelt)
    assert "traces.destinations.team.header" in message and SECRET not in message


def test_header_values_are_expanded_and_scrubbed_like_provider_keys(
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("LMK_UT_LANGFUSE", SECRET)
    data = traced(headers={"authorization": "Basic ${LMK_UT_LANGFUSE}"})
    settings = config.resolve(config.parse(data), None)
    assert settings.traces is not None
    destination = settings.traces.destinations["default"]
    assert destination.headers == (("authorization", f"Basic {SECRET}"),)
    assert destination.missing is None
    assert f"Basic {SECRET}" in settings.real_keys  # the scrubber masks it in logs and flows


def test_off_by_default_and_off_means_no_destinations() -> None:
    assert config.resolve(config.parse(config_data()), None).traces is None
    data = traced()
    data["traces"]["enabled"] = False
    settings = config.resolve(config.parse(data), None)
    assert settings.traces is None
    assert settings.trace_choices.destination("alice", ("research",)) == "default"


def test_a_literal_credential_header_is_warned_of_by_path_never_by_value() -> None:
    data = traced(
        headers={"Authorization": f"Basic {SECRET}", "x-scope": "literal is fine here"},
        destinations={
            "team": {"endpoint": "http://x/v1/traces", "headers": {"x-api-key": "${LMK_UT_K}"}}
        },
    )
    warnings = advice.literal_keys(config.resolve(config.parse(data), None))
    assert warnings == [
        "traces.headers.Authorization in the configuration is a literal credential, not a "
        "${VAR} reference: whoever can read the file has it. Put it in the proxy's environment "
        'and write Authorization = "…${VAR}"'
    ]
    assert SECRET not in "".join(warnings)


def test_a_reload_names_what_changed_in_traces_never_a_value() -> None:
    before = traced(destinations={"team": {"endpoint": f"https://otel.example/{SECRET}"}})
    after = copy.deepcopy(before)
    after["traces"]["destinations"]["team"]["endpoint"] = "https://otel.example/v1/traces"
    after["users"]["alice"]["traces"] = "team"
    after["traces"]["service_name"] = "gateway-eu"
    line = describe_changes(
        config.resolve(config.parse(before), None), config.resolve(config.parse(after), None)
    )
    assert line == (
        "users changed: alice; other settings changed: traces.destinations, traces.service_name"
    )
