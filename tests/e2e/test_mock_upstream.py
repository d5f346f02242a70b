"""The mock upstream answers exactly what each official SDK parses.

Every SDK is pointed *directly* at the mock (no proxy): base URL https://localhost:<port>, the
trustme CA via SSL_CERT_FILE (the variable every httpx/httpx2-based SDK honours), and the
provider's host in `x-mock-host` where the path alone does not say which provider it is.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.mock_upstream import (
    AZURE_MODEL,
    EXTRA_CERT_NAMES,
    PROVIDER_HOSTS,
    MockUpstream,
    Seen,
    chunk_texts,
    mock_text,
)

# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    upstream = MockUpstream(trustme.CA(), chunk_delay=0.01)
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture(autouse=True)
def _trust_mock(mock: MockUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SDK clients built inside a test trust the mock's CA, and start from a clean record."""
    monkeypatch.setenv("SSL_CERT_FILE", str(mock.ca_pem_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    mock.clear()
    yield
    assert mock.errors == [], mock.errors[0] if mock.errors else ""


def only_seen(mock: MockUpstream) -> Seen:
    assert len(mock.seen) == 1, [(s.method, s.path) for s in mock.seen]
    return mock.seen[0]


def raw_request(
    mock: MockUpstream,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request through the stdlib client (which trusts the CA explicitly)."""
    import http.client

    ctx = ssl.create_default_context(cafile=str(mock.ca_pem_path))
    conn = http.client.HTTPSConnection("localhost", mock.port, context=ctx, timeout=10)
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def sse_data(raw: bytes) -> list[Any]:
    """The JSON payloads of an SSE body (ignoring [DONE])."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: ") :]))
    return out


# --------------------------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------------------------


def openai_client(mock: MockUpstream, path: str = "/v1", host: str = "api.openai.com") -> Any:
    import openai

    return openai.OpenAI(
        api_key="sk-real-openai",
        base_url=mock.url(path),
        default_headers={"x-mock-host": host},
        max_retries=0,
    )


def test_openai_chat(mock: MockUpstream) -> None:
    client = openai_client(mock)
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    expected = mock.usage_for("openai")
    assert result.choices[0].message.content == mock_text()
    assert result.model == "gpt-4o-mini"
    assert result.usage is not None
    assert result.usage.prompt_tokens == expected["input_tokens"] == 21
    assert result.usage.completion_tokens == expected["output_tokens"]
    assert result.usage.prompt_tokens_details.cached_tokens == expected["cache_read_tokens"]
    assert result.usage.completion_tokens_details.reasoning_tokens == expected["reasoning_tokens"]
    seen = only_seen(mock)
    assert (seen.host, seen.method, seen.path) == ("api.openai.com", "POST", "/v1/chat/completions")
    assert seen.header("Authorization") == "Bearer sk-real-openai"
    assert seen.json()["model"] == "gpt-4o-mini"


def test_openai_chat_stream_without_include_usage(mock: MockUpstream) -> None:
    client = openai_client(mock)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    # 5 content chunks + the finish chunk, and no usage anywhere (as real OpenAI without opt-in).
    assert len(chunks) == 6
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == mock_text()
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    seen = only_seen(mock)
    assert len(mock.sent_times[seen.request_id]) == 7  # + data: [DONE]


def test_openai_chat_stream_include_usage_and_chunk_count(mock: MockUpstream) -> None:
    client = openai_client(mock)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "3"},
    )
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks[:3]] == chunk_texts(3)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == {
        **chunks[-1].usage.model_dump(),
        **{k: v for k, v in mock.usage_for("openai")["raw"].items() if not isinstance(v, dict)},
    }
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_responses(mock: MockUpstream) -> None:
    client = openai_client(mock)
    result = client.responses.create(model="gpt-4.1", input="hi")
    expected = mock.usage_for("openai", "responses")
    assert result.output_text == mock_text()
    assert result.usage is not None
    assert result.usage.input_tokens == expected["input_tokens"]
    assert result.usage.output_tokens == expected["output_tokens"]
    assert result.usage.input_tokens_details.cached_tokens == expected["cache_read_tokens"]
    assert result.usage.output_tokens_details.reasoning_tokens == expected["reasoning_tokens"]
    assert only_seen(mock).path == "/v1/responses"


def test_openai_responses_stream(mock: MockUpstream) -> None:
    client = openai_client(mock)
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 5
    final = events[-1].response
    assert final.usage.output_tokens == mock.usage_for("openai", "responses")["output_tokens"]
    assert final.output_text == mock_text()


