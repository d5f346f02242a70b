"""Official SDKs and curl through a real `lmk serve`, configured only by `lmk env`.

Each client runs in its own process with the environment `lmk env alice` printed; only the
providers are replaced, by the mock upstream the proxy dials through `connect_to`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import REAL_KEYS, Gateway, run_client, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

SDK_CALLS = {
    "openai": """
from openai import OpenAI
r = OpenAI().chat.completions.create(model="gpt-4o-mini",
                                     messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
""",
    "anthropic": """
import anthropic
r = anthropic.Anthropic().messages.create(model="claude-3-5-haiku-latest", max_tokens=32,
                                          messages=[{"role": "user", "content": "hi"}])
print(r.content[0].text)
""",
    "cohere": """
import cohere
r = cohere.ClientV2().chat(model="command-r-plus", messages=[{"role": "user", "content": "hi"}])
print(r.message.content[0].text)
""",
    "huggingface": """
from huggingface_hub import InferenceClient
r = InferenceClient(provider="hf-inference").chat_completion(
    model="meta-llama/Llama-3.1-8B-Instruct", messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
""",
    "gemini": """
from google import genai
client = genai.Client()  # kept in a name: a temporary Client closes its HTTP client
r = client.models.generate_content(model="gemini-2.0-flash", contents="hi")
print(r.text)
""",
    "mistral": """
from mistralai.client import Mistral
r = Mistral(api_key=__import__("os").environ["MISTRAL_API_KEY"]).chat.complete(
    model="mistral-small-latest", messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
""",
}

# Where each SDK's request lands, and how the real key must arrive there.
EXPECTED = {
    "openai": ("api.openai.com", "authorization", f"Bearer {REAL_KEYS['openai']}"),
    "anthropic": ("api.anthropic.com", None, REAL_KEYS["anthropic"]),
    "cohere": ("api.cohere.com", "authorization", f"Bearer {REAL_KEYS['cohere']}"),
    "huggingface": ("router.huggingface.co", "authorization", f"Bearer {REAL_KEYS['huggingface']}"),
    "gemini": ("generativelanguage.googleapis.com", "x-goog-api-key", REAL_KEYS["gemini"]),
    "mistral": ("api.mistral.ai", "authorization", f"Bearer {REAL_KEYS['mistral']}"),
}

# The exception each SDK raises for a 401 (a subclass counts: huggingface_hub raises its
# RepositoryNotFoundError, an HfHubHTTPError, when the Hub's model lookup is refused).
AUTH_ERRORS = {
    "openai": "openai.AuthenticationError",
    "anthropic": "anthropic.AuthenticationError",
    "cohere": "cohere.errors.UnauthorizedError",
    "huggingface": "huggingface_hub.errors.HfHubHTTPError",
    "gemini": "google.genai.errors.ClientError",
    "mistral": "mistralai.client.errors.SDKError",
}


def _credential_seen(seen_headers: list[tuple[str, str]], header: str | None) -> str | None:
    for name, value in seen_headers:
        if header is None and name.lower() in ("x-api-key", "authorization"):
            return value.removeprefix("Bearer ")
        if header is not None and name.lower() == header:
            return value
    return None


@pytest.mark.parametrize("sdk", sorted(SDK_CALLS))
def test_sdk_call_succeeds_with_real_key_swapped_in(
    gateway: Gateway, mock: MockUpstream, sdk: str
) -> None:
    mock.clear()
    result = run_client(SDK_CALLS[sdk], gateway.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the SDK printed no answer"
    # `lmk env` sets one Google key variable only: google-genai warns when it sees both.
    assert "Both GOOGLE_API_KEY and GEMINI_API_KEY are set" not in result.stderr
    host, header, real = EXPECTED[sdk]
    hits = [s for s in mock.seen if s.host == host]
    assert hits, f"the mock saw no request for {host}: {[s.host for s in mock.seen]}"
    for seen in hits:
        assert _credential_seen(seen.headers, header) == real
        dump = json.dumps(seen.headers) + seen.path
        assert "lmk_" not in dump, "the master key (or its marker) went upstream"


@pytest.mark.parametrize("sdk", sorted(SDK_CALLS))
def test_wrong_master_key_raises_the_sdks_auth_error_and_nothing_goes_upstream(
    gateway: Gateway, mock: MockUpstream, sdk: str
) -> None:
    env = gateway.client_env("alice")
    wrong = "lmk_" + "x" * 43
    for name in list(env):
        if name.endswith(("_API_KEY", "HF_TOKEN")):
            env[name] = ("hf_" + wrong) if name == "HF_TOKEN" else wrong
    mock.clear()
    module, _, cls = AUTH_ERRORS[sdk].rpartition(".")
    code = f"""
import importlib
expected = getattr(importlib.import_module({module!r}), {cls!r})
try:
{_indent(SDK_CALLS[sdk])}
except expected as e:
    response = getattr(e, "response", None)
    print(getattr(e, "status_code", None) or getattr(e, "code", None)
          or getattr(response, "status_code", None))
    raise SystemExit(3)
"""
    result = run_client(code, env)
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert result.stdout.split()[0] == "401"
    assert mock.seen == []


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.strip().splitlines())


def curl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_curl_gemini_query_key_is_swapped(gateway: Gateway, mock: MockUpstream) -> None:
    env = gateway.client_env("alice")
    mock.clear()
    url = (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
        f"?key={gateway.keys['alice']}"
    )
    result = curl(
        env,
        "-H",
        "content-type: application/json",
        "-d",
        '{"contents":[{"parts":[{"text":"hi"}]}]}',
        url,
    )
    assert result.returncode == 0, result.stderr
    assert "candidates" in result.stdout
    [seen] = mock.seen
    assert f"key={REAL_KEYS['gemini']}" in seen.path
    assert "lmk_" not in seen.path


def test_curl_anthropic_x_api_key(gateway: Gateway, mock: MockUpstream) -> None:
    env = gateway.client_env("alice")
    mock.clear()
    result = curl(
        env,
        "https://api.anthropic.com/v1/messages",
        "-H",
        f"x-api-key: {gateway.keys['alice']}",
        "-H",
        "anthropic-version: 2023-06-01",
        "-H",
        "content-type: application/json",
        "-d",
        '{"model":"claude-3-5-haiku-latest","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}',
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "message"
    [seen] = mock.seen
    assert seen.header("x-api-key") == REAL_KEYS["anthropic"]


def test_provider_without_key_answers_clear_error_naming_the_setting(
    gateway: Gateway, mock: MockUpstream
) -> None:
    env = gateway.client_env("alice")
    mock.clear()
    result = curl(
        env,
        "-w",
        "\n%{http_code}",
        "https://api.vectara.io/v2/query",
        "-H",
        f"x-api-key: {gateway.keys['alice']}",
        "-d",
        "{}",
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "500"
    assert "providers.vectara.keys" in json.loads(body)["messages"][0]
    assert mock.seen == []


def test_stream_arrives_event_by_event(gateway: Gateway, mock: MockUpstream) -> None:
    code = """
import time, json
from openai import OpenAI
times = []
stream = OpenAI().chat.completions.create(model="gpt-4o-mini", stream=True,
    messages=[{"role": "user", "content": "hi"}],
    extra_headers={"x-mock-chunks": "8", "x-mock-chunk-delay": "0.2"})
for chunk in stream:
    times.append(time.monotonic())  # CLOCK_MONOTONIC: the same clock as the mock's
print(json.dumps({"id": stream.response.headers["x-mock-request-id"], "times": times}))
"""
    mock.clear()
    result = run_client(code, gateway.client_env("alice"))
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    sent = mock.sent_times[got["id"]]
    received = got["times"]
    assert len(received) >= 8
    # Each event reaches the client right after the mock wrote it, not when the stream ends:
    # a buffering proxy would deliver the first event about 8 x 0.2 s late.
    lags = [r - s for s, r in zip(sent, received, strict=False)]
    assert max(lags) < 0.1, lags
    assert received[-1] - received[0] > 0.2 * 6


def test_revoked_key_is_refused_on_next_request_without_restart(
    gateway: Gateway, mock: MockUpstream
) -> None:
    key = gateway.new_user("carol", "research")
    env = gateway.client_env("carol")
    call = (
        "import time\nfrom openai import OpenAI\nc = OpenAI()\n"
        + "print(c.models.list().data[0].id)\n"
    )
    # The reload (a poll every second) picks up the new user, then the revocation.
    wait_until(lambda: run_client(call, env).returncode == 0, "the new user to be accepted")
    assert run_lmk(gateway.config, "keys", "revoke", "carol").returncode == 0
    wait_until(lambda: run_client(call, env).returncode != 0, "the revoked key to be refused")
    mock.clear()
    result = run_client(call, env)
    assert result.returncode != 0 and "AuthenticationError" in result.stderr
    assert mock.seen == []
    assert key not in gateway.log.read_text()
