"""Routing a catalogued model across two deployments, with the official openai SDK through a
real `lmk serve`: one OpenAI-shaped deployment (api.openai.com, weight 3) and one
Azure-shaped (myres.openai.azure.com, weight 1), each on its own mock instance, the Azure one
checking Azure's request shape (path, api-version, `api-key`, the deployment as model).

What the client sees: the weights over N requests; a 503, a 429 or a dropped connection on
one deployment answered by the other before the client sees anything; a 400 passed through,
not retried; a stream broken after its first event passed on broken, not retried; every
deployment failing: the last status, not a 200. What the audit row says: the deployment that
served and each attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import make_gateway
from tests.e2e.test_audit import rows
from tests.harness import REAL_KEYS, Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream

AZURE_HOST = "myres.openai.azure.com"
CATALOGUE = """
[models.pool]
aliases = ["fast"]
cooldown_seconds = 30

[[models.pool.deployments]]
name = "oai"
kind = "openai"
model = "gpt-4o-mini"
weight = 3
connect_to = "127.0.0.1:{oai_port}"

[[models.pool.deployments]]
name = "azure-east"
kind = "azure"
endpoint = "https://myres.openai.azure.com"
deployment = "gpt4o-east"
api_version = "2024-10-21"
keys = ["${{LMK_TEST_AZURE_KEY}}"]
weight = 1
connect_to = "127.0.0.1:{azure_port}"
"""

# Each call prints one JSON line: ["ok", text, n_chunks] or [error class, status, message].
CLIENT = """
import json, openai
client = openai.OpenAI(max_retries=0)
def call(kind, model):
    try:
        if kind == "chat":
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}])
            return ["ok", r.choices[0].message.content, 0]
        if kind == "stream":
            text, n = "", 0
            for chunk in client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], stream=True):
                n += 1
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            return ["ok", text, n]
        if kind == "embeddings":
            r = client.embeddings.create(model=model, input="hi")
            return ["ok", len(r.data[0].embedding), 0]
        if kind == "responses":
            r = client.responses.create(model=model, input="hi")
            return ["ok", r.output_text, 0]
    except openai.APIStatusError as e:
        return [type(e).__name__, e.status_code, e.message]
    except Exception as e:
        return [type(e).__name__, None, str(e)]
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(WORKERS) as pool:
    for answer in pool.map(lambda c: call(*c), CALLS):
        print(json.dumps(answer), flush=True)
"""


class Pair:
    """The gateway and its two deployments' mocks."""

    def __init__(self, gateway: Gateway, oai: MockUpstream, azure: MockUpstream) -> None:
        self.gateway, self.oai, self.azure = gateway, oai, azure

    def calls(self, *calls: tuple[str, str], workers: int = 1) -> list[list[Any]]:
        code = f"CALLS, WORKERS = {list(calls)!r}, {workers}\n" + CLIENT
        result = run_client(code, self.gateway.client_env("alice"))
        assert result.returncode == 0, result.stderr[-3000:]
        return [json.loads(line) for line in result.stdout.strip().splitlines()]

    def rows(self, n: int) -> list[dict[str, Any]]:
        """The `n` routed rows, completed, oldest first."""
        db = self.gateway.audit_db

        def done() -> list[dict[str, Any]]:
            return rows(db, "completed_ts is not null and model in ('pool', 'fast')")

        wait_until(lambda: len(done()) >= n, f"{n} completed routed audit rows")
        found = sorted(done(), key=lambda r: r["ts"])
        assert len(found) == n
        return found


@pytest.fixture
def pair(tmp_path: Path, upstream_ca: trustme.CA, mock: MockUpstream) -> Iterator[Pair]:
    oai = MockUpstream(upstream_ca, chunk_delay=0.01)
    azure = MockUpstream(upstream_ca, chunk_delay=0.01)
    azure.steer["x-mock-azure-strict"] = "1"
    oai.start()
    azure.start()
    toml = CATALOGUE.format(oai_port=oai.port, azure_port=azure.port)
    gateway = make_gateway(tmp_path / "gw", mock, extra_toml=toml)
    gateway.start()
    try:
        yield Pair(gateway, oai, azure)
    finally:
        gateway.stop()
        oai.stop()
        azure.stop()


