"""A provider that echoes the real key back (in an error body, a stream, compressed, in a
header) must never hand it to the client: the mock quotes the credential it received
(`x-mock-echo-key`), and each test checks that the provider did get the real key and the
client did not."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_attacks import Answer, send
from tests.harness import REAL_KEYS, Gateway
from tests.mock_upstream import MockUpstream

# provider: (host, path, where the master key goes, body of a plain and of a streamed request)
TARGETS: dict[str, tuple[str, str, str, dict[str, object]]] = {
    "openai": (
        "api.openai.com",
        "/v1/chat/completions",
        "authorization",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    ),
    "anthropic": (
        "api.anthropic.com",
        "/v1/messages",
        "x-api-key",
        {
            "model": "claude-3-5-haiku-20241022",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
    "gemini": (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "?key",
        {"contents": [{"parts": [{"text": "hi"}]}]},
    ),
}


def echo(
    gateway: Gateway,
    mock: MockUpstream,
    provider: str,
    *knobs: tuple[str, str],
    body: dict[str, object] | None = None,
) -> Answer:
    """alice's request to `provider`, with the mock told to echo the key it receives; checks
    that what the provider got was the real key, and returns what the client got."""
    host, path, carrier, base = TARGETS[provider]
    key = gateway.keys["alice"]
    headers: list[tuple[str, str | bytes]] = [("Content-Type", "application/json"), *knobs]
    if carrier == "?key":
        path += f"?key={key}"
    elif carrier == "authorization":
        headers.append(("Authorization", f"Bearer {key}"))
    else:
        headers.append((carrier, key))
    mock.clear()
    answer = send(gateway, host, "POST", path, headers, json.dumps(body or base).encode())
    [seen] = mock.seen
    assert seen.sni == host
    received = seen.header("authorization") or seen.header("x-api-key") or seen.path
    assert REAL_KEYS[provider] in received, received  # the echo quotes the real key
    return answer


@pytest.mark.parametrize("provider", list(TARGETS))
def test_real_key_echoed_in_json_error_body_is_masked(
    gateway: Gateway, mock: MockUpstream, provider: str
) -> None:
    answer = echo(gateway, mock, provider, ("x-mock-echo-key", "body"))
    assert answer.status == 401
    assert "Incorrect API key provided: ***" in answer.content.decode()
    assert answer.holds(REAL_KEYS[provider]) == []


# (provider, body changes): which streams; the split offsets below are bytes into the key.
STREAMS: dict[str, tuple[str, dict[str, object]]] = {
    "anthropic": ("anthropic", {"stream": True}),
    "openai-include-usage": ("openai", {"stream": True, "stream_options": {"include_usage": True}}),
    # The client did not ask for usage: the proxy asks for it and holds each SSE event whole
    # to drop the usage-only one, which happens to keep a split key in one piece.
    "openai-injected-usage": ("openai", {"stream": True}),
}
OFFSETS = [1, 2, 13, 24, -1]  # -1: the key's last byte alone in the second chunk


@pytest.mark.parametrize(
    ("stream", "offset"),
    [pytest.param(n, o, id=f"{n}-at{o}") for n in STREAMS for o in OFFSETS],
)
def test_real_key_split_across_stream_chunks_is_masked(
    gateway: Gateway, mock: MockUpstream, stream: str, offset: int
) -> None:
    provider, changes = STREAMS[stream]
    at = len(REAL_KEYS[provider]) + offset if offset < 0 else offset
    answer = echo(
        gateway,
        mock,
        provider,
        ("x-mock-echo-key", "stream"),
        ("x-mock-split-at", str(at)),
        body={**TARGETS[provider][3], **changes},
    )
    assert answer.status == 200
    assert (answer.header("content-type") or "").startswith("text/event-stream")
    assert b"event: error" in answer.content
    assert answer.holds(REAL_KEYS[provider]) == []


def test_real_key_echoed_in_gzipped_error_body_is_masked(
    gateway: Gateway, mock: MockUpstream
) -> None:
    answer = echo(gateway, mock, "openai", ("x-mock-echo-key", "body"), ("x-mock-gzip", "force"))
    assert answer.status == 401
    assert answer.header("content-encoding") == "gzip"
    assert b"Incorrect API key provided" in answer.content
    assert answer.holds(REAL_KEYS["openai"]) == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_real_key_echoed_in_gzipped_stream_is_masked(
    gateway: Gateway, mock: MockUpstream, provider: str
) -> None:
    answer = echo(
        gateway,
        mock,
        provider,
        ("x-mock-echo-key", "stream"),
        ("x-mock-gzip", "force"),
        body={**TARGETS[provider][3], "stream": True},
    )
    assert answer.status == 200
    # The proxy decodes a stream the provider compressed anyway, to meter and mask it.
    assert answer.header("content-encoding") is None
    assert b"event: error" in answer.content
    assert answer.holds(REAL_KEYS[provider]) == []


@pytest.mark.parametrize("provider", list(TARGETS))
def test_real_key_echoed_in_response_headers_is_masked(
    gateway: Gateway, mock: MockUpstream, provider: str
) -> None:
    answer = echo(gateway, mock, provider, ("x-mock-echo-key", "header"))
    assert answer.status == 302
    location = answer.header("location") or ""
    assert location.startswith(f"https://{TARGETS[provider][0]}/login?key=")
    assert answer.header("x-mock-echo")
    assert answer.holds(REAL_KEYS[provider]) == []
