"""Usage extraction for every provider family, plain and streamed, split at every byte."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from llamakey import usage as usage_mod
from llamakey.usage import (
    StreamMeter,
    Usage,
    api_flavor,
    ensure_stream_usage,
    is_stream_request,
    request_model,
    usage_from_body,
)

# --------------------------------------------------------------------------------------------
# Helpers


def feed_all(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    """Feed chunks in order and return everything the meter forwarded, finish() included."""
    out = [meter.feed(c) for c in chunks]
    out.append(meter.finish())
    return b"".join(out)


def two_way_splits(data: bytes) -> Iterator[list[bytes]]:
    """The stream cut in two at every byte offset."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_splits(data: bytes, seed: int, count: int = 30) -> Iterator[list[bytes]]:
    """Streams cut at several random places (reproducible)."""
    rng = random.Random(seed)
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(data)), k=min(6, len(data) - 1)))
        bounds = [0, *cuts, len(data)]
        yield [data[a:b] for a, b in pairwise(bounds)]


def all_splittings(data: bytes, seed: int = 7) -> Iterator[list[bytes]]:
    yield [data]
    yield one_byte_chunks(data)
    yield from two_way_splits(data)
    yield from random_splits(data, seed)


def assert_stream_usage(provider: str, flavor: str, data: bytes, expected: Usage) -> None:
    """Every way of cutting the stream gives the same usage, and the bytes pass unchanged."""
    for chunks in all_splittings(data):
        meter = StreamMeter(provider, flavor)
        assert feed_all(meter, chunks) == data
        assert meter.usage == expected, f"split {[len(c) for c in chunks]}"


# --------------------------------------------------------------------------------------------
# api_flavor / request_model / is_stream_request


@pytest.mark.parametrize(
    ("provider", "method", "path", "flavor"),
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
def test_api_flavor(provider: str, method: str, path: str, flavor: str) -> None:
    assert api_flavor(provider, method, path) == flavor


def test_request_model_from_body_url_and_form() -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    assert request_model("openai-chat", "/v1/chat/completions", body) == "gpt-4o-mini"
    # Gemini names the model in the URL; the body has none.
    gem = b'{"contents": [{"parts": [{"text": "hi"}]}]}'
    assert request_model(
        "gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", gem
    ) == ("gemini-2.5-flash")
    assert (
        request_model(
            "gemini",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
            gem,
        )
        == "gemini-2.0-flash-001"
    )
    # Azure classic: the deployment in the URL wins over the body's copy of it.
    azure_body = b'{"model": "ignored-body-model", "messages": [], "stream": true}'
    assert (
        request_model(
            "openai-chat",
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
            azure_body,
        )
        == "prod-gpt4o"
    )
    # Fireworks model ids are paths, kept whole.
    fw = b'{"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","messages":[]}'
    assert (
        request_model("openai-chat", "/inference/v1/chat/completions", fw)
        == "accounts/fireworks/models/llama-v3p1-8b-instruct"
    )
    # HF task URL without a JSON body.
    assert (
        request_model("other", "/hf-inference/models/BAAI/bge-small-en-v1.5", b"\x00\x01")
        == "BAAI/bge-small-en-v1.5"
    )
    # Multipart audio upload.
    form = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF....\r\n"
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--xyz--\r\n'
    )
    assert request_model("other", "/v1/audio/transcriptions", form) == "whisper-1"


@pytest.mark.parametrize(
    "body",
    [b"", b"not json at all", b"[1,2,3]", b'{"model": 42}', b'{"model": ', b"\xff\xfe{"],
)
def test_request_model_tolerates_junk(body: bytes) -> None:
    assert request_model("openai-chat", "/v1/chat/completions", body) is None


def test_is_stream_request() -> None:
    path = "/v1/chat/completions"
    assert is_stream_request("openai-chat", path, b'{"model":"m","stream":true}')
    assert is_stream_request("openai-chat", path, b'{"model": "m", "stream": true, "messages": []}')
    assert not is_stream_request("openai-chat", path, b'{"model":"m","stream":false}')
    assert not is_stream_request("openai-chat", path, b'{"model":"m"}')
    # "stream" inside a message is not the top-level flag.
    assert not is_stream_request(
        "openai-chat",
        path,
        b'{"model":"m","messages":[{"role":"user","content":"\\"stream\\": true"}]}',
    )
    assert not is_stream_request("openai-chat", path, b"garbage")
    assert is_stream_request(
        "gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", b"{}"
    )
    assert not is_stream_request(
        "gemini", "/v1beta/models/gemini-2.5-flash:generateContent", b'{"stream":true}'
    )


# --------------------------------------------------------------------------------------------
# ensure_stream_usage


