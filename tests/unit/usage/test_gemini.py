"""Gemini's usageMetadata, plain, streamed as SSE and as one JSON array."""

from __future__ import annotations

import pytest

from llamakey.usage import ApiFlavor, Usage, usage_from_body
from tests.unit.usage.helpers import assert_stream_usage, provider, stream_cases
from tests.unit.usage.payloads import (
    GEMINI_RESPONSE,
)

# Whole answers


@pytest.mark.parametrize(
    ("name", "flavor", "body", "expected"),
    [
        (
            "gemini", "gemini", GEMINI_RESPONSE,
            Usage(input_tokens=200, output_tokens=250, cache_read_tokens=1000, reasoning_tokens=200,
                  model="gemini-2.5-flash", finish_reason="STOP"),
        ),
    ],
)  # fmt: skip
def test_usage_from_body(name: str, flavor: str, body: bytes, expected: Usage) -> None:
    got = usage_from_body(provider(name), ApiFlavor(flavor), body)
    assert got == expected


# Streams, cut at every byte


@pytest.mark.parametrize(("name", "flavor", "data", "expected"), stream_cases(ApiFlavor.GEMINI))
def test_stream_usage_at_every_split(name: str, flavor: str, data: bytes, expected: Usage) -> None:
    assert_stream_usage(name, flavor, data, expected)
