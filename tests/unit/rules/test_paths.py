"""The canonical-target check and endpoint patterns: no way of writing a path reaches an
endpoint the list forbids (shared corpora: WHATWG URL tests, Envoy and Go path cases)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamakey.rules.paths import EndpointRules, canonical_problem, compile_endpoint

# A copy of path_cases.json (its `_about` names the sources and their licences).
CORPUS = Path(__file__).with_name("path_cases.json")
# Where we are stricter than the corpus: '/abc/' (a trailing slash is canonical here, matched
# only by a pattern with that slash), and an encoded ':' (Gemini splits model and verb at ':',
# so %3A is refused everywhere, P080 included).
STRICTER = {"P080"}
LOOSER = {"P254"}


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    return cases


@pytest.mark.parametrize("case", _cases(), ids=lambda c: str(c["id"]))
def test_corpus_case(case: dict[str, Any]) -> None:
    target = case["raw_target"].encode("utf-8")
    problem = canonical_problem(target)
    if case["id"] in STRICTER:
        assert problem is not None
    elif case["id"] in LOOSER:
        assert problem is None
    elif case["expect"] == "refuse":
        assert problem is not None, (case["raw_target"], case["flags"])
    else:
        assert problem is None, (case["raw_target"], problem)


BYPASSES = [
    "/v1/chat/completions/../files",
    "/v1/chat/completions/%2E%2E/files",
    "/v1/chat/completions/%2e%2e/files",
    "/v1/chat/completions/..%2Ffiles",
    "/v1//files",
    "/v1/%66iles",
    "/v1/%2566iles",
    "/v1%2Ffiles",
    "/v1%2ffiles",
    "/v1\\files",
    "/v1%5Cfiles",
    "/v1/files%00",
    "/v1/files\x00",
    "/v1/files;x=1",
    "/v1/files%3B",
    "/v1/./files",
    "/v1/files#/chat/completions",
    "/v1/files%23",
    "/v1/files%3F",
    "/v1/files ",
    "/v1/fi\tles",
    "/v1/fil%C3%A9s".replace("%C3%A9", "\u00e9"),
    "/v1/files%",
    "/v1/files%G1",
    "//v1/files",
    "v1/files",
    "*",
    "https://api.openai.com/v1/files",
    "/v1beta/models/gemini-2.5-pro%3AgenerateContent",
]


@pytest.mark.parametrize("target", BYPASSES)
def test_no_spelling_of_a_forbidden_path_is_canonical(target: str) -> None:
    assert canonical_problem(target.encode("utf-8")) is not None


def test_listed_paths_and_queries_are_canonical() -> None:
    for target in (
        "/v1/chat/completions",
        "/v1/chat/completions?x=/../files",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=abc%2F",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        "/v1/files/",
        "/%20foo",
    ):
        assert canonical_problem(target.encode()) is None, target


def rules(*patterns: str) -> EndpointRules:
    return EndpointRules(tuple(compile_endpoint(p) for p in patterns))


def test_patterns_match_exactly_and_case_sensitively() -> None:
    allowed = rules("POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/*")
    assert allowed.allows("POST", "/v1/chat/completions")
    assert not allowed.allows("GET", "/v1/chat/completions")
    assert not allowed.allows("POST", "/v1/chat/completions/")
    assert not allowed.allows("POST", "/V1/Chat/Completions")
    assert not allowed.allows("POST", "/v1/chat/completions/x")
    assert allowed.allows("GET", "/v1/models/gpt-4o")
    assert not allowed.allows("GET", "/v1/models/gpt-4o/x")
    assert not allowed.allows("GET", "/v1/models/")  # a whole-segment `*` is never empty
    assert not allowed.allows("POST", "/v1/files")


def test_wildcards() -> None:
    gemini = rules("POST /v1beta/models/*:generateContent")
    assert gemini.allows("POST", "/v1beta/models/gemini-2.5-flash:generateContent")
    assert not gemini.allows("POST", "/v1beta/models/a/b:generateContent")
    assert not gemini.allows("POST", "/v1beta/models/x:streamGenerateContent")
    anything = rules("* /**")
    assert anything.allows("DELETE", "/") and anything.allows("GET", "/v1/files/x")
    under = rules("GET /v1/**")
    assert under.allows("GET", "/v1") and under.allows("GET", "/v1/a/b")
    assert not under.allows("GET", "/v10") and not under.allows("POST", "/v1/a")


@pytest.mark.parametrize(
    "pattern",
    [
        "/v1/files",
        "post /v1/files",
        "POST v1/files",
        "POST /v1//files",
        "POST /v1/../files",
        "POST /v1/%66iles",
        "POST /v1/files;x",
        "POST /**/files",
        "POST /v1/a**",
        "POST /v1/fi les",
        "POST /v1/files?x=1",
    ],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_endpoint(pattern)