def test_ensure_stream_usage_splices_without_touching_other_bytes() -> None:
    body = b'{"model": "gpt-4o", "stream": true, "temperature": 0.70, "messages": [{"role": "user", "content": "caf\\u00e9 \xc3\xa9"}]}'
    new = ensure_stream_usage("openai-chat", "openai", body)
    assert new is not None
    assert new == b'{"stream_options":{"include_usage":true},' + body[1:]
    parsed = json.loads(new)
    assert parsed["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in parsed.items() if k != "stream_options"} == json.loads(body)


def test_ensure_stream_usage_merges_existing_options() -> None:
    body = b'{"model":"deepseek-chat","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}'
    new = ensure_stream_usage("openai-chat", "deepseek", body)
    assert new is not None
    parsed = json.loads(new)
    assert parsed["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert (
        parsed["model"] == "deepseek-chat" and parsed["messages"] == [] and parsed["stream"] is True
    )
    # An explicit "no" is overridden: the meter drops the chunk so the client never sees it.
    declined = b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}'
    again = ensure_stream_usage("openai-chat", "azure", declined)
    assert again is not None and json.loads(again)["stream_options"] == {"include_usage": True}
    null_options = b'{"model":"gpt-4o","stream":true,"stream_options":null}'
    third = ensure_stream_usage("openai-chat", "openai", null_options)
    assert third is not None and json.loads(third)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("flavor", "provider", "body"),
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
def test_ensure_stream_usage_leaves_alone(flavor: str, provider: str, body: bytes) -> None:
    assert ensure_stream_usage(flavor, provider, body) is None


# --------------------------------------------------------------------------------------------
# Non-streamed answers