def attempts(row: dict[str, Any]) -> list[tuple[str, object]]:
    listed: list[dict[str, Any]] = json.loads(row["attempts"])
    return [(a["deployment"], a.get("error", a.get("status"))) for a in listed]


def test_weights_are_honoured_and_each_deployment_gets_its_own_request_shape(
    pair: Pair,
) -> None:
    n = 12
    answers = pair.calls(*[("chat", "fast" if i % 2 else "pool") for i in range(n)])
    assert answers == [["ok", "Hello from the mock upstream", 0]] * n
    assert (len(pair.oai.seen), len(pair.azure.seen)) == (9, 3)  # weights 3 : 1, exactly

    for seen in pair.oai.seen:
        assert (seen.host, seen.sni, seen.path) == (
            "api.openai.com",
            "api.openai.com",
            "/v1/chat/completions",
        )
        assert seen.header("authorization") == f"Bearer {REAL_KEYS['openai']}"
        assert seen.header("api-key") is None
        assert seen.json()["model"] == "gpt-4o-mini"
    for seen in pair.azure.seen:
        assert (seen.host, seen.sni) == (AZURE_HOST, AZURE_HOST)
        assert seen.path == "/openai/deployments/gpt4o-east/chat/completions?api-version=2024-10-21"
        assert seen.header("api-key") == REAL_KEYS["azure"]
        assert seen.header("authorization") is None
        assert seen.json()["model"] == "gpt4o-east"
    assert pair.oai.errors == pair.azure.errors == []

    found = pair.rows(n)
    assert [r["deployment"] for r in found].count("oai") == 9
    assert all(r["status"] == 200 and r["host"] == "api.openai.com" for r in found)
    assert all(attempts(r) == [(r["deployment"], 200)] for r in found)
    azure_row = next(r for r in found if r["deployment"] == "azure-east")
    assert azure_row["response_model"] == "gpt-4o-2024-11-20"  # what Azure reports
    assert azure_row["input_tokens"] and azure_row["cost_usd"]  # metered and priced (azure)


def test_streams_embeddings_and_responses_reach_both_shapes(pair: Pair) -> None:
    calls = [("stream", "fast"), ("embeddings", "fast"), ("responses", "fast")] * 4
    answers = pair.calls(*calls)
    streams = [a for (kind, _), a in zip(calls, answers, strict=True) if kind == "stream"]
    assert all(a[:2] == ["ok", "Hello from the mock upstream"] for a in streams), answers
    assert all(a[0] == "ok" for a in answers), answers
    paths = {s.path.partition("?")[0] for s in pair.azure.seen}
    assert paths == {
        "/openai/deployments/gpt4o-east/chat/completions",
        "/openai/deployments/gpt4o-east/embeddings",
        "/openai/responses",
    }
    assert {s.path for s in pair.oai.seen} == {
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/responses",
    }
    streamed = [r for r in pair.rows(len(calls)) if r["stream"]]
    assert all(r["output_tokens"] for r in streamed)  # usage read from both streams


def test_concurrent_routed_streams_each_get_their_own_whole_answer(pair: Pair) -> None:
    n = 16
    answers = pair.calls(*[("stream", "fast")] * n, workers=n)
    assert [a[:2] for a in answers] == [["ok", "Hello from the mock upstream"]] * n, answers
    assert (len(pair.oai.seen), len(pair.azure.seen)) == (12, 4)
    found = pair.rows(n)
    assert sorted(r["deployment"] for r in found) == ["azure-east"] * 4 + ["oai"] * 12
    broken = [
        (r["status"], r["error"], r["output_tokens"], r["attempts"], r["client_disconnected"])
        for r in found
        if not r["output_tokens"] or r["error"] is not None
    ]
    assert broken == []


