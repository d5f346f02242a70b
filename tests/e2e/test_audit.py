"""Every flow in SQLite: exact tokens and cost per provider family, streaming and not; refusals
with the rule that refused them; a client that disconnects mid-stream; no credential stored."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import httpx
import pytest

from tests.harness import REAL_KEYS, Gateway, run_lmk
from tests.mock_upstream import MockUpstream

GENAI_PROVIDER = {"gemini": "google", "xai": "x-ai"}

# (family, host, path, body, stream body changes) per provider family; the model is one
# genai-prices knows, so cost is checked against its figure.
CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("openai", "chat", "api.openai.com", "/v1/chat/completions", {"model": "gpt-4o-mini"}),
    (
        "openai",
        "responses",
        "api.openai.com",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "hi"},
    ),
    (
        "azure",
        "chat",
        "myres.openai.azure.com",
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        {"model": "gpt-4o-mini"},
    ),
    (
        "anthropic",
        "messages",
        "api.anthropic.com",
        "/v1/messages",
        {"model": "claude-3-5-haiku-20241022", "max_tokens": 64},
    ),
    (
        "gemini",
        "generate",
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:generateContent",
        {"contents": [{"parts": [{"text": "hi"}]}]},
    ),
    ("cohere", "chat", "api.cohere.com", "/v2/chat", {"model": "command-r-plus"}),
    (
        "cohere",
        "chat_v1",
        "api.cohere.com",
        "/v1/chat",
        {"model": "command-r-plus", "message": "hi"},
    ),
    (
        "mistral",
        "chat",
        "api.mistral.ai",
        "/v1/chat/completions",
        {"model": "mistral-small-latest"},
    ),
    (
        "groq",
        "chat",
        "api.groq.com",
        "/openai/v1/chat/completions",
        {"model": "llama-3.1-8b-instant"},
    ),
    ("deepseek", "chat", "api.deepseek.com", "/chat/completions", {"model": "deepseek-chat"}),
    (
        "openrouter",
        "chat",
        "openrouter.ai",
        "/api/v1/chat/completions",
        {"model": "openai/gpt-4o-mini"},
    ),
    ("perplexity", "chat", "api.perplexity.ai", "/chat/completions", {"model": "sonar"}),
    ("xai", "chat", "api.x.ai", "/v1/chat/completions", {"model": "grok-3-mini"}),
    (
        "together",
        "chat",
        "api.together.xyz",
        "/v1/chat/completions",
        {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"},
    ),
    (
        "fireworks",
        "chat",
        "api.fireworks.ai",
        "/inference/v1/chat/completions",
        {"model": "accounts/fireworks/models/llama-v3p1-8b-instruct"},
    ),
]


def client(gateway: Gateway) -> httpx.Client:
    bundle = gateway.workdir / "certs" / "client-bundle.pem"
    return httpx.Client(
        proxy=f"http://127.0.0.1:{gateway.port}",
        timeout=30,
        verify=ssl.create_default_context(cafile=str(bundle)),
    )


def rows(db: Path, where: str = "1=1", *args: object) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"select * from requests where {where}", args)]


def new_row(db: Path, before: set[str], timeout: float = 10) -> dict[str, Any]:
    """The one completed row that was not there before (its completion follows the answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [r for r in rows(db, "completed_ts is not null") if r["id"] not in before]
        if fresh:
            assert len(fresh) == 1, fresh
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError("no new completed audit row")


def ids(db: Path) -> set[str]:
    return {r["id"] for r in rows(db)} if db.exists() else set()


def body_for(api: str, base: dict[str, Any], stream: bool) -> dict[str, Any]:
    body = dict(base)
    if api in ("chat", "messages", "chat_v1") and "messages" not in body and api != "chat_v1":
        body["messages"] = [{"role": "user", "content": "hi"}]
    if stream and api != "generate":
        body["stream"] = True
    return body


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("family", "api", "host", "path", "base"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_usage_and_cost_recorded_exactly(
    gateway: Gateway,
    mock: MockUpstream,
    family: str,
    api: str,
    host: str,
    path: str,
    base: dict[str, Any],
    stream: bool,
) -> None:
    if stream and api == "generate":
        path = path.replace(":generateContent", ":streamGenerateContent") + "?alt=sse"
    mock.clear()
    before = ids(gateway.audit_db)
    with client(gateway) as http:
        response = http.post(
            f"https://{host}{path}",
            json=body_for(api, base, stream),
            headers={
                "authorization": f"Bearer {gateway.keys['alice']}",
                "api-key": gateway.keys["alice"],
            },
        )
        text = response.text
    assert response.status_code == 200, text
    [seen] = mock.seen
    row = new_row(gateway.audit_db, before)
    expected = mock.usage_for(family, api)
    cache_read, cache_write = expected["cache_read_tokens"], expected["cache_write_tokens"]
    assert row["input_tokens"] == expected["input_tokens"] - cache_read - cache_write
    assert row["output_tokens"] == expected["output_tokens"]
    assert (row["cache_read_tokens"] or 0) == cache_read
    assert (row["cache_write_tokens"] or 0) == cache_write
    assert (row["reasoning_tokens"] or 0) == expected["reasoning_tokens"]
    assert row["provider_cost_usd"] == (
        pytest.approx(expected["cost_usd"]) if expected["cost_usd"] else None
    )
    model = row["response_model"] or row["model"]
    price = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=expected["input_tokens"],
            output_tokens=expected["output_tokens"],
            cache_read_tokens=cache_read or None,
            cache_write_tokens=cache_write or None,
        ),
        model,
        provider_id=GENAI_PROVIDER.get(family, family),
    )
    assert Decimal(str(row["cost_usd"])) == pytest.approx(price.total_price, rel=1e-9)
    assert row["user"] == "alice" and json.loads(row["groups"]) == ["research"]
    assert row["status"] == 200 and row["stream"] == int(stream)
    assert row["provider"] == family
    if stream and api == "chat" and family in ("openai", "azure", "deepseek"):
        # We asked upstream for stream usage; the client, who did not, got no usage-only chunk.
        assert json.loads(seen.body)["stream_options"]["include_usage"] is True
        events = [
            json.loads(line[5:])
            for line in text.splitlines()
            if line.startswith("data:") and "[DONE]" not in line
        ]
        assert not [e for e in events if e.get("usage") and not e.get("choices")]