OPENAI_CHAT = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "The \\"usage\\": {} field is fine.", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1919,
    "completion_tokens": 10,
    "total_tokens": 1929,
    "prompt_tokens_details": {"cached_tokens": 1792, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default"
}"""

OPENAI_REASONING_CHAT = b"""{"id":"chatcmpl-9","object":"chat.completion","created":1741570000,"model":"o4-mini-2025-04-16",
"choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"length"}],
"usage":{"prompt_tokens":120,"completion_tokens":1200,"total_tokens":1320,
"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
"completion_tokens_details":{"reasoning_tokens":1024,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"""

OPENAI_RESPONSES = b"""{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "model": "o4-mini-2025-04-16",
  "output": [
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
     "content": [{"type": "output_text", "text": "In a peaceful grove beneath a silver moon...", "annotations": []}]}
  ],
  "usage": {
    "input_tokens": 2048,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 2348
  }
}"""

OPENAI_RESPONSES_INCOMPLETE = b"""{"id":"resp_2","object":"response","created_at":1741476600,"status":"incomplete",
"incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4.1-2025-04-14","output":[],
"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":0},"output_tokens":16,
"output_tokens_details":{"reasoning_tokens":0},"total_tokens":66}}"""

OPENAI_EMBEDDINGS = b"""{
  "object": "list",
  "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, -0.0028842222]}],
  "model": "text-embedding-3-small",
  "usage": {"prompt_tokens": 8, "total_tokens": 8}
}"""

AZURE_CHAT = b"""{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello! How can I help?","refusal":null,"role":"assistant"}}],"created":1741569000,"id":"chatcmpl-AzURE1","model":"gpt-4o-2024-11-20","object":"chat.completion","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"system_fingerprint":"fp_ee1d74bde0","usage":{"completion_tokens":7,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":2065,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":1920},"total_tokens":2072}}"""

ANTHROPIC_MESSAGE = b"""{
  "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-20250514",
  "content": [{"type": "text", "text": "Hello!"}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 6,
    "service_tier": "standard"
  }
}"""

GEMINI_RESPONSE = b"""{
  "candidates": [
    {
      "content": {"parts": [{"text": "Cached answer."}], "role": "model"},
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 1200,
    "candidatesTokenCount": 50,
    "totalTokenCount": 1450,
    "cachedContentTokenCount": 1000,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
    "thoughtsTokenCount": 200
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "mG7HaLCjC4bKxs0P1_CQmA0"
}"""

COHERE_V1_CHAT = b"""{"response_id":"a29d2ee8","text":"LLMs are neural networks.","generation_id":"c1a6b0c4","chat_history":[{"role":"USER","message":"What is an LLM?"},{"role":"CHATBOT","message":"LLMs are neural networks."}],"finish_reason":"COMPLETE","meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":17,"output_tokens":6},"tokens":{"input_tokens":83,"output_tokens":6}}}"""

COHERE_V2_CHAT = b"""{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","message":{"role":"assistant","content":[{"type":"text","text":"LLMs are neural networks."}]},"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":2000,"output_tokens":50},"tokens":{"input_tokens":2070,"output_tokens":50},"cached_tokens":1500}}"""

COHERE_V2_EMBED = b"""{"id":"da6e531f","embeddings":{"float":[[0.016296387,-0.008354187]]},"texts":["hello"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":1}}}"""

MISTRAL_CHAT = b"""{"id":"cf79f7daaee244b1a0ae5c7b1444424a","object":"chat.completion","model":"mistral-small-latest","usage":{"prompt_tokens":24,"completion_tokens":27,"total_tokens":51,"prompt_audio_seconds":null},"created":1741569000,"choices":[{"index":0,"message":{"content":"Bonjour!","tool_calls":null,"prefix":false,"role":"assistant"},"finish_reason":"stop"}]}"""

GROQ_CHAT = b"""{"id":"chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22","object":"chat.completion","created":1730241104,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"message":{"role":"assistant","content":"Fast."},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.037493756,"prompt_tokens":18,"prompt_time":0.000680594,"completion_tokens":556,"completion_time":0.463333333,"total_tokens":574,"total_time":0.464013927,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_179b0f92c9","x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}"""

DEEPSEEK_CHAT = b"""{"id":"930c60df-bf64-41c9-a88e-3ec75f81e00e","object":"chat.completion","created":1741569000,"model":"deepseek-reasoner","choices":[{"index":0,"message":{"role":"assistant","content":"9.11 < 9.8","reasoning_content":"Compare decimals..."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1500,"completion_tokens":200,"total_tokens":1700,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":150},"prompt_cache_hit_tokens":1024,"prompt_cache_miss_tokens":476},"system_fingerprint":"fp_5417b77867_prod0225"}"""

OPENROUTER_CHAT = b"""{"id":"gen-1741569000-abc","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion","created":1741569000,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":194,"completion_tokens":2,"total_tokens":196,"cost":0.0000303,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.0000291,"upstream_inference_completions_cost":0.0000012},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}}"""

PERPLEXITY_CHAT = b"""{"id":"3c90c3cc-0d44-4b50-8888-8dd25736052a","model":"sonar-pro","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":150,"total_tokens":178,"search_context_size":"low","citation_tokens":20,"num_search_queries":1,"reasoning_tokens":0,"cost":{"input_tokens_cost":0.000024,"output_tokens_cost":0.00255,"request_cost":0.006,"total_cost":0.008574}},"object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"The answer [1]."}}],"citations":["https://example.com"],"search_results":[]}"""

XAI_CHAT = b"""{"id":"a3d1008e-4544-40d4-d075-11527e794e4a","object":"chat.completion","created":1741569000,"model":"grok-3-mini","choices":[{"index":0,"message":{"role":"assistant","content":"101 multiplied by 3 is 303.","reasoning_content":"Let me calculate...","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":32,"completion_tokens":9,"total_tokens":135,"prompt_tokens_details":{"text_tokens":32,"audio_tokens":0,"image_tokens":0,"cached_tokens":6},"completion_tokens_details":{"reasoning_tokens":94,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0,"cost_in_usd_ticks":1234500},"system_fingerprint":"fp_6ca29cf396"}"""

TOGETHER_CHAT = b"""{"id":"8e5dbc5e-0dbd-4ef1-b2b5-2d1a0a7f5a1e","object":"chat.completion","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","prompt":[],"choices":[{"finish_reason":"eos","seed":4221863839443458000,"logprobs":null,"index":0,"message":{"role":"assistant","content":"Hi!","tool_calls":[]}}],"usage":{"prompt_tokens":20,"completion_tokens":50,"total_tokens":70,"cached_tokens":0}}"""

FIREWORKS_CHAT = b"""{"id":"48b4ec56-d0cd-4d59-9a4d-8f1ad2e1b1f5","object":"chat.completion","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"total_tokens":39,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":0}}}"""

HF_ROUTER_CHAT = b"""{"object":"chat.completion","id":"","created":1741569000,"model":"meta-llama/Llama-3.1-8B-Instruct","system_fingerprint":"3.2.1-sha-4d28897","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":3,"total_tokens":45}}"""


@pytest.mark.parametrize(
    ("provider", "flavor", "body", "expected"),
    [
        (
            "openai", "openai-chat", OPENAI_CHAT,
            Usage(input_tokens=127, output_tokens=10, cache_read_tokens=1792, reasoning_tokens=0,
                  model="gpt-4.1-2025-04-14", finish_reason="stop"),
        ),
        (
            "openai", "openai-chat", OPENAI_REASONING_CHAT,
            Usage(input_tokens=120, output_tokens=1200, cache_read_tokens=0, reasoning_tokens=1024,
                  model="o4-mini-2025-04-16", finish_reason="length"),
        ),
        (
            "openai", "openai-responses", OPENAI_RESPONSES,
            Usage(input_tokens=1024, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=256,
                  model="o4-mini-2025-04-16", finish_reason="completed"),
        ),
        (
            "openai", "openai-responses", OPENAI_RESPONSES_INCOMPLETE,
            Usage(input_tokens=50, output_tokens=16, cache_read_tokens=0, reasoning_tokens=0,
                  model="gpt-4.1-2025-04-14", finish_reason="max_output_tokens"),
        ),
        (
            "openai", "openai-embeddings", OPENAI_EMBEDDINGS,
            Usage(input_tokens=8, model="text-embedding-3-small"),
        ),
        (
            "azure", "openai-chat", AZURE_CHAT,
            Usage(input_tokens=145, output_tokens=7, cache_read_tokens=1920, reasoning_tokens=0,
                  model="gpt-4o-2024-11-20", finish_reason="stop"),
        ),
        (
            "anthropic", "anthropic-messages", ANTHROPIC_MESSAGE,
            Usage(input_tokens=12, output_tokens=6, cache_read_tokens=3000, cache_write_tokens=1500,
                  model="claude-sonnet-4-20250514", finish_reason="end_turn"),
        ),
        (
            "gemini", "gemini", GEMINI_RESPONSE,
            Usage(input_tokens=200, output_tokens=250, cache_read_tokens=1000, reasoning_tokens=200,
                  model="gemini-2.5-flash", finish_reason="STOP"),
        ),
        (
            "cohere", "cohere-v1", COHERE_V1_CHAT,
            Usage(input_tokens=17, output_tokens=6, finish_reason="COMPLETE"),
        ),
        (
            "cohere", "cohere-v2", COHERE_V2_CHAT,
            Usage(input_tokens=500, output_tokens=50, cache_read_tokens=1500, finish_reason="COMPLETE"),
        ),
        ("cohere", "cohere-v2", COHERE_V2_EMBED, Usage(input_tokens=1)),
        (
            "mistral", "openai-chat", MISTRAL_CHAT,
            Usage(input_tokens=24, output_tokens=27, model="mistral-small-latest", finish_reason="stop"),
        ),
        (
            "groq", "openai-chat", GROQ_CHAT,
            Usage(input_tokens=18, output_tokens=556, cache_read_tokens=0,
                  model="llama-3.3-70b-versatile", finish_reason="stop"),
        ),
        (
            "deepseek", "openai-chat", DEEPSEEK_CHAT,
            Usage(input_tokens=476, output_tokens=200, cache_read_tokens=1024, reasoning_tokens=150,
                  model="deepseek-reasoner", finish_reason="stop"),
        ),
        (
            "openrouter", "openai-chat", OPENROUTER_CHAT,
            Usage(input_tokens=194, output_tokens=2, cache_read_tokens=0, reasoning_tokens=0,
                  provider_cost_usd=0.0000303, model="openai/gpt-4o-mini", finish_reason="stop"),
        ),
        (
            # Perplexity bills citation (and reasoning) tokens beside completion_tokens.
            "perplexity", "openai-chat", PERPLEXITY_CHAT,
            Usage(input_tokens=8, output_tokens=170, reasoning_tokens=0, provider_cost_usd=0.008574,
                  model="sonar-pro", finish_reason="stop"),
        ),
        (
            # xAI: total 135 = 32 prompt + 9 completion + 94 reasoning; reasoning is billed output.
            "xai", "openai-chat", XAI_CHAT,
            Usage(input_tokens=26, output_tokens=103, cache_read_tokens=6, reasoning_tokens=94,
                  provider_cost_usd=0.00012345, model="grok-3-mini", finish_reason="stop"),
        ),
        (
            "together", "openai-chat", TOGETHER_CHAT,
            Usage(input_tokens=20, output_tokens=50, cache_read_tokens=0,
                  model="meta-llama/Llama-3.3-70B-Instruct-Turbo", finish_reason="eos"),
        ),
        (
            "fireworks", "openai-chat", FIREWORKS_CHAT,
            Usage(input_tokens=19, output_tokens=20, cache_read_tokens=0,
                  model="accounts/fireworks/models/llama-v3p1-8b-instruct", finish_reason="stop"),
        ),
        (
            "huggingface", "openai-chat", HF_ROUTER_CHAT,
            Usage(input_tokens=42, output_tokens=3, model="meta-llama/Llama-3.1-8B-Instruct",
                  finish_reason="stop"),
        ),
    ],
)  # fmt: skip
def test_usage_from_body(provider: str, flavor: str, body: bytes, expected: Usage) -> None:
    got = usage_from_body(provider, flavor, body)
    assert got == expected


def test_usage_from_body_without_usage() -> None:
    assert usage_from_body("openai", "openai-chat", b"") is None
    assert usage_from_body("openai", "openai-chat", b"<html>Bad gateway</html>") is None
    assert usage_from_body("huggingface", "openai-chat", b'{"error":"Model not found"}') is None
    assert (
        usage_from_body(
            "openai",
            "openai-chat",
            b'{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}',
        )
        is None
    )
    assert usage_from_body("vectara", "other", b'{"summary":"x","search_results":[]}') is None
    assert usage_from_body("openai", "openai-chat", b'{"usage": {"prompt_tokens": true}}') is None


def test_usage_helpers() -> None:
    assert Usage().is_empty()
    assert Usage(model="gpt-4o", finish_reason="stop").is_empty()
    assert not Usage(output_tokens=0).is_empty()
    assert not Usage(provider_cost_usd=0.01).is_empty()
    d = Usage(input_tokens=1, model="m").as_dict()
    assert d == {
        "input_tokens": 1, "output_tokens": None, "cache_read_tokens": None, "cache_write_tokens": None,
        "reasoning_tokens": None, "provider_cost_usd": None, "model": "m", "finish_reason": None,
    }  # fmt: skip
    json.dumps(d)  # audit rows are JSON


# --------------------------------------------------------------------------------------------
# Streams

OPENAI_STREAM_HEAD = (
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":"The \\"usage\\": {\\"prompt_tokens\\": 5} key"},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n'
    b"\n"
)
OPENAI_USAGE_EVENT = (
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":17,"total_tokens":1217,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n'
    b"\n"
)
OPENAI_STREAM = OPENAI_STREAM_HEAD + OPENAI_USAGE_EVENT + b"data: [DONE]\n\n"
OPENAI_STREAM_USAGE = Usage(
    input_tokens=176, output_tokens=17, cache_read_tokens=1024, reasoning_tokens=0,
    model="gpt-4o-mini-2024-07-18", finish_reason="stop",
)  # fmt: skip

# Azure: \r\n line ends, a first chunk with choices: [] that is NOT the usage chunk (prompt
# filter results), and content filter results on every chunk.
AZURE_STREAM_HEAD = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"usage":null}\r\n'
    b"\r\n"
    b'data: {"choices":[{"content_filter_results":{},"delta":{"content":"Hi","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}\r\n'
    b"\r\n"
    b'data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}\r\n'
    b"\r\n"
)
AZURE_USAGE_EVENT = (
    b'data: {"choices":[],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":{"completion_tokens":2,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":30,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":32}}\r\n'
    b"\r\n"
)
AZURE_STREAM = AZURE_STREAM_HEAD + AZURE_USAGE_EVENT + b"data: [DONE]\r\n\r\n"
AZURE_STREAM_USAGE = Usage(
    input_tokens=30, output_tokens=2, cache_read_tokens=0, reasoning_tokens=0,
    model="gpt-4o-2024-11-20", finish_reason="stop",
)  # fmt: skip

