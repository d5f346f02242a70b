"""The allow-lists against a real `lmk serve`: official SDKs get their own 403 errors for a
forbidden model or endpoint, raw-socket spellings of a forbidden path never reach the provider,
every refusal has an audit row naming its rule, and a reload widens the list in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_attacks import send
from tests.e2e.test_audit import ids, new_row, rows
from tests.harness import Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream

POLICY = """
[defaults.endpoints]
openai = ["POST /v1/chat/completions", "GET /v1/models"]

[groups.research.models]
openai = ["gpt-4o-mini"]
anthropic = ["claude-3-5-haiku-*"]
gemini = ["gemini-2.0-flash"]
"""
RELOAD = 15.0


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("rules"), mock, extra_toml=POLICY)
    gw.start()
    yield gw
    gw.stop()


def sdk(gw: Gateway, code: str) -> dict[str, object]:
    result = run_client(code, gw.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


OPENAI = """
import json, openai
client = openai.OpenAI(max_retries=0)
out = {}
hi = [{"role": "user", "content": "hi"}]
r = client.chat.completions.create(model="gpt-4o-mini", messages=hi)
out["allowed"] = r.choices[0].message.content is not None
for name, call in (
    ("model", lambda: client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])),
    ("endpoint", lambda: client.embeddings.create(model="gpt-4o-mini", input="hi")),
):
    try:
        call()
        out[name] = "passed"
    except openai.APIStatusError as e:
        out[name] = [type(e).__name__, e.status_code]
print(json.dumps(out))
"""

ANTHROPIC = """
import json, anthropic
try:
    anthropic.Anthropic(max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"model": "passed"}))
except anthropic.APIStatusError as e:
    print(json.dumps({"model": [type(e).__name__, e.status_code]}))
"""

GENAI = """
import json
from google import genai
from google.genai import errors
client = genai.Client()
out = {"allowed": client.models.generate_content(model="gemini-2.0-flash", contents="hi").text
       is not None}
try:
    client.models.generate_content(model="gemini-2.5-pro", contents="hi")
    out["model"] = "passed"
except errors.APIError as e:
    out["model"] = [type(e).__name__, e.code]
print(json.dumps(out))
"""


def refused_rows(gw: Gateway, before: set[str], count: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []

    def enough() -> bool:
        nonlocal found
        found = [r for r in rows(gw.audit_db, "completed_ts is not null") if r["id"] not in before]
        return len(found) >= count

    wait_until(enough, f"{count} audit rows")
    return found


def test_openai_sdk_gets_permission_denied_for_model_and_endpoint(
    ruled: Gateway, mock: MockUpstream
) -> None:
    mock.clear()
    before = ids(ruled.audit_db)
    out = sdk(ruled, OPENAI)
    assert out == {
        "allowed": True,
        "model": ["PermissionDeniedError", 403],
        "endpoint": ["PermissionDeniedError", 403],
    }
    assert [s.path for s in mock.seen] == ["/v1/chat/completions"]
    refused = {r["refused_by"] for r in refused_rows(ruled, before, 3) if r["refused_by"]}
    assert refused == {"model_not_allowed", "endpoint_not_allowed"}


def test_anthropic_sdk_gets_permission_denied(ruled: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    before = ids(ruled.audit_db)
    assert sdk(ruled, ANTHROPIC) == {"model": ["PermissionDeniedError", 403]}
    assert mock.seen == []
    row = new_row(ruled.audit_db, before)
    assert (row["refused_by"], row["provider"], row["status"]) == (
        "model_not_allowed",
        "anthropic",
        403,
    )


def test_google_genai_gets_client_error_403(ruled: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    assert sdk(ruled, GENAI) == {"allowed": True, "model": ["ClientError", 403]}
    assert len(mock.seen) == 1 and "gemini-2.0-flash" in mock.seen[0].path


BYPASSES = [
    "/v1/chat/completions/../files",
    "/v1/chat/completions/%2E%2E/files",
    "/v1/chat/completions/%2e%2e/files",
    "/v1//files",
    "/v1/%66iles",
    "/v1%2Ffiles",
    "/v1%5Cfiles",
    "/v1\\files",
    "/v1/files;/chat/completions",
    "/v1/./files",
    "/v1/files%00",
    "/V1/FILES",
    "/v1/files/",
    "/v1/files",
    "/v1/chat/completions#/../files",
]


def test_raw_socket_bypasses_never_reach_the_provider(ruled: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    body = json.dumps({"model": "gpt-4o-mini", "purpose": "batch"}).encode()
    for target in BYPASSES:
        before = ids(ruled.audit_db)
        answer = send(
            ruled,
            "api.openai.com",
            "POST",
            target,
            [
                ("Authorization", f"Bearer {ruled.keys['alice']}"),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        assert answer.status in (400, 403), (target, answer.raw[:500])
        assert answer.header("x-should-retry") == "false"
        if answer.header("x-lmk-refused") is None:  # mitmproxy refused to parse it: no row
            continue
        row = new_row(ruled.audit_db, before)
        assert row["refused_by"] in ("path_not_canonical", "endpoint_not_allowed"), target
        assert row["status"] == answer.status
    assert mock.seen == [], [s.path for s in mock.seen]


def test_ambiguous_and_unknown_models_are_refused(ruled: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    headers: list[tuple[str, str | bytes]] = [
        ("Authorization", f"Bearer {ruled.keys['alice']}"),
        ("Content-Type", "application/json"),
    ]
    for body, rule in (
        (b'{"model": "gpt-4o-mini", "model": "gpt-4o", "messages": []}', "ambiguous_model"),
        (b'{"model": "gpt-4o-mini", "mod\\u0065l": "gpt-4o", "messages": []}', "ambiguous_model"),
        (b'{"messages": []}', "model_unknown"),
    ):
        before = ids(ruled.audit_db)
        answer = send(ruled, "api.openai.com", "POST", "/v1/chat/completions", headers, body)
        assert (answer.status, answer.header("x-lmk-refused")) == (400, rule)
        assert new_row(ruled.audit_db, before)["refused_by"] == rule
    assert mock.seen == []


def _status(gw: Gateway, model: str) -> int:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return send(
        gw,
        "api.openai.com",
        "POST",
        "/v1/chat/completions",
        [
            ("Authorization", f"Bearer {gw.keys['alice']}"),
            ("Content-Type", "application/json"),
        ],
        body.encode(),
    ).status


def test_a_reload_that_lists_a_model_takes_effect(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock, extra_toml=POLICY)
    gw.start()
    try:
        assert _status(gw, "gpt-4o") == 403
        text = gw.config.read_text()
        gw.config.write_text(text.replace('openai = ["gpt-4o-mini"]', 'openai = ["gpt-4o*"]'))
        wait_until(lambda: _status(gw, "gpt-4o") == 200, "gpt-4o to be allowed", RELOAD)
        assert _status(gw, "gpt-4o-mini") == 200
        assert _status(gw, "o3") == 403
    finally:
        gw.stop()