@pytest.mark.parametrize(
    "fault",
    [{"x-mock-status": "503"}, {"x-mock-drop": "1"}],
    ids=["503", "dropped-connection"],
)
def test_a_failing_deployment_fails_over_before_the_client_sees_anything(
    pair: Pair, fault: dict[str, str]
) -> None:
    pair.oai.steer.update(fault)  # the first pick (weight 3)
    started = time.monotonic()
    answers = pair.calls(("chat", "fast"), ("stream", "fast"), ("chat", "fast"))
    elapsed = time.monotonic() - started
    assert [a[:2] for a in answers] == [["ok", "Hello from the mock upstream"]] * 3, answers
    # Tried once, then cooled down (30 s): the next requests go straight to the other.
    assert len(pair.oai.seen) == 1
    assert len(pair.azure.seen) == 3
    first, *rest = pair.rows(3)
    assert first["deployment"] == "azure-east" and first["status"] == 200
    failed = attempts(first)
    assert failed[1] == ("azure-east", 200)
    assert failed[0][0] == "oai"
    assert failed[0][1] == 503 or "Error" in str(failed[0][1])
    assert all(attempts(r) == [("azure-east", 200)] for r in rest)
    assert elapsed < 30


def test_retry_after_sets_the_cool_down(pair: Pair) -> None:
    pair.oai.steer.update({"x-mock-status": "429", "x-mock-retry-after": "1"})
    assert pair.calls(("chat", "fast"))[0][0] == "ok"
    assert len(pair.oai.seen) == 1  # 429, then the other answered
    pair.oai.steer.clear()
    deadline = time.monotonic() + 10
    # Not the model's 30 s: the deployment is tried again once its Retry-After has passed.
    while not any(r[0] == "oai" for r in _last_deployments(pair)):
        assert time.monotonic() < deadline, "the 429'd deployment never came back"
        pair.calls(("chat", "fast"))
    assert len(pair.oai.seen) >= 2


def _last_deployments(pair: Pair) -> list[tuple[str]]:
    done = rows(pair.gateway.audit_db, "completed_ts is not null and deployment is not null")
    return [(r["deployment"],) for r in done if r["status"] == 200 and len(attempts(r)) == 1]


def test_a_400_is_passed_through_and_not_retried(pair: Pair) -> None:
    pair.oai.steer["x-mock-status"] = "400"
    answers = pair.calls(("chat", "fast"))
    assert answers == [["BadRequestError", 400, "Error code: 400 - Mock error 400."]]
    assert (len(pair.oai.seen), len(pair.azure.seen)) == (1, 0)
    (row,) = pair.rows(1)
    assert (row["status"], row["deployment"], attempts(row)) == (400, "oai", [("oai", 400)])


def test_a_stream_broken_after_its_first_event_is_not_retried_and_is_reported(
    pair: Pair,
) -> None:
    pair.oai.steer["x-mock-abort-after"] = "1"
    (answer,) = pair.calls(("stream", "fast"))
    assert answer[0] != "ok", answer  # the client sees the break
    assert (len(pair.oai.seen), len(pair.azure.seen)) == (1, 0)
    (row,) = pair.rows(1)
    assert row["deployment"] == "oai"
    assert row["error"]  # the flow's error, as mitmproxy saw the answer break
    ((name, outcome),) = attempts(row)
    assert name == "oai" and str(outcome).startswith("after the first byte")
    assert json.loads(row["attempts"])[0]["status"] == 200


def test_when_every_deployment_fails_the_last_status_is_kept(pair: Pair) -> None:
    pair.oai.steer["x-mock-status"] = "503"
    pair.azure.steer["x-mock-status"] = "502"
    answers = pair.calls(("chat", "fast"))
    assert answers[0][:2] == ["InternalServerError", 502], answers
    (row,) = pair.rows(1)
    assert row["status"] == 502
    assert attempts(row) == [("oai", 503), ("azure-east", 502)]
