"""Anthropic's Messages usage, plain and streamed."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import pytest

from llamakey.usage import ApiFlavor, Usage, usage_from_body
from tests.unit.usage.helpers import assert_stream_usage, provider, stream_cases
from tests.unit.usage.payloads import (
    ANTHROPIC_MESSAGE,
)

# Whole answers


@pytest.mark.parametrize(
    ("name", "flavor", "body", "expected"),
    [
        (
            "anthropic", "anthropic-messages", ANTHROPIC_MESSAGE,
            Usage(input_tokens=12, output_tokens=6, cache_read_tokens=3000, cache_write_tokens=1500,
                  model="claude-sonnet-4-20250514", finish_reason="end_turn"),
        ),
    ],
)  # fmt: skip
def test_usage_from_body(name: str, flavor: str, body: bytes, expected: Usage) -> None:
    got = usage_from_body(provider(name), ApiFlavor(flavor), body)
    assert got == expected


# Streams, cut at every byte


@pytest.mark.parametrize(
    ("name", "flavor", "data", "expected"), stream_cases(ApiFlavor.ANTHROPIC_MESSAGES)
)
def test_stream_usage_at_every_split(name: str, flavor: str, data: bytes, expected: Usage) -> None:
    assert_stream_usage(name, flavor, data, expected)


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