def test_refusals_are_recorded_with_their_rule(gateway: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    with client(gateway) as http:
        wrong = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o-mini"},
            headers={"authorization": "Bearer lmk_" + "q" * 43},
        )
        missing = http.post(
            "https://api.vectara.io/v2/query", json={}, headers={"x-api-key": gateway.keys["alice"]}
        )
    assert (wrong.status_code, missing.status_code) == (401, 500)
    assert mock.seen == []
    time.sleep(0.5)
    refused = {r["refused_by"]: r for r in rows(gateway.audit_db, "refused_by is not null")}
    assert refused["unknown_master_key"]["status"] == 401
    assert refused["unknown_master_key"]["user"] is None
    assert refused["no_provider_key"]["user"] == "alice"


def test_client_disconnect_mid_stream_keeps_partial_usage(
    gateway: Gateway, mock: MockUpstream
) -> None:
    mock.clear()
    with (
        client(gateway) as http,
        http.stream(
            "POST",
            "https://api.anthropic.com/v1/messages",
            json={
                "model": "claude-3-5-haiku-20241022",
                "max_tokens": 64,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={
                "x-api-key": gateway.keys["bob"],
                "x-mock-chunks": "40",
                "x-mock-chunk-delay": "0.05",
            },
        ) as response,
    ):
        lines = response.iter_lines()
        for line in lines:
            if "content_block_delta" in line:
                break  # message_start (input usage) has arrived; hang up now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = rows(gateway.audit_db, "user = 'bob' and client_disconnected = 1")
        if found:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no row marked client_disconnected")
    row = found[-1]
    expected = mock.usage_for("anthropic", "messages")
    assert (
        row["input_tokens"]
        == expected["input_tokens"] - expected["cache_read_tokens"] - expected["cache_write_tokens"]
    )
    assert row["status"] == 200 and row["error"]
    # The provider's output count never came: it is estimated (at least one token per event
    # seen), priced, and marked as an estimate, never a silent $0.
    assert row["usage_estimated"] == 1
    assert row["output_tokens"] is not None and row["output_tokens"] >= 1
    assert row["cost_usd"] is not None and row["cost_usd"] > 0


def test_no_credential_in_any_table_and_usage_report(gateway: Gateway) -> None:
    db = gateway.audit_db
    blob = b"".join(p.read_bytes() for p in db.parent.glob("audit.db*"))
    for key in [*REAL_KEYS.values(), *gateway.keys.values()]:
        assert key.encode() not in blob
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    report = run_lmk(gateway.config, "usage", "--by", "provider", "--format", "json")
    assert report.returncode == 0, report.stderr
    by_provider = {r["provider"]: r for r in json.loads(report.stdout)}  # headed by --by
    assert by_provider["openai"]["requests"] >= 1
    verify = run_lmk(gateway.config, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_readme_sql_recipes_run_on_the_audit_database(gateway: Gateway) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```sql", 1)[1].split("```", 1)[0]
    recipes = [q.strip() for q in block.split(";") if q.strip()]
    assert len(recipes) == 7  # the canned queries of `lmk audit browse` (tests/unit/browse)
    with sqlite3.connect(f"file:{gateway.audit_db}?mode=ro", uri=True) as conn:
        [(day,)] = conn.execute("SELECT substr(max(ts), 1, 10) FROM requests WHERE user = 'alice'")
        results = [conn.execute(q, {"user": "alice", "day": day}).fetchall() for q in recipes]
    assert results[0][0][:1] == ("alice",)  # spend per user: alice made the calls above
    assert results[4], "refused requests by rule"
    assert results[6], "alice's day"
