"""Rate limits in the policy: validated with TOML paths, every level's limits apply, folded per
counter, keys resolved at load; the token estimate."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llamakey import config
from llamakey.rules.limits import LimitSpec, compile_limits, estimate_tokens
from tests.unit.builders import config_data


def data(defaults: list[Any] | None = None, **levels: list[Any]) -> dict[str, Any]:
    d = copy.deepcopy(config_data())
    if defaults is not None:
        d["defaults"] = {"rate_limits": defaults}
    if "research" in levels:
        d["groups"]["research"]["rate_limits"] = levels["research"]
    if "alice" in levels:
        d["users"]["alice"]["rate_limits"] = levels["alice"]
    return d


def test_every_level_applies_and_keys_are_resolved_at_load() -> None:
    settings = config.resolve(
        config.parse(
            data(
                [{"requests": 10, "per": "minute"}],
                research=[
                    {"requests": 5, "per": "minute"},  # same counter as defaults': folded to 5
                    {"tokens": 1000, "per": "hour", "scope": "group"},
                ],
                alice=[
                    {"requests": 100, "per": "day", "scope": "gateway", "provider": "openai"},
                    {"requests": 2, "per": "minute", "model": "gpt-4o*"},
                ],
            )
        ),
        None,
    )
    alice = settings.policies["alice"].rate_limits
    got = {(r.key, r.seconds, r.limit, r.source) for r in alice}
    assert got == {
        ("rl:user:alice:*:*:requests", 60, 5, "groups.research.rate_limits.0"),
        ("rl:group:research:*:*:tokens", 3600, 1000, "groups.research.rate_limits.1"),
        ("rl:gateway:all:openai:*:requests", 86400, 100, "users.alice.rate_limits.0"),
        ("rl:user:alice:*:gpt-4o*:requests", 60, 2, "users.alice.rate_limits.1"),
    }
    # dave has no group: only [defaults] applies to him
    dave = settings.policies["dave"].rate_limits
    assert [(r.key, r.limit) for r in dave] == [("rl:user:dave:*:*:requests", 10)]
    assert not settings.policies["dave"].restricted  # allow-lists untouched


def test_no_limit_no_cost() -> None:
    settings = config.resolve(config.parse(data()), None)
    assert all(p.rate_limits == () for p in settings.policies.values())


def test_applies_by_provider_and_model() -> None:
    (limit,) = compile_limits(
        "alice",
        (),
        [(LimitSpec("requests", 1, "minute", "user", "openai", "gpt-4o*", 1024, "x"), None)],
    )
    assert limit.applies("openai", "gpt-4o-mini")
    assert not limit.applies("openai", "o3")
    assert not limit.applies("openai", None)
    assert not limit.applies("anthropic", "gpt-4o")
    assert limit.describe() == "1 requests per minute (x)"


def test_group_scope_of_defaults_counts_per_group() -> None:
    limits = compile_limits(
        "alice",
        ("research", "ops"),
        [(LimitSpec("requests", 3, "hour", "group", None, None, 1024, "defaults"), None)],
    )
    assert [r.key for r in limits] == [
        "rl:group:research:*:*:requests",
        "rl:group:ops:*:*:requests",
    ]


@pytest.mark.parametrize(
    ("entry", "path", "why"),
    [
        ({"requests": 3, "per": "week"}, "groups.research.rate_limits.0.per", "minute"),
        ({"per": "minute"}, "groups.research.rate_limits.0", "exactly one"),
        ({"requests": 1, "tokens": 2, "per": "minute"}, "groups.research.rate_limits.0", "exactly"),
        ({"requests": 0, "per": "minute"}, "groups.research.rate_limits.0.requests", "greater"),
        ({"requests": 1, "per": "minute", "model": ""}, "groups.research.rate_limits.0.model", ""),
        (
            {"requests": 1, "per": "minute", "scope": "team"},
            "groups.research.rate_limits.0.scope",
            "",
        ),
        (
            {"requests": 1, "per": "minute", "color": "red"},
            "groups.research.rate_limits.0.color",
            "",
        ),
    ],
)
def test_a_bad_limit_names_its_toml_path(entry: dict[str, Any], path: str, why: str) -> None:
    with pytest.raises(config.ConfigError, match=path.replace(".", r"\.") + ".*" + why):
        config.parse(data(research=[entry]))


def test_an_unknown_provider_in_a_limit_names_its_toml_path() -> None:
    d = data([{"requests": 1, "per": "minute", "provider": "opneai"}])
    with pytest.raises(config.ConfigError, match=r"defaults\.rate_limits\.0\.provider: unknown"):
        config.resolve(config.parse(d), None)


def test_token_estimate() -> None:
    body = b'{"model": "m", "max_tokens": 100}'
    assert estimate_tokens(body, 1024) == (len(body) + 3) // 4 + 100
    assert estimate_tokens(b'{"max_completion_tokens": 7, "max_tokens": 5}', 0) == 12 + 7
    assert estimate_tokens(b'{"generationConfig": {"maxOutputTokens": 9}}', 1024) == 11 + 9
    assert estimate_tokens(b"{}", 1024) == 1 + 1024
    assert estimate_tokens(b"not json", 50) == 2 + 50
    assert estimate_tokens(b'{"max_tokens": true}', 3) == 5 + 3
