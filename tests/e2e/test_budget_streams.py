"""A stream that outgrows its budget, against a real `lmk serve`: each official SDK (openai,
anthropic, google-genai) receives the text streamed before the cut and then raises its own
error from the final error event; curl sees a complete, well-formed answer ending in that
event; the audit row says `cut_by = budget_exceeded`, and the budget's counter (in the
`sqlite` store, read here) holds the row's settled cost."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import ids, rows
from tests.harness import Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream, mock_text

USD = 60.0
CHUNKS = 300  # about 600 tokens of text: ten times what the budget pays for
# $1 a token in, out and cached: the budget pays for about 60 tokens.
# One budget per API (openai's per model), so that each test below spends its own.
TARGETS = (
    ("openai", "gpt-4o-mini"),
    ("anthropic", "*"),
    ("gemini", "*"),
    ("openai", "gpt-4.1-mini"),
)
PRICES = "".join(
    f'[prices."{model}"]\ninput_per_mtok = 1000000\noutput_per_mtok = 1000000\n'
    "cache_read_per_mtok = 1000000\ncache_write_per_mtok = 1000000\n"
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "gpt-4.1-mini")
)
BUDGETS = (
    "[defaults]\nbudgets = [\n"
    + "".join(
        f'  {{ usd = {USD}, per = "day", provider = "{p}", '
        + (f'model = "{m}", ' if m != "*" else "")
        + "reserve_output = 10 },\n"
        for p, m in TARGETS
    )
    + "]\n"
)
# Events 30 ms apart: the store answers an extension well within that, even on a busy machine.
DELAY = "0.03"
HEADERS = {"x-mock-chunks": str(CHUNKS), "x-mock-chunk-delay": DELAY}
MESSAGE = "alice: $60.00 per day (defaults.budgets.{n}) is spent; resets "

CLIENTS = {
    "openai": """
import openai
client = openai.OpenAI(max_retries=0)
stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
    messages=[{"role": "user", "content": "hi"}], extra_headers=HEADERS)
try:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
except openai.APIError as e:
    error = [type(e).__name__, e.message, e.body]
""",
    "anthropic": """
import anthropic
client = anthropic.Anthropic(max_retries=0)
stream = client.messages.create(model="claude-haiku-4-5", max_tokens=4096, stream=True,
    messages=[{"role": "user", "content": "hi"}], extra_headers=HEADERS)
try:
    for event in stream:
        if event.type == "content_block_delta":
            text.append(event.delta.text)
except anthropic.APIStatusError as e:
    error = [type(e).__name__, e.body["error"]["message"], e.body]
""",
    "responses": """
import openai
client = openai.OpenAI(max_retries=0)
stream = client.responses.create(model="gpt-4.1-mini", input="hi", stream=True,
    extra_headers=HEADERS)
try:
    for event in stream:
        if event.type == "response.output_text.delta":
            text.append(event.delta)
except openai.APIError as e:
    error = [type(e).__name__, e.message, e.body]
""",
    "gemini": """
from google import genai
from google.genai import errors, types
client = genai.Client(http_options=types.HttpOptions(headers=HEADERS))
try:
    for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
        text.append(chunk.text or "")
except errors.APIError as e:
    error = [type(e).__name__, e.message, e.code]