DEEPSEEK_STREAM_HEAD = (
    b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
)
DEEPSEEK_USAGE_EVENT = b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[],"usage":{"prompt_tokens":1500,"completion_tokens":1,"total_tokens":1501,"prompt_tokens_details":{"cached_tokens":1408},"prompt_cache_hit_tokens":1408,"prompt_cache_miss_tokens":92}}\n\n'
DEEPSEEK_STREAM = DEEPSEEK_STREAM_HEAD + DEEPSEEK_USAGE_EVENT + b"data: [DONE]\n\n"
DEEPSEEK_STREAM_USAGE = Usage(
    input_tokens=92,
    output_tokens=1,
    cache_read_tokens=1408,
    model="deepseek-chat",
    finish_reason="stop",
)

RESPONSES_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"in_progress","error":null,"incomplete_details":null,"model":"o4-mini-2025-04-16","output":[],"usage":null}}\n'
    b"\n"
    b"event: response.in_progress\n"
    b'data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"in_progress","model":"o4-mini-2025-04-16","output":[],"usage":null}}\n'
    b"\n"
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"In a peaceful grove"}\n'
    b"\n"
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":1,"content_index":0,"text":"In a peaceful grove"}\n'
    b"\n"
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":6,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"model":"o4-mini-2025-04-16","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove","annotations":[]}]}],"usage":{"input_tokens":2048,"input_tokens_details":{"cached_tokens":1024},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":2348}}}\n'
    b"\n"
)
RESPONSES_STREAM_USAGE = Usage(
    input_tokens=1024, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=256,
    model="o4-mini-2025-04-16", finish_reason="completed",
)  # fmt: skip