def test_openai_responses_stream_helper(mock: MockUpstream) -> None:
    # The SDK's accumulating helper checks event order and item ids, unlike the raw iterator.
    client = openai_client(mock)
    with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == chunk_texts()
    assert final.output_text == mock_text()
    assert final.usage is not None
    assert final.usage.input_tokens == 21


def test_openai_embeddings(mock: MockUpstream) -> None:
    client = openai_client(mock)
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == mock.usage_for("openai", "embeddings")["input_tokens"]
    as_b64 = client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="base64"
    )
    assert isinstance(as_b64.data[0].embedding, str)


def test_openai_errors(mock: MockUpstream) -> None:
    import openai

    client = openai_client(mock)
    with pytest.raises(openai.AuthenticationError) as auth:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-echo-auth": "1"},
        )
    assert "sk-real-openai" in auth.value.message
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"},
        )
    with pytest.raises(openai.NotFoundError):
        client.files.list()
    assert client.models.list().data[0].id == "gpt-4o-mini"


def test_azure_openai_chat_stream(mock: MockUpstream) -> None:
    import openai

    client: Any = openai.AzureOpenAI(
        api_key="azure-real-key",
        azure_endpoint=mock.url(),
        api_version="2024-10-21",
        default_headers={"x-mock-host": "myres.openai.azure.com"},
        max_retries=0,
    )
    chunks = list(
        client.chat.completions.create(
            model="my-deployment",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices == []  # Azure's prompt-filter chunk
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == mock.usage_for("azure")["input_tokens"]
    assert chunks[1].model == AZURE_MODEL
    seen = only_seen(mock)
    assert seen.path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert seen.header("api-key") == "azure-real-key"


@pytest.mark.parametrize(
    ("family", "host", "path"),
    [
        ("groq", "api.groq.com", "/openai/v1"),
        ("together", "api-inference.together.ai", "/v1"),
        ("fireworks", "api.fireworks.ai", "/inference/v1"),
        ("deepseek", "api.deepseek.com", ""),
        ("openrouter", "openrouter.ai", "/api/v1"),
        ("perplexity", "api.perplexity.ai", ""),
        ("xai", "api.x.ai", "/v1"),
        ("mistral", "api.mistral.ai", "/v1"),
        ("anyscale", "api.endpoints.anyscale.com", "/v1"),
        ("huggingface", "router.huggingface.co", "/v1"),
    ],
)
def test_openai_compatible_families(mock: MockUpstream, family: str, host: str, path: str) -> None:
    client = openai_client(mock, path, host)
    raw = mock.usage_for(family)["raw"]
    result = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert result.usage is not None
    assert result.usage.prompt_tokens == raw["prompt_tokens"]
    assert (
        result.usage.model_dump(exclude_none=True).items()
        >= {k: v for k, v in raw.items() if not isinstance(v, dict)}.items()
    )

    # A stream *without* include_usage: the families that always report it do so.
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == mock_text()
    stream_usage = [c.usage for c in chunks if c.usage is not None]
    extras = [c.model_extra or {} for c in chunks]
    if family in ("mistral", "together", "fireworks", "perplexity", "xai", "openrouter"):
        assert len(stream_usage) == 1
        assert stream_usage[0].completion_tokens == raw["completion_tokens"]
    else:
        assert stream_usage == []
    if family == "groq":
        assert extras[-1]["x_groq"]["usage"]["completion_tokens"] == raw["completion_tokens"]
    if family == "openrouter":
        assert chunks[-1].choices == []
        assert stream_usage[0].model_extra["cost"] == mock.usage_for(family)["cost_usd"]
    if family == "xai":
        assert stream_usage[0].model_extra["cost_in_usd_ticks"] == 1_234_500
    if family == "perplexity":
        assert stream_usage[0].model_extra["cost"]["total_cost"] == 0.00504
    if family == "deepseek":
        assert result.usage.model_extra["prompt_cache_hit_tokens"] == 10
    assert {s.host for s in mock.seen} == {host}


# --------------------------------------------------------------------------------------------
# Anthropic
# --------------------------------------------------------------------------------------------


def anthropic_client(mock: MockUpstream) -> Any:
    import anthropic

    return anthropic.Anthropic(
        api_key="sk-ant-real",
        base_url=mock.url(),
        default_headers={"x-mock-host": "api.anthropic.com"},
        max_retries=0,
    )


def test_anthropic_messages(mock: MockUpstream) -> None:
    client = anthropic_client(mock)
    message = client.messages.create(
        model="claude-opus-4-7", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    raw = mock.usage_for("anthropic")["raw"]
    assert message.content[0].text == mock_text()
    assert message.usage.input_tokens == raw["input_tokens"] == 25
    assert message.usage.cache_read_input_tokens == 12
    assert message.usage.cache_creation_input_tokens == 6
    assert message.usage.output_tokens == 30
    assert mock.usage_for("anthropic")["input_tokens"] == 25 + 12 + 6
    assert only_seen(mock).path == "/v1/messages"


def test_anthropic_stream(mock: MockUpstream) -> None:
    client = anthropic_client(mock)
    events = list(
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.cache_read_input_tokens == 12
    assert events[-2].usage.output_tokens == 30


def test_anthropic_stream_helper_and_error(mock: MockUpstream) -> None:
    import anthropic

    client = anthropic_client(mock)
    with client.messages.stream(
        model="claude-opus-4-7", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == mock_text()
    assert final.usage.output_tokens == 30
    assert final.usage.input_tokens == 25
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-echo-auth": "1"},
        )
    assert "sk-ant-real" in str(err.value)


# --------------------------------------------------------------------------------------------
# Cohere
# --------------------------------------------------------------------------------------------


def test_cohere_v2_chat_and_stream(mock: MockUpstream, caplog: pytest.LogCaptureFixture) -> None:
    import cohere

    client: Any = cohere.ClientV2(api_key="co-real", base_url=mock.url())
    messages: Any = [{"role": "user", "content": "hi"}]
    result = client.chat(model="command-a-03-2025", messages=messages)
    assert result.message.content is not None
    assert result.message.content[0].text == mock_text()
    assert result.usage is not None and result.usage.billed_units is not None
    assert result.usage.billed_units.input_tokens == mock.usage_for("cohere")["input_tokens"]
    assert result.usage.billed_units.output_tokens == 19

    # The SDK skips events it cannot parse with only a log warning: check every type arrived.
    events = list(client.chat_stream(model="command-a-03-2025", messages=messages))
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    kinds = [e.type for e in events]
    assert kinds == [
        "message-start",
        "content-start",
        *["content-delta"] * 5,
        "content-end",
        "message-end",
    ]
    texts = [e.delta.message.content.text for e in events if e.type == "content-delta"]
    assert "".join(texts) == mock_text()
    end = events[-1]
    assert end.delta.usage.billed_units.output_tokens == 19
    assert end.delta.finish_reason == "COMPLETE"
    assert [s.path for s in mock.seen] == ["/v2/chat", "/v2/chat"]


def test_cohere_v1_chat_and_stream(mock: MockUpstream) -> None:
    import cohere

    client: Any = cohere.Client(api_key="co-real", base_url=mock.url())
    result = client.chat(message="hi", model="command-r")
    assert result.text == mock_text()
    assert result.meta is not None and result.meta.billed_units is not None
    assert result.meta.billed_units.input_tokens == 40
    # v1 streams NDJSON, and the SDK silently drops lines it cannot parse.
    events = list(client.chat_stream(message="hi", model="command-r"))
    kinds = [e.event_type for e in events]
    assert kinds == ["stream-start", *["text-generation"] * 5, "stream-end"]
    end = events[-1]
    assert end.response.meta.billed_units.output_tokens == 19
    assert end.response.text == mock_text()


def test_cohere_error(mock: MockUpstream) -> None:
    import cohere
    from cohere.errors import UnauthorizedError

    client: Any = cohere.ClientV2(api_key="co-real", base_url=mock.url())
    with pytest.raises(UnauthorizedError) as err:
        client.chat(
            model="command-a-03-2025",
            messages=[{"role": "user", "content": "hi"}],
            request_options={"additional_headers": {"x-mock-echo-auth": "1"}},
        )
    assert "co-real" in err.value.body["message"]


# --------------------------------------------------------------------------------------------
# Google Gemini
# --------------------------------------------------------------------------------------------


def gemini_client(mock: MockUpstream, api_version: str | None = None) -> Any:
    from google import genai
    from google.genai import types

    return genai.Client(
        api_key="AIza-real",
        http_options=types.HttpOptions(
            base_url=mock.url("/"),
            api_version=api_version,
            headers={"x-mock-host": "generativelanguage.googleapis.com"},
        ),
    )


def test_gemini_generate_content(mock: MockUpstream) -> None:
    client = gemini_client(mock)
    result = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert result.text == mock_text()
    meta = result.usage_metadata
    assert meta is not None
    assert meta.prompt_token_count == 31
    assert meta.thoughts_token_count == 9
    assert meta.cached_content_token_count == 10
    assert (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0) == mock.usage_for(
        "gemini"
    )["output_tokens"]
    seen = only_seen(mock)
    assert seen.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert seen.header("x-goog-api-key") == "AIza-real"


def test_gemini_stream_v1beta(mock: MockUpstream) -> None:
    client = gemini_client(mock, api_version="v1beta")
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-pro", contents="hi"))
    assert len(chunks) == 5
    assert "".join(c.text or "" for c in chunks) == mock_text()
    assert all(c.usage_metadata.thoughts_token_count == 9 for c in chunks)
    assert chunks[-1].usage_metadata.total_token_count == 54
    assert chunks[0].usage_metadata.total_token_count < 54
    assert chunks[-1].model_version == "gemini-2.5-pro"
    assert only_seen(mock).path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


def test_gemini_error(mock: MockUpstream) -> None:
    from google.genai import errors, types

    client = gemini_client(mock)
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="hi",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(headers={"x-mock-status": "403"})
            ),
        )
    assert err.value.code == 403
    assert err.value.status == "PERMISSION_DENIED"


def test_gemini_json_array_stream(mock: MockUpstream) -> None:
    status, _, body = raw_request(
        mock,
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        {"contents": []},
        {"x-mock-chunks": "3"},
    )
    assert status == 200
    items = json.loads(body)
    assert len(items) == 3
    assert items[-1]["usageMetadata"]["totalTokenCount"] == 54


# --------------------------------------------------------------------------------------------
# Mistral
# --------------------------------------------------------------------------------------------


def test_mistral_chat_and_stream(mock: MockUpstream) -> None:
    from mistralai.client import Mistral

    client: Any = Mistral(api_key="mistral-real", server_url=mock.url())
    headers = {"x-mock-host": "api.mistral.ai"}
    messages: Any = [{"role": "user", "content": "hi"}]
    result = client.chat.complete(
        model="mistral-small-latest", messages=messages, http_headers=headers
    )
    assert result.choices[0].message is not None
    assert result.choices[0].message.content == mock_text()
    assert result.usage.prompt_tokens == mock.usage_for("mistral")["input_tokens"] == 16

    events = list(
        client.chat.stream(model="mistral-small-latest", messages=messages, http_headers=headers)
    )
    assert "".join(str(e.data.choices[0].delta.content or "") for e in events) == mock_text()
    assert events[-1].data.usage is not None
    assert events[-1].data.usage.completion_tokens == 11
    assert all(e.data.usage is None for e in events[:-1])
    assert [s.host for s in mock.seen] == ["api.mistral.ai"] * 2
    assert mock.seen[0].header("authorization") == "Bearer mistral-real"


def test_mistral_error(mock: MockUpstream) -> None:
    from mistralai.client import Mistral, errors

    client: Any = Mistral(api_key="mistral-real", server_url=mock.url())
    with pytest.raises(errors.SDKError) as err:
        client.chat.complete(
            model="mistral-small-latest",
            messages=[{"role": "user", "content": "hi"}],
            http_headers={"x-mock-host": "api.mistral.ai", "x-mock-status": "401"},
        )
    assert err.value.status_code == 401


# --------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hf_at_mock(mock: MockUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Send the Hub and router URLs of huggingface_hub (module constants) to the mock."""
    from huggingface_hub import constants
    from huggingface_hub.inference._providers import _common
    from huggingface_hub.utils import _http

    monkeypatch.setattr(constants, "ENDPOINT", mock.url())
    monkeypatch.setattr(constants, "INFERENCE_PROXY_TEMPLATE", mock.url("/{provider}"))
    _common._fetch_inference_provider_mapping.cache_clear()
    _http.close_session()  # the shared client was built before SSL_CERT_FILE pointed at the CA
    yield
    _http.close_session()
    _common._fetch_inference_provider_mapping.cache_clear()


MODEL_HF = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.usefixtures("hf_at_mock")
@pytest.mark.parametrize(
    ("provider", "hub_query", "chat_path"),
    [
        # Third-party providers: the mapping comes from the Hub, the call goes via the router.
        ("together", "?expand=inferenceProviderMapping", "/together/v1/chat/completions"),
        # HF's own serverless: a plain model_info check, then a per-model URL.
        ("hf-inference", "", f"/hf-inference/models/{MODEL_HF}/v1/chat/completions"),
    ],
)
def test_huggingface_inference_client(
    mock: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    provider: Any,
    hub_query: str,
    chat_path: str,
) -> None:
    from huggingface_hub import InferenceClient

    # The token comes from HF_TOKEN (as users set it), so the Hub lookup carries it too.
    monkeypatch.setenv("HF_TOKEN", "hf_real")
    client: Any = InferenceClient(
        provider=provider, headers={"x-mock-host": "router.huggingface.co"}
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    result = client.chat_completion(messages, model=MODEL_HF)
    assert result.choices[0].message.content == mock_text()
    assert result.usage.prompt_tokens == mock.usage_for("huggingface")["input_tokens"]

    chunks = list(
        client.chat_completion(
            messages, model=MODEL_HF, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == mock_text()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9

    # huggingface_hub may also fetch /api/agent-harnesses (cached for a day): look past it.
    hub, chat, _ = [s for s in mock.seen if "agent-harnesses" not in s.path]
    assert (hub.method, hub.path) == ("GET", f"/api/models/{MODEL_HF}{hub_query}")
    assert hub.header("authorization") == "Bearer hf_real"
    assert (chat.host, chat.path) == ("router.huggingface.co", chat_path)
    assert chat.header("authorization") == "Bearer hf_real"
    assert chat.json()["model"] == MODEL_HF


@pytest.mark.usefixtures("hf_at_mock")
def test_huggingface_error(mock: MockUpstream) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client: Any = InferenceClient(
        base_url=mock.url("/v1"),
        api_key="hf_real",
        headers={"x-mock-host": "router.huggingface.co", "x-mock-status": "429"},
    )
    with pytest.raises(HfHubHTTPError) as err:
        client.chat_completion([{"role": "user", "content": "hi"}], model="m")
    assert err.value.response.status_code == 429


# --------------------------------------------------------------------------------------------
# curl, wire behaviour, routing
# --------------------------------------------------------------------------------------------


def curl(mock: MockUpstream, *args: str) -> subprocess.CompletedProcess[str]:
    """curl with the real provider URL, connected to the mock like --connect-to does."""
    return subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            str(mock.ca_pem_path),
            "--connect-to",
            f"::127.0.0.1:{mock.port}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def test_curl_stream_is_unbuffered_and_keepalive(mock: MockUpstream) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [], "stream": True})
    out = curl(
        mock,
        "-v",
        "-N",
        "--http1.1",
        "-H",
        "x-mock-chunk-delay: 0.1",
        "-H",
        "content-type: application/json",
        "-d",
        body,
        "https://api.openai.com/v1/chat/completions",
        "--next",
        "--cacert",
        str(mock.ca_pem_path),
        "--connect-to",
        f"::127.0.0.1:{mock.port}",
        "https://api.openai.com/v1/models",
    )
    events = sse_data(out.stdout.split("\n{", 1)[0].encode())
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == mock_text()
    # The second request rides the same TLS connection: keep-alive after a chunked stream.
    assert "Re-using existing connection" in out.stderr or "Reusing existing" in out.stderr
    chat, models = mock.seen
    assert chat.host == models.host == "api.openai.com"
    assert models.path == "/v1/models"
    times = mock.sent_times[chat.request_id]
    assert len(times) == 7
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.09
    assert "transfer-encoding: chunked" in out.stderr.lower()


def test_stream_events_leave_one_by_one(mock: MockUpstream) -> None:
    """The client sees each event about when it was written, not all at the end."""
    import http.client

    ctx = ssl.create_default_context(cafile=str(mock.ca_pem_path))
    conn = http.client.HTTPSConnection("localhost", mock.port, context=ctx, timeout=10)
    conn.request(
        "POST",
        "/v1/messages",
        body=json.dumps({"model": "claude", "stream": True, "messages": []}),
        headers={"x-mock-chunk-delay": "0.15", "x-mock-chunks": "2"},
    )
    resp = conn.getresponse()
    first = resp.readline()
    got_first = time.monotonic()
    rest = resp.read()
    conn.close()
    assert first.startswith(b"event: message_start")
    seen = only_seen(mock)
    times = mock.sent_times[seen.request_id]
    assert len(times) == 8
    assert got_first < times[-1] - 0.5
    assert b"event: message_stop" in rest


def test_curl_gemini_query_key_echo(mock: MockUpstream) -> None:
    out = curl(
        mock,
        "-H",
        "x-mock-echo-auth: 1",
        "-d",
        "{}",
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key=AIza-q",
    )
    body = json.loads(out.stdout)
    assert body["error"]["status"] == "UNAUTHENTICATED"
    assert "AIza-q" in body["error"]["message"]


def test_certificate_covers_every_provider_host(mock: MockUpstream) -> None:
    ctx = ssl.create_default_context(cafile=str(mock.ca_pem_path))
    names = [*PROVIDER_HOSTS, "otherres.openai.azure.com", *EXTRA_CERT_NAMES[1:]]
    for name in names:
        with (
            socket.create_connection(mock.address, timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() is not None
            assert tls.selected_alpn_protocol() in (None, "http/1.1")


def test_routing_and_controls(mock: MockUpstream) -> None:
    status, _, body = raw_request(mock, "POST", "/v1/unknown", {})
    assert status == 404
    assert json.loads(body)["error"]["code"] == "unknown_url"

    # An inference path on the Hub host does not exist.
    status, _, _ = raw_request(
        mock, "POST", "/v1/chat/completions", {}, {"x-mock-host": "huggingface.co"}
    )
    assert status == 404

    status, headers, body = raw_request(
        mock, "POST", "/v2/query", {"query": "q"}, {"x-mock-host": "api.vectara.io"}
    )
    assert status == 200 and json.loads(body)["summary"] == mock_text()
    assert headers["x-mock-request-id"].startswith("mock-")

    status, _, body = raw_request(
        mock,
        "POST",
        "/v2/query",
        {},
        {"x-mock-host": "api.vectara.io", "x-mock-status": "403"},
    )
    assert status == 403 and "messages" in json.loads(body)

    status, headers, body = raw_request(
        mock,
        "POST",
        "/v1/chat/completions",
        {"model": "m", "messages": []},
        {"x-mock-gzip": "1", "accept-encoding": "gzip", "x-mock-model": "gpt-x"},
    )
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["model"] == "gpt-x"

    status, _, body = raw_request(mock, "POST", "/v1/chat/completions", None, {})
    assert status == 200  # an empty body is an empty request, not an error

    hf_error = raw_request(
        mock,
        "GET",
        "/api/models/a/b",
        None,
        {"x-mock-host": "huggingface.co", "x-mock-status": "401"},
    )
    assert hf_error[0] == 401 and json.loads(hf_error[2]) == {
        "error": "Incorrect API key provided."
    }


def test_abort_after_drops_the_stream(mock: MockUpstream) -> None:
    import http.client

    ctx = ssl.create_default_context(cafile=str(mock.ca_pem_path))
    conn = http.client.HTTPSConnection("localhost", mock.port, context=ctx, timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "m", "stream": True, "messages": []}),
        headers={"x-mock-abort-after": "2"},
    )
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert len(mock.sent_times[only_seen(mock).request_id]) == 2


def test_usage_for_is_consistent() -> None:
    upstream = MockUpstream(trustme.CA())
    try:
        fams = {
            "openai",
            "azure",
            "anthropic",
            "cohere",
            "huggingface",
            "vectara",
            "perplexity",
            "gemini",
            "mistral",
            "groq",
            "together",
            "deepseek",
            "openrouter",
            "xai",
            "fireworks",
            "anyscale",
        }
        for fam in fams:
            usage = upstream.usage_for(fam)
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert upstream.usage_for("xai")["cost_usd"] == pytest.approx(0.00012345)
        assert upstream.usage_for("cohere", "chat_v1")["raw"]["meta"]["billed_units"] == {
            "input_tokens": 40,
            "output_tokens": 19,
        }
        with pytest.raises(KeyError):
            upstream.usage_for("nope")
        with pytest.raises(RuntimeError):
            _ = upstream.address
    finally:
        upstream.stop()


def test_parallel_streams_do_not_wait_for_each_other(mock: MockUpstream) -> None:
    """Each connection has its own thread: two slow streams take as long as one."""
    from concurrent.futures import ThreadPoolExecutor

    def one_stream(index: int) -> int:
        body = raw_request(
            mock,
            "POST",
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": []},
            {"x-mock-chunk-delay": "0.1"},
        )[2]
        return len(sse_data(body))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        counts = list(pool.map(one_stream, range(3)))
    elapsed = time.monotonic() - start
    assert counts == [6, 6, 6]  # 5 content chunks + the finish chunk
    assert elapsed < 1.2, elapsed  # one stream alone: 6 gaps x 0.1 s