""",
}


def _run(gw: Gateway, sdk: str) -> dict[str, Any]:
    code = (
        f"import json\nHEADERS = {HEADERS!r}\ntext, error = [], None\n"
        + CLIENTS[sdk]
        + "print(json.dumps({'text': ''.join(text), 'error': error}))\n"
    )
    result = run_client(code, gw.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def _counter(gw: Gateway, n: int) -> float:
    provider, model = TARGETS[n]
    with sqlite3.connect(f"file:{gw.workdir / 'state.db'}?mode=ro", uri=True) as conn:
        found = conn.execute(
            "select total from counters where key = ?", (f"bg:user:alice:{provider}:{model}:usd",)
        ).fetchall()
    return float(sum(int(total) for (total,) in found)) / 1_000_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Any:
    state = '[state]\nbackend = "sqlite"\npath = "state.db"\n'
    gateway = make_gateway(
        tmp_path_factory.mktemp("budget-streams"), mock, extra_toml=BUDGETS + PRICES + state
    )
    gateway.start()
    yield gateway
    gateway.stop()


def _row(gw: Gateway, before: set[str]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def completed() -> bool:
        nonlocal found
        found = [r for r in rows(gw.audit_db, "completed_ts is not null") if r["id"] not in before]
        return bool(found)

    wait_until(completed, "the cut stream's audit row")
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    ("sdk", "n", "raised"),
    [
        ("openai", 0, "APIError"),
        ("anthropic", 1, "APIStatusError"),
        ("gemini", 2, "ClientError"),
        ("responses", 3, "APIError"),
    ],
)
def test_each_sdk_gets_the_text_then_raises_at_the_cut(
    gw: Gateway, mock: MockUpstream, sdk: str, n: int, raised: str
) -> None:
    mock.clear()
    before = ids(gw.audit_db)
    out = _run(gw, sdk)
    error = out["error"]
    assert error is not None, out
    assert error[0] == raised
    assert MESSAGE.format(n=n) in error[1] and error[1].endswith("; the answer was cut off")
    if sdk == "gemini":
        assert error[2] == 429
    if sdk == "anthropic":
        assert error[2]["error"]["type"] == "rate_limit_error"
    # What came before the cut reached the client, and it is a part of the answer only.
    full = mock_text(CHUNKS)
    assert 20 <= len(out["text"]) < len(full) // 4 and full.startswith(out["text"])

    row = _row(gw, before)
    assert (row["status"], row["cut_by"], row["refused_by"]) == (200, "budget_exceeded", None)
    assert MESSAGE.format(n=n) in row["error"]
    assert row["client_disconnected"] == 0
    cost = float(row["cost_usd"])
    assert USD / 2 < cost <= USD + 5  # at most about one event past the budget
    assert _counter(gw, n) == pytest.approx(cost, abs=1e-6)
    # Upstream was closed at the cut: the provider did not go on generating to the end.
    (seen,) = mock.seen
    assert len(mock.sent_times[seen.request_id]) < CHUNKS // 2


def _curl(gw: Gateway, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return subprocess.run(
        [
            "curl", "-sS", "-N", "--fail-with-body", *args,
            "https://api.openai.com/v1/chat/completions",
            "-H", "content-type: application/json",
            "-H", f"x-mock-chunks: {CHUNKS}", "-H", f"x-mock-chunk-delay: {DELAY}",
            "-H", "@-",
            "-d", json.dumps(body),
        ],
        input=f"Authorization: Bearer {gw.keys[user]}\n",
        capture_output=True, text=True, timeout=60, env=gw.client_env(user),
    )  # fmt: skip


def _events(out: str) -> list[dict[str, Any]]:
    return [json.loads(e.removeprefix("data: ")) for e in out.split("\n\n") if e.strip()]


def test_an_http2_client_gets_the_error_event_then_a_reset_stream(
    gw: Gateway, mock: MockUpstream
) -> None:
    mock.clear()
    result = _curl(gw, "bob", "--http2")
    # HTTP/2 to the client, HTTP/1 upstream: upstream is closed at the cut, and mitmproxy
    # resets the client's stream after the error event (curl's error 92).
    assert result.returncode == 92, result.stderr
    events = _events(result.stdout)
    assert len(events) > 5 and all("choices" in e for e in events[:-1])
    assert events[-1]["error"]["code"] == "budget_exceeded"
    (seen,) = mock.seen
    assert len(mock.sent_times[seen.request_id]) < CHUNKS // 2


HOLDING_CLIENT = """
import http.client, json, os, ssl, sys, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
conn = http.client.HTTPSConnection(proxy.hostname, proxy.port,
    context=ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]))