# Anthropic: message_start carries input and cache counts; message_delta is cumulative, the
# second one (newer API versions) repeating the input counts.
ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":2,"service_tier":"standard"}}}\n'
    b"\n"
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":15}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}\n'
    b"\n"
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":89}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)
ANTHROPIC_STREAM_USAGE = Usage(
    input_tokens=472, output_tokens=89, cache_read_tokens=2048, cache_write_tokens=0,
    model="claude-sonnet-4-20250514", finish_reason="end_turn",
)  # fmt: skip

# Classic Anthropic: the final message_delta carries only output_tokens (input from the start).
ANTHROPIC_STREAM_CLASSIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude-3-5-haiku-20241022","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":64}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)
ANTHROPIC_CLASSIC_USAGE = Usage(
    input_tokens=25, output_tokens=64, model="claude-3-5-haiku-20241022", finish_reason="max_tokens"
)

GEMINI_SSE_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 38,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
    b'data: {"candidates": [{"content": {"parts": [{"text": " sky is blue because"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 10,"totalTokenCount": 48,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
    b'data: {"candidates": [{"content": {"parts": [{"text": " of Rayleigh scattering."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 25,"totalTokenCount": 63,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
)
GEMINI_STREAM_USAGE = Usage(
    input_tokens=8,
    output_tokens=55,
    reasoning_tokens=30,
    model="gemini-2.5-flash",
    finish_reason="STOP",
)

# Without alt=sse: one pretty-printed JSON array, delivered incrementally.
GEMINI_ARRAY_STREAM = b"""[{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "The"
          }
        ],
        "role": "model"
      },
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "totalTokenCount": 38,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 8
      }
    ],
    "thoughtsTokenCount": 30
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "xyz"
}
,
{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": " sky is blue because of Rayleigh scattering. {\\"usageMetadata\\": {}}"
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 25,
    "totalTokenCount": 63,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 8
      }
    ],
    "thoughtsTokenCount": 30
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "xyz"
}
]"""

# Cohere v1: newline-delimited JSON; the last line has no trailing newline.
COHERE_V1_STREAM = (
    b'{"is_finished":false,"event_type":"stream-start","generation_id":"77b3a6a6-4f6b-4c5c-a9c2-1c2f7f6a4d2e"}\n'
    b'{"is_finished":false,"event_type":"text-generation","text":"Hello"}\n'
    b'{"is_finished":false,"event_type":"text-generation","text":" there"}\n'
    b'{"is_finished":true,"event_type":"stream-end","response":{"response_id":"d1","text":"Hello there","generation_id":"77b3a6a6-4f6b-4c5c-a9c2-1c2f7f6a4d2e","chat_history":[{"role":"USER","message":"hi"},{"role":"CHATBOT","message":"Hello there"}],"finish_reason":"COMPLETE","meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":57,"output_tokens":2},"tokens":{"input_tokens":123,"output_tokens":2}}},"finish_reason":"COMPLETE"}'
)
COHERE_V1_STREAM_USAGE = Usage(input_tokens=57, output_tokens=2, finish_reason="COMPLETE")

