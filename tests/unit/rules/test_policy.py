"""The policy rule (own over groups, union across groups, defaults as the base), validated
with TOML paths, compiled once per load; and the authorize step applying it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from llamakey import config
from llamakey.rules.policy import merge
from llamakey.state import GatewayState
from tests.unit.builders import (
    ALICE_KEY,
    authenticate,
    cleared,
    config_data,
    make_state,
    provider_flow,
)


def test_merge_own_overrides_groups_union_defaults_base() -> None:
    got = merge(
        {"openai": ["gpt-4o"]},
        [
            ("groups.a", {"openai": ["o3"], "anthropic": ["claude-a"]}),
            ("groups.b", {"anthropic": ["claude-b"]}),
            ("groups.c", None),
        ],
        {"openai": ["x"], "anthropic": ["y"], "gemini": ["gemini-*"]},
        "users.alice",
    )
    assert got == {
        "openai": (("gpt-4o",), "users.alice"),
        "anthropic": (("claude-a", "claude-b"), "groups.a, groups.b"),
        "gemini": (("gemini-*",), "defaults"),
    }
    assert merge(None, [], None) == {}
    assert merge({"openai": []}, [("groups.a", {"openai": ["*"]})], None)["openai"][0] == ()


def data(**alice: Any) -> dict[str, Any]:
    d = copy.deepcopy(config_data())
    d["users"]["alice"].update(alice)
    d["groups"]["research"] = {
        "endpoints": {"openai": ["POST /v1/chat/completions", "GET /v1/models"]},
        "models": {"openai": ["gpt-4o-mini"]},
    }
    return d


def test_policies_are_compiled_per_user_at_load() -> None:
    settings = config.resolve(config.parse(data()), None)
    alice = settings.policies["alice"]
    assert set(alice.models) == {"openai"} and alice.sources["models.openai"] == "groups.research"
    assert not settings.policies["dave"].restricted


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        ("endpoints", {"openai": ["POST /v1//files"]}, "groups.research.endpoints.openai.0"),
        (
            "endpoints",
            {"openai": ["GET /v1/models", "files"]},
            "groups.research.endpoints.openai.1",
        ),
        ("models", {"openai": [""]}, "groups.research.models.openai.0"),
    ],
)
def test_a_bad_pattern_names_its_toml_path(where: str, value: object, path: str) -> None:
    d = data()
    d["groups"]["research"][where] = value
    with pytest.raises(config.ConfigError, match=path.replace(".", r"\.")):
        config.parse(d)


def test_an_unknown_provider_names_its_toml_path() -> None:
    d = data()
    d["defaults"] = {"models": {"opneai": ["gpt-4o"]}}
    with pytest.raises(config.ConfigError, match=r"defaults\.models\.opneai: unknown provider"):
        config.resolve(config.parse(d), None)


def call(state: GatewayState, url: str, body: bytes = b"{}", method: str = "POST") -> Any:
    f = provider_flow(url, {"authorization": f"Bearer {ALICE_KEY}"}, content=body)
    f.request.method = method
    authenticate(state, f)
    cleared(state, f)
    return f


def test_authorize_refuses_by_rule() -> None:
    state = make_state(data())
    ok = call(state, "https://api.openai.com/v1/chat/completions", b'{"model": "gpt-4o-mini"}')
    assert ok.response is None and state.flows(ok).cleared
    cases = [
        ("/v1/chat/completions", b'{"model": "gpt-4o"}', 403, "model_not_allowed"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "model_unknown"),
        (
            "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "model": "gpt-4o"}',
            400,
            "ambiguous_model",
        ),
        ("/v1/files", b"{}", 403, "endpoint_not_allowed"),
        ("/v1/chat/completions/../files", b"{}", 400, "path_not_canonical"),
        ("/v1/%66iles", b"{}", 400, "path_not_canonical"),
    ]
    for path, body, status, rule in cases:
        f = call(state, "https://api.openai.com" + path, body)
        assert f.response is not None and f.response.status_code == status, path
        assert f.response.headers["x-lmk-refused"] == rule
        assert f.response.headers["x-should-retry"] == "false"
        assert json.loads(f.response.content)["error"]["type"] in (
            "permission_error",
            "invalid_request_error",
        )
        assert not state.flows(f).cleared


def test_other_providers_are_unrestricted_and_own_list_overrides() -> None:
    state = make_state(data(models={"openai": ["gpt-4o"]}))
    f = call(state, "https://api.openai.com/v1/chat/completions", b'{"model": "gpt-4o"}')
    assert f.response is None
    f = call(state, "https://api.openai.com/v1/chat/completions", b'{"model": "gpt-4o-mini"}')
    assert f.response is not None and f.response.status_code == 403
    f = call(state, "https://api.anthropic.com/v1/messages", b'{"model": "claude-x"}')
    assert f.response is None


def test_batches_need_the_endpoint_list() -> None:
    d = data()
    del d["groups"]["research"]["endpoints"]
    state = make_state(d)
    f = call(state, "https://api.openai.com/v1/batches", b'{"input_file_id": "f"}')
    assert f.response is not None and f.response.headers["x-lmk-refused"] == "model_not_allowed"
    d["groups"]["research"]["endpoints"] = {"openai": ["POST /v1/batches"]}
    state = make_state(d)
    f = call(state, "https://api.openai.com/v1/batches", b'{"input_file_id": "f"}')
    assert f.response is None
