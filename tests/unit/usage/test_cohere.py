"""Cohere's native v1 and v2 usage, plain and streamed."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import pytest

from llamakey.usage import ApiFlavor, Usage, usage_from_body
from tests.unit.usage.helpers import assert_stream_usage, provider, stream_cases
from tests.unit.usage.payloads import (
    COHERE_V1_CHAT,
    COHERE_V2_CHAT,
    COHERE_V2_EMBED,
)

# Whole answers


@pytest.mark.parametrize(
    ("name", "flavor", "body", "expected"),
    [
        (
            "cohere", "cohere-v1", COHERE_V1_CHAT,
            Usage(input_tokens=17, output_tokens=6, finish_reason="COMPLETE"),
        ),
        (
            "cohere", "cohere-v2", COHERE_V2_CHAT,
            Usage(input_tokens=500, output_tokens=50, cache_read_tokens=1500, finish_reason="COMPLETE"),
        ),
        ("cohere", "cohere-v2", COHERE_V2_EMBED, Usage(input_tokens=1)),
    ],
)  # fmt: skip
def test_usage_from_body(name: str, flavor: str, body: bytes, expected: Usage) -> None:
    got = usage_from_body(provider(name), ApiFlavor(flavor), body)
    assert got == expected


# Streams, cut at every byte


@pytest.mark.parametrize(
    ("name", "flavor", "data", "expected"), stream_cases(ApiFlavor.COHERE_V1, ApiFlavor.COHERE_V2)
)
def test_stream_usage_at_every_split(name: str, flavor: str, data: bytes, expected: Usage) -> None:
    assert_stream_usage(name, flavor, data, expected)