COHERE_V2_STREAM = (
    b"event: message-start\n"
    b'data: {"id":"29f14a5a-11de-4cae-9800-25e4747408ed","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}\n'
    b"\n"
    b"event: content-start\n"
    b'data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}\n'
    b"\n"
    b"event: content-delta\n"
    b'data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}\n'
    b"\n"
    b"event: content-end\n"
    b'data: {"type":"content-end","index":0}\n'
    b"\n"
    b"event: message-end\n"
    b'data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":11},"tokens":{"input_tokens":71,"output_tokens":11},"cached_tokens":0}}}\n'
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
COHERE_V2_STREAM_USAGE = Usage(
    input_tokens=5, output_tokens=11, cache_read_tokens=0, finish_reason="COMPLETE"
)

MISTRAL_STREAM = (
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Bonjour"},"finish_reason":null}]}\n\n'
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"total_tokens":35,"completion_tokens":25}}\n\n'
    b"data: [DONE]\n\n"
)
MISTRAL_STREAM_USAGE = Usage(
    input_tokens=10, output_tokens=25, model="mistral-small-latest", finish_reason="stop"
)

GROQ_STREAM = (
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}\n\n'
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{"content":"Fast"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w","usage":{"queue_time":0.019,"prompt_tokens":40,"prompt_time":0.002,"completion_tokens":120,"completion_time":0.1,"total_tokens":160,"total_time":0.102}}}\n\n'
    b"data: [DONE]\n\n"
)
GROQ_STREAM_USAGE = Usage(
    input_tokens=40, output_tokens=120, model="llama-3.3-70b-versatile", finish_reason="stop"
)

# OpenRouter: SSE comments keep the connection alive; usage (with cost) in the last message.
OPENROUTER_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop","native_finish_reason":"end_turn","logprobs":null}]}\n\n'
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[],"usage":{"prompt_tokens":3000,"completion_tokens":12,"total_tokens":3012,"cost":0.00042,"is_byok":false,"prompt_tokens_details":{"cached_tokens":2000,"cache_write_tokens":500},"cost_details":{"upstream_inference_cost":null},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)
OPENROUTER_STREAM_USAGE = Usage(
    input_tokens=500, output_tokens=12, cache_read_tokens=2000, cache_write_tokens=500,
    reasoning_tokens=0, provider_cost_usd=0.00042, model="anthropic/claude-3.5-haiku",
    finish_reason="stop",
)  # fmt: skip

# Perplexity repeats the running usage on every chunk; the last one is complete.
PERPLEXITY_STREAM = (
    b'data: {"id":"3c90c3cc","model":"sonar","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9,"search_context_size":"low"},"object":"chat.completion.chunk","choices":[{"index":0,"finish_reason":null,"delta":{"role":"assistant","content":"The"}}]}\r\n\r\n'
    b'data: {"id":"3c90c3cc","model":"sonar","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":40,"total_tokens":48,"search_context_size":"low","citation_tokens":0,"num_search_queries":1,"reasoning_tokens":0,"cost":{"input_tokens_cost":0.000008,"output_tokens_cost":0.00004,"request_cost":0.005,"total_cost":0.005048}},"object":"chat.completion.chunk","choices":[{"index":0,"finish_reason":"stop","delta":{"role":"assistant","content":" answer"}}]}\r\n\r\n'
)
PERPLEXITY_STREAM_USAGE = Usage(
    input_tokens=8, output_tokens=40, reasoning_tokens=0, provider_cost_usd=0.005048, model="sonar",
    finish_reason="stop",
)  # fmt: skip

XAI_STREAM = (
    b'data: {"id":"a3d1008e","object":"chat.completion.chunk","created":1741569000,"model":"grok-4-0709","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"}}],"system_fingerprint":"fp_1"}\n\n'
    b'data: {"id":"a3d1008e","object":"chat.completion.chunk","created":1741569000,"model":"grok-4-0709","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":700,"completion_tokens":20,"total_tokens":1020,"prompt_tokens_details":{"text_tokens":700,"audio_tokens":0,"image_tokens":0,"cached_tokens":640},"completion_tokens_details":{"reasoning_tokens":300,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0,"cost_in_usd_ticks":52000000},"system_fingerprint":"fp_1"}\n\n'
    b"data: [DONE]\n\n"
)
XAI_STREAM_USAGE = Usage(
    input_tokens=60, output_tokens=320, cache_read_tokens=640, reasoning_tokens=300,
    provider_cost_usd=0.0052, model="grok-4-0709", finish_reason="stop",
)  # fmt: skip

TOGETHER_STREAM = (
    b'data: {"id":"8e5dbc5e","object":"chat.completion.chunk","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","choices":[{"index":0,"text":"Hi","logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":13347,"role":"assistant","content":"Hi","tool_calls":null}}],"usage":null}\n\n'
    b'data: {"id":"8e5dbc5e","object":"chat.completion.chunk","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"eos","seed":4221863839443458000,"delta":{"token_id":128009,"role":"assistant","content":"","tool_calls":null}}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22,"cached_tokens":0}}\n\n'
    b"data: [DONE]\n\n"
)
TOGETHER_STREAM_USAGE = Usage(
    input_tokens=20, output_tokens=2, cache_read_tokens=0,
    model="meta-llama/Llama-3.3-70B-Instruct-Turbo", finish_reason="eos",
)  # fmt: skip