conn.set_tunnel("api.openai.com", 443)
conn.request("POST", "/v1/chat/completions", body=BODY, headers={**HEADERS,
    "content-type": "application/json", "authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
answer = conn.getresponse()
body = answer.read()
print(json.dumps({"status": answer.status, "body": body.decode()}), flush=True)
sys.stdin.read()  # keep the connection open until the test has looked
"""


def test_curl_gets_a_complete_answer_that_ends_in_the_error_event(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    # A gateway of its own: the module's spent its openai budget.
    state = '[state]\nbackend = "sqlite"\npath = "state.db"\n'
    gateway = make_gateway(
        tmp_path_factory.mktemp("budget-curl"), mock, extra_toml=BUDGETS + PRICES + state
    )
    gateway.start()
    try:
        result = _curl(gateway, "alice", "--http1.1")
        # Exit 0: the chunked answer ended properly (a cut connection is curl's error 18).
        assert result.returncode == 0, result.stderr
        events = _events(result.stdout)
        assert len(events) > 5 and all("choices" in e for e in events[:-1])
        last = events[-1]
        assert last["error"]["code"] == "budget_exceeded"
        assert last["error"]["type"] == "rate_limit_error"
        assert MESSAGE.format(n=0) in last["error"]["message"]

        # A client that keeps its connection open: the proxy itself closed upstream at the
        # cut, so the provider stopped and the flow ended while the client still waits.
        mock.clear()
        before = ids(gateway.audit_db)
        body = {"model": "gpt-4o-mini", "stream": True, "messages": []}
        code = f"BODY = {json.dumps(body)!r}\nHEADERS = {HEADERS!r}\n" + HOLDING_CLIENT
        client = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=gateway.client_env("bob"),
        )
        try:
            assert client.stdout is not None
            got = json.loads(client.stdout.readline())
            assert got["status"] == 200 and got["body"].rstrip().endswith("}")
            assert "budget_exceeded" in got["body"].rsplit("data: ", 1)[1]
            row = _row(gateway, before)
            assert row["cut_by"] == "budget_exceeded" and "bob: $60.00" in row["error"]
            (seen,) = mock.seen
            assert len(mock.sent_times[seen.request_id]) < CHUNKS // 2
            assert client.poll() is None  # the client had not left
        finally:
            client.communicate("", timeout=30)
    finally:
        gateway.stop()


CONCURRENT = """
import json, openai
from concurrent.futures import ThreadPoolExecutor
client = openai.OpenAI(max_retries=0)
def one(_):
    text = []
    try:
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "hi"}], extra_headers=HEADERS)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
        return ["done", len("".join(text))]
    except openai.APIError as e:
        return [type(e).__name__, len("".join(text))]
with ThreadPoolExecutor(4) as pool:
    print(json.dumps(list(pool.map(one, range(4)))))
"""


def test_concurrent_streams_share_the_budget_and_stop_at_it(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    usd = 200.0  # four reservations of about $31 fit; the streams then compete for the rest
    toml = (
        f'[defaults]\nbudgets = [{{ usd = {usd}, per = "day", reserve_output = 10 }}]\n'
        + PRICES
        + '[state]\nbackend = "sqlite"\npath = "state.db"\n'
    )
    gateway = make_gateway(
        tmp_path_factory.mktemp("budget-concurrent-streams"), mock, extra_toml=toml
    )
    gateway.start()
    try:
        before = ids(gateway.audit_db)
        result = run_client(f"HEADERS = {HEADERS!r}\n" + CONCURRENT, gateway.client_env("alice"))
        assert result.returncode == 0, result.stderr[-3000:]
        outcomes = json.loads(result.stdout.strip().splitlines()[-1])
        assert [name for name, _ in outcomes] == ["APIError"] * 4  # every one cut off
        assert all(size > 0 for _, size in outcomes)  # each had text first
        found: list[dict[str, Any]] = []

        def four() -> bool:
            nonlocal found
            found = [
                r
                for r in rows(gateway.audit_db, "completed_ts is not null")
                if r["id"] not in before
            ]
            return len(found) == 4

        wait_until(four, "four audit rows")
        assert {r["cut_by"] for r in found} == {"budget_exceeded"}
        spent = sum(float(r["cost_usd"]) for r in found)
        print(f"\nbudget ${usd:.2f}: four concurrent streams cut off, spent ${spent:.2f}")
        assert usd * 0.8 < spent <= usd + 4 * 5  # each past it by about one event at most
        with sqlite3.connect(f"file:{gateway.workdir / 'state.db'}?mode=ro", uri=True) as conn:
            ((total,),) = conn.execute("select total from counters").fetchall()
        assert int(total) / 1_000_000 == pytest.approx(spent, abs=1e-6)
    finally:
        gateway.stop()
