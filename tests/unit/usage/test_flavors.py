"""What a request is (flavor, model, stream), and asking a chat stream for its usage."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import json

import pytest

from llamakey.usage import (
    ApiFlavor,
    api_flavor,
    ensure_stream_usage,
    is_stream_request,
    request_model,
)
from tests.unit.usage.helpers import provider

# api_flavor / request_model / is_stream_request


@pytest.mark.parametrize(
    ("name", "method", "path", "flavor"),
    [
        ("openai", "POST", "/v1/chat/completions", "openai-chat"),
        ("openai", "POST", "/v1/responses", "openai-responses"),
        ("openai", "GET", "/v1/responses/resp_123", "other"),
        ("openai", "POST", "/v1/responses/resp_123/cancel", "other"),
        ("openai", "POST", "/v1/embeddings", "openai-embeddings"),
        ("openai", "POST", "/v1/completions", "openai-completions"),
        ("openai", "GET", "/v1/models", "other"),
        ("openai", "POST", "/v1/audio/transcriptions", "other"),
        (
            "azure",
            "POST",
            "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21",
            "openai-chat",
        ),
        (
            "azure",
            "POST",
            "/openai/deployments/emb/embeddings?api-version=2024-10-21",
            "openai-embeddings",
        ),
        ("azure", "POST", "/openai/v1/chat/completions", "openai-chat"),
        ("azure", "POST", "/openai/responses?api-version=2025-04-01-preview", "openai-responses"),
        ("anthropic", "POST", "/v1/messages", "anthropic-messages"),
        ("anthropic", "POST", "/v1/messages?beta=true", "anthropic-messages"),
        ("anthropic", "POST", "/v1/messages/count_tokens", "other"),
        ("deepseek", "POST", "/anthropic/v1/messages", "anthropic-messages"),
        ("deepseek", "POST", "/chat/completions", "openai-chat"),
        ("deepseek", "POST", "/v1/chat/completions", "openai-chat"),
        ("deepseek", "POST", "/beta/completions", "openai-completions"),
        ("xai", "POST", "/v1/messages", "anthropic-messages"),
        ("xai", "POST", "/v1/responses", "openai-responses"),
        ("perplexity", "POST", "/chat/completions", "openai-chat"),
        ("perplexity", "POST", "/v1/responses", "openai-responses"),
        ("groq", "POST", "/openai/v1/chat/completions", "openai-chat"),
        ("fireworks", "POST", "/inference/v1/chat/completions", "openai-chat"),
        ("fireworks", "POST", "/inference/v1/messages", "anthropic-messages"),
        ("openrouter", "POST", "/api/v1/chat/completions", "openai-chat"),
        ("huggingface", "POST", "/v1/chat/completions", "openai-chat"),
        ("huggingface", "POST", "/together/v1/chat/completions", "openai-chat"),
        (
            "huggingface",
            "POST",
            "/hf-inference/models/meta-llama/Llama-3.1-8B-Instruct/v1/chat/completions",
            "openai-chat",
        ),
        ("huggingface", "POST", "/hf-inference/models/BAAI/bge-small-en-v1.5", "other"),
        ("together", "POST", "/v1/chat/completions", "openai-chat"),
        ("mistral", "POST", "/v1/fim/completions", "openai-completions"),
        ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:generateContent", "gemini"),
        ("gemini", "POST", "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini"),
        ("gemini", "POST", "/v1beta/models/text-embedding-004:embedContent", "gemini"),
        ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:countTokens", "other"),
        ("gemini", "POST", "/v1beta/openai/chat/completions", "openai-chat"),
        ("cohere", "POST", "/v1/chat", "cohere-v1"),
        ("cohere", "POST", "/v1/embed", "cohere-v1"),
        ("cohere", "POST", "/v2/chat", "cohere-v2"),
        ("cohere", "POST", "/v2/embed", "cohere-v2"),
        ("cohere", "POST", "/compatibility/v1/chat/completions", "openai-chat"),
        ("vectara", "POST", "/v2/query", "other"),
        ("vectara", "POST", "/v2/chats", "other"),
        ("anyscale", "POST", "/v1/chat/completions", "openai-chat"),
    ],
)
def test_api_flavor(name: str, method: str, path: str, flavor: str) -> None:
    found = api_flavor(provider(name), method, path)
    assert isinstance(found, ApiFlavor)
    assert found == flavor


def test_request_model_from_body_url_and_form() -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    assert request_model(ApiFlavor.OPENAI_CHAT, "/v1/chat/completions", body) == "gpt-4o-mini"
    # Gemini names the model in the URL; the body has none.
    gem = b'{"contents": [{"parts": [{"text": "hi"}]}]}'
    assert request_model(
        ApiFlavor.GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", gem
    ) == ("gemini-2.5-flash")
    assert (
        request_model(
            ApiFlavor.GEMINI,
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
            gem,
        )
        == "gemini-2.0-flash-001"
    )
    # Azure classic: the deployment in the URL wins over the body's copy of it.
    azure_body = b'{"model": "ignored-body-model", "messages": [], "stream": true}'
    assert (
        request_model(
            ApiFlavor.OPENAI_CHAT,
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
            azure_body,
        )
        == "prod-gpt4o"
    )
    # Fireworks model ids are paths, kept whole.
    fw = b'{"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","messages":[]}'
    assert (
        request_model(ApiFlavor.OPENAI_CHAT, "/inference/v1/chat/completions", fw)
        == "accounts/fireworks/models/llama-v3p1-8b-instruct"
    )
    # HF task URL without a JSON body.
    assert (
        request_model(ApiFlavor.OTHER, "/hf-inference/models/BAAI/bge-small-en-v1.5", b"\x00\x01")
        == "BAAI/bge-small-en-v1.5"
    )
    # Multipart audio upload.
    form = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF....\r\n"
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--xyz--\r\n'
    )
    assert request_model(ApiFlavor.OTHER, "/v1/audio/transcriptions", form) == "whisper-1"


@pytest.mark.parametrize(
    "body",
    [b"", b"not json at all", b"[1,2,3]", b'{"model": 42}', b'{"model": ', b"\xff\xfe{"],
)
def test_request_model_tolerates_junk(body: bytes) -> None:
    assert request_model(ApiFlavor.OPENAI_CHAT, "/v1/chat/completions", body) is None


def test_is_stream_request() -> None:
    path = "/v1/chat/completions"
    assert is_stream_request(ApiFlavor.OPENAI_CHAT, path, b'{"model":"m","stream":true}')
    assert is_stream_request(
        ApiFlavor.OPENAI_CHAT, path, b'{"model": "m", "stream": true, "messages": []}'
    )
    assert not is_stream_request(ApiFlavor.OPENAI_CHAT, path, b'{"model":"m","stream":false}')
    assert not is_stream_request(ApiFlavor.OPENAI_CHAT, path, b'{"model":"m"}')
    # "stream" inside a message is not the top-level flag.
    assert not is_stream_request(
        ApiFlavor.OPENAI_CHAT,
        path,
        b'{"model":"m","messages":[{"role":"user","content":"\\"stream\\": true"}]}',
    )
    assert not is_stream_request(ApiFlavor.OPENAI_CHAT, path, b"garbage")
    assert is_stream_request(
        ApiFlavor.GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", b"{}"
    )
    assert not is_stream_request(
        ApiFlavor.GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", b'{"stream":true}'
    )


# ensure_stream_usage


def test_ensure_stream_usage_splices_without_touching_other_bytes() -> None:
    body = b'{"model": "gpt-4o", "stream": true, "temperature": 0.70, "messages": [{"role": "user", "content": "caf\\u00e9 \xc3\xa9"}]}'
    new = ensure_stream_usage(ApiFlavor.OPENAI_CHAT, provider("openai"), body)
    assert new is not None
    assert new == b'{"stream_options":{"include_usage":true},' + body[1:]
    parsed = json.loads(new)
    assert parsed["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in parsed.items() if k != "stream_options"} == json.loads(body)


def test_ensure_stream_usage_merges_existing_options() -> None:
    body = b'{"model":"deepseek-chat","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}'
    new = ensure_stream_usage(ApiFlavor.OPENAI_CHAT, provider("deepseek"), body)
    assert new is not None
    parsed = json.loads(new)
    assert parsed["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert (
        parsed["model"] == "deepseek-chat" and parsed["messages"] == [] and parsed["stream"] is True
    )
    # An explicit "no" is overridden: the meter drops the chunk so the client never sees it.
    declined = b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}'
    again = ensure_stream_usage(ApiFlavor.OPENAI_CHAT, provider("azure"), declined)
    assert again is not None and json.loads(again)["stream_options"] == {"include_usage": True}
    null_options = b'{"model":"gpt-4o","stream":true,"stream_options":null}'
    third = ensure_stream_usage(ApiFlavor.OPENAI_CHAT, provider("openai"), null_options)
    assert third is not None and json.loads(third)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("flavor", "name", "body"),
    [
        (
            "openai-chat",
            "openai",
            b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}',
        ),
        ("openai-chat", "openai", b'{"model":"gpt-4o","stream":false}'),
        ("openai-chat", "openai", b'{"model":"gpt-4o"}'),
        ("openai-chat", "openai", b"not json"),
        ("openai-chat", "openai", b'{"model":"gpt-4o","stream":true,"stream_options":"weird"}'),
        ("openai-responses", "openai", b'{"model":"gpt-4o","stream":true}'),
        ("anthropic-messages", "anthropic", b'{"model":"claude","stream":true}'),
        # These send usage unasked; the request is left as the client wrote it.
        ("openai-chat", "groq", b'{"model":"llama","stream":true}'),
        ("openai-chat", "mistral", b'{"model":"mistral-small-latest","stream":true}'),
        ("openai-chat", "openrouter", b'{"model":"openai/gpt-4o","stream":true}'),
    ],
)
def test_ensure_stream_usage_leaves_alone(flavor: str, name: str, body: bytes) -> None:
    assert ensure_stream_usage(ApiFlavor(flavor), provider(name), body) is None