FIREWORKS_STREAM = (
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"total_tokens":39,"completion_tokens":20}}\n\n'
    b"data: [DONE]\n\n"
)
FIREWORKS_STREAM_USAGE = Usage(
    input_tokens=19, output_tokens=20, model="accounts/fireworks/models/llama-v3p1-8b-instruct",
    finish_reason="stop",
)  # fmt: skip

STREAM_CASES: list[tuple[str, str, str, bytes, Usage]] = [
    ("openai-include-usage", "openai", "openai-chat", OPENAI_STREAM, OPENAI_STREAM_USAGE),
    ("azure", "azure", "openai-chat", AZURE_STREAM, AZURE_STREAM_USAGE),
    ("deepseek", "deepseek", "openai-chat", DEEPSEEK_STREAM, DEEPSEEK_STREAM_USAGE),
    ("responses", "openai", "openai-responses", RESPONSES_STREAM, RESPONSES_STREAM_USAGE),
    ("anthropic", "anthropic", "anthropic-messages", ANTHROPIC_STREAM, ANTHROPIC_STREAM_USAGE),
    (
        "anthropic-classic",
        "anthropic",
        "anthropic-messages",
        ANTHROPIC_STREAM_CLASSIC,
        ANTHROPIC_CLASSIC_USAGE,
    ),
    ("gemini-sse", "gemini", "gemini", GEMINI_SSE_STREAM, GEMINI_STREAM_USAGE),
    ("gemini-array", "gemini", "gemini", GEMINI_ARRAY_STREAM, GEMINI_STREAM_USAGE),
    ("cohere-v1", "cohere", "cohere-v1", COHERE_V1_STREAM, COHERE_V1_STREAM_USAGE),
    ("cohere-v2", "cohere", "cohere-v2", COHERE_V2_STREAM, COHERE_V2_STREAM_USAGE),
    ("mistral", "mistral", "openai-chat", MISTRAL_STREAM, MISTRAL_STREAM_USAGE),
    ("groq", "groq", "openai-chat", GROQ_STREAM, GROQ_STREAM_USAGE),
    ("openrouter", "openrouter", "openai-chat", OPENROUTER_STREAM, OPENROUTER_STREAM_USAGE),
    ("perplexity", "perplexity", "openai-chat", PERPLEXITY_STREAM, PERPLEXITY_STREAM_USAGE),
    ("xai", "xai", "openai-chat", XAI_STREAM, XAI_STREAM_USAGE),
    ("together", "together", "openai-chat", TOGETHER_STREAM, TOGETHER_STREAM_USAGE),
    ("fireworks", "fireworks", "openai-chat", FIREWORKS_STREAM, FIREWORKS_STREAM_USAGE),
]


@pytest.mark.parametrize(
    ("provider", "flavor", "data", "expected"),
    [case[1:] for case in STREAM_CASES],
    ids=[case[0] for case in STREAM_CASES],
)
def test_stream_usage_at_every_split(
    provider: str, flavor: str, data: bytes, expected: Usage
) -> None:
    assert_stream_usage(provider, flavor, data, expected)


@pytest.mark.parametrize(
    ("provider", "flavor", "data"),
    [case[1:4] for case in STREAM_CASES],
    ids=[case[0] for case in STREAM_CASES],
)
def test_stream_passes_chunks_through_untouched(provider: str, flavor: str, data: bytes) -> None:
    """Without drop mode the meter returns each chunk object itself and holds nothing back."""
    meter = StreamMeter(provider, flavor)
    assert not meter.first_chunk_seen
    chunks = [data[i : i + 97] for i in range(0, len(data), 97)]
    for chunk in chunks:
        assert meter.feed(chunk) is chunk
    assert meter.first_chunk_seen
    assert meter.finish() == b""


def test_stream_usage_is_partial_on_disconnect() -> None:
    """Usage seen before the stream was cut is kept (here Anthropic's message_start)."""
    cut = ANTHROPIC_STREAM.index(b"event: content_block_start")
    meter = StreamMeter("anthropic", "anthropic-messages")
    meter.feed(ANTHROPIC_STREAM[:cut])
    assert meter.usage == Usage(
        input_tokens=472, output_tokens=2, cache_read_tokens=2048, cache_write_tokens=0,
        model="claude-sonnet-4-20250514",
    )  # fmt: skip
    # The property is a snapshot, not the live object.
    snapshot = meter.usage
    snapshot.input_tokens = 1
    assert meter.usage.input_tokens == 472


def test_anthropic_delta_with_zero_input_keeps_start_input() -> None:
    """Some Anthropic-compatible servers put input_tokens: 0 in message_delta; keep the real one."""
    data = (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","content":[],"model":"deepseek-chat","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":300,"output_tokens":0}}}\n'
        b"\n"
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":0,"output_tokens":42}}\n'
        b"\n"
    )
    expected = Usage(
        input_tokens=300, output_tokens=42, model="deepseek-chat", finish_reason="end_turn"
    )
    assert_stream_usage("deepseek", "anthropic-messages", data, expected)


def test_responses_stream_failed_without_usage() -> None:
    """A failed Responses stream has no usage, but its terminal status is still recorded."""
    data = (
        b"event: response.failed\n"
        b'data: {"type":"response.failed","sequence_number":3,"response":{"id":"resp_3","object":"response","created_at":1741476542,"status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"incomplete_details":null,"model":"gpt-4.1-2025-04-14","output":[],"usage":null}}\n'
        b"\n"
    )
    assert_stream_usage(
        "openai",
        "openai-responses",
        data,
        Usage(model="gpt-4.1-2025-04-14", finish_reason="failed"),
    )


