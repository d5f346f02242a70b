"""OpenAI's usage formats and the OpenAI-compatibles: every provider's answers, plain and streamed."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import pytest

from llamakey.usage import ApiFlavor, Usage, usage_from_body
from tests.unit.usage.helpers import assert_stream_usage, provider, stream_cases
from tests.unit.usage.payloads import (
    AZURE_CHAT,
    DEEPSEEK_CHAT,
    FIREWORKS_CHAT,
    GROQ_CHAT,
    HF_ROUTER_CHAT,
    MISTRAL_CHAT,
    OPENAI_CHAT,
    OPENAI_EMBEDDINGS,
    OPENAI_REASONING_CHAT,
    OPENAI_RESPONSES,
    OPENAI_RESPONSES_INCOMPLETE,
    OPENROUTER_CHAT,
    PERPLEXITY_CHAT,
    TOGETHER_CHAT,
    XAI_CHAT,
)

# Whole answers


@pytest.mark.parametrize(
    ("name", "flavor", "body", "expected"),
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
def test_usage_from_body(name: str, flavor: str, body: bytes, expected: Usage) -> None:
    got = usage_from_body(provider(name), ApiFlavor(flavor), body)
    assert got == expected


# Streams, cut at every byte


@pytest.mark.parametrize(
    ("name", "flavor", "data", "expected"),
    stream_cases(ApiFlavor.OPENAI_CHAT, ApiFlavor.OPENAI_RESPONSES),
)
def test_stream_usage_at_every_split(name: str, flavor: str, data: bytes, expected: Usage) -> None:
    assert_stream_usage(name, flavor, data, expected)


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