def test_stream_without_usage_stays_empty() -> None:
    """An OpenAI stream that was not asked for usage reports only model-less finish."""
    data = OPENAI_STREAM_HEAD + b"data: [DONE]\n\n"
    meter = StreamMeter("openai", "openai-chat")
    feed_all(meter, one_byte_chunks(data))
    assert meter.usage.is_empty()
    assert meter.usage.finish_reason == "stop"


def test_stream_meter_decodes_only_candidate_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long stream is not JSON-decoded chunk by chunk: only usage/finish lines are."""
    calls: list[int] = []
    real_loads = json.loads

    def counting_loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(s))
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(usage_mod.json, "loads", counting_loads)
    content = b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"token"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    finish_event = OPENAI_STREAM_HEAD.split(b"\n\n")[2] + b"\n\n"
    assert b'"finish_reason":"stop"' in finish_event
    meter = StreamMeter("openai", "openai-chat")
    for _ in range(2000):
        meter.feed(content)
    meter.feed(finish_event)
    meter.feed(OPENAI_USAGE_EVENT)
    meter.feed(b"data: [DONE]\n\n")
    meter.finish()
    assert meter.usage == OPENAI_STREAM_USAGE
    assert len(calls) == 2  # the finish chunk and the usage chunk


def test_stream_meter_survives_garbage() -> None:
    """Broken JSON or binary noise never raises and never alters the forwarded bytes."""
    junk = [
        b'data: {"usage": {"prompt_tokens": 3, \n\n',
        b"\xff\xfe\x00garbage\n",
        b'data: {"choices":[],"usage":{"prompt_tokens":"x"}}\n\n',
        b"data: [DONE]\n\n",
    ]
    meter = StreamMeter("openai", "openai-chat")
    for chunk in junk:
        assert meter.feed(chunk) is chunk
    assert meter.finish() == b""
    assert meter.usage.input_tokens is None


# --------------------------------------------------------------------------------------------
# Drop mode: the usage-only chunk we asked for is removed, nothing else is

DROP_CASES = [
    ("openai", "openai", OPENAI_STREAM, OPENAI_USAGE_EVENT, OPENAI_STREAM_USAGE),
    ("azure-crlf", "azure", AZURE_STREAM, AZURE_USAGE_EVENT, AZURE_STREAM_USAGE),
    ("deepseek", "deepseek", DEEPSEEK_STREAM, DEEPSEEK_USAGE_EVENT, DEEPSEEK_STREAM_USAGE),
]


@pytest.mark.parametrize(
    ("provider", "data", "usage_event", "expected"),
    [case[1:] for case in DROP_CASES],
    ids=[case[0] for case in DROP_CASES],
)
def test_drop_mode_removes_exactly_the_usage_event(
    provider: str, data: bytes, usage_event: bytes, expected: Usage
) -> None:
    assert data.count(usage_event) == 1
    want = data.replace(usage_event, b"")
    for chunks in all_splittings(data):
        meter = StreamMeter(provider, "openai-chat", drop_usage_only_chunk=True)
        forwarded = feed_all(meter, chunks)
        assert forwarded == want, f"split {[len(c) for c in chunks]}"
        assert meter.usage == expected


def test_drop_mode_returns_whole_event_chunks_as_is() -> None:
    """Chunks that hold whole events without usage are forwarded as the same object."""
    events = [e + b"\n\n" for e in OPENAI_STREAM.split(b"\n\n") if e]
    meter = StreamMeter("openai", "openai-chat", drop_usage_only_chunk=True)
    out = [meter.feed(e) for e in events]
    assert out[0] is events[0] and out[1] is events[1] and out[2] is events[2]
    assert out[3] == b""  # the usage-only event, dropped
    assert out[4] is events[4]  # [DONE]
    assert meter.finish() == b""


def test_drop_mode_holds_back_only_the_incomplete_event() -> None:
    first_end = OPENAI_STREAM.index(b"\n\n") + 2
    chunk = OPENAI_STREAM[: first_end + 10]
    meter = StreamMeter("openai", "openai-chat", drop_usage_only_chunk=True)
    assert meter.feed(chunk) == OPENAI_STREAM[:first_end]
    # The stream ends early: the held-back bytes come out at the end, unchanged.
    assert meter.finish() == OPENAI_STREAM[first_end : first_end + 10]


def test_drop_mode_keeps_usage_in_normal_chunks() -> None:
    """Usage riding on a chunk with choices (Together, Fireworks style) is never dropped."""
    for chunks in all_splittings(TOGETHER_STREAM):
        meter = StreamMeter("together", "openai-chat", drop_usage_only_chunk=True)
        assert feed_all(meter, chunks) == TOGETHER_STREAM
        assert meter.usage == TOGETHER_STREAM_USAGE


def test_drop_flag_ignored_outside_chat_streams() -> None:
    meter = StreamMeter("cohere", "cohere-v1", drop_usage_only_chunk=True)
    out = [meter.feed(c) for c in one_byte_chunks(COHERE_V1_STREAM)]
    assert b"".join(out) + meter.finish() == COHERE_V1_STREAM
    assert all(o for o in out)
