"""`StreamMeter`: framing, pass-through, holding back and dropping, whatever the family."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

import json
from typing import Any

import pytest

from llamakey.usage import ApiFlavor, StreamMeter, Usage
from tests.unit.usage.helpers import (
    all_splittings,
    feed_all,
    one_byte_chunks,
    provider,
)
from tests.unit.usage.payloads import (
    ANTHROPIC_STREAM,
    AZURE_STREAM,
    AZURE_STREAM_USAGE,
    AZURE_USAGE_EVENT,
    COHERE_V1_STREAM,
    DEEPSEEK_STREAM,
    DEEPSEEK_STREAM_USAGE,
    DEEPSEEK_USAGE_EVENT,
    OPENAI_STREAM,
    OPENAI_STREAM_HEAD,
    OPENAI_STREAM_USAGE,
    OPENAI_USAGE_EVENT,
    STREAM_CASES,
    TOGETHER_STREAM,
    TOGETHER_STREAM_USAGE,
)

# Metering, whatever the framing


@pytest.mark.parametrize(
    ("name", "flavor", "data"),
    [case[1:4] for case in STREAM_CASES],
    ids=[case[0] for case in STREAM_CASES],
)
def test_stream_passes_chunks_through_untouched(name: str, flavor: str, data: bytes) -> None:
    """Without drop mode the meter returns each chunk object itself and holds nothing back."""
    meter = StreamMeter(provider(name), ApiFlavor(flavor))
    chunks = [data[i : i + 97] for i in range(0, len(data), 97)]
    for chunk in chunks:
        assert meter.feed(chunk) is chunk
    assert meter.finish() == b""


def test_stream_usage_is_partial_on_disconnect() -> None:
    """Usage seen before the stream was cut is kept (here Anthropic's message_start)."""
    cut = ANTHROPIC_STREAM.index(b"event: content_block_start")
    meter = StreamMeter(provider("anthropic"), ApiFlavor.ANTHROPIC_MESSAGES)
    meter.feed(ANTHROPIC_STREAM[:cut])
    assert meter.usage == Usage(
        input_tokens=472, output_tokens=2, cache_read_tokens=2048, cache_write_tokens=0,
        model="claude-sonnet-4-20250514",
    )  # fmt: skip
    # The property is a snapshot, not the live object.
    snapshot = meter.usage
    snapshot.input_tokens = 1
    assert meter.usage.input_tokens == 472


def test_stream_without_usage_stays_empty() -> None:
    """An OpenAI stream that was not asked for usage reports only model-less finish."""
    data = OPENAI_STREAM_HEAD + b"data: [DONE]\n\n"
    meter = StreamMeter(provider("openai"), ApiFlavor.OPENAI_CHAT)
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

    monkeypatch.setattr("llamakey.usage.stream.json.loads", counting_loads)
    content = b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"token"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    finish_event = OPENAI_STREAM_HEAD.split(b"\n\n")[2] + b"\n\n"
    assert b'"finish_reason":"stop"' in finish_event
    meter = StreamMeter(provider("openai"), ApiFlavor.OPENAI_CHAT)
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
    meter = StreamMeter(provider("openai"), ApiFlavor.OPENAI_CHAT)
    for chunk in junk:
        assert meter.feed(chunk) is chunk
    assert meter.finish() == b""
    assert meter.usage.input_tokens is None


# Drop mode: the usage-only chunk we asked for is removed, nothing else is

DROP_CASES = [
    ("openai", "openai", OPENAI_STREAM, OPENAI_USAGE_EVENT, OPENAI_STREAM_USAGE),
    ("azure-crlf", "azure", AZURE_STREAM, AZURE_USAGE_EVENT, AZURE_STREAM_USAGE),
    ("deepseek", "deepseek", DEEPSEEK_STREAM, DEEPSEEK_USAGE_EVENT, DEEPSEEK_STREAM_USAGE),
]


@pytest.mark.parametrize(
    ("name", "data", "usage_event", "expected"),
    [case[1:] for case in DROP_CASES],
    ids=[case[0] for case in DROP_CASES],
)
def test_drop_mode_removes_exactly_the_usage_event(
    name: str, data: bytes, usage_event: bytes, expected: Usage
) -> None:
    assert data.count(usage_event) == 1
    want = data.replace(usage_event, b"")
    for chunks in all_splittings(data):
        meter = StreamMeter(provider(name), ApiFlavor.OPENAI_CHAT, drop_usage_only_chunk=True)
        forwarded = feed_all(meter, chunks)
        assert forwarded == want, f"split {[len(c) for c in chunks]}"
        assert meter.usage == expected


def test_drop_mode_returns_whole_event_chunks_as_is() -> None:
    """Chunks that hold whole events without usage are forwarded as the same object."""
    events = [e + b"\n\n" for e in OPENAI_STREAM.split(b"\n\n") if e]
    meter = StreamMeter(provider("openai"), ApiFlavor.OPENAI_CHAT, drop_usage_only_chunk=True)
    out = [meter.feed(e) for e in events]
    assert out[0] is events[0] and out[1] is events[1] and out[2] is events[2]
    assert out[3] == b""  # the usage-only event, dropped
    assert out[4] is events[4]  # [DONE]
    assert meter.finish() == b""


def test_drop_mode_holds_back_only_the_incomplete_event() -> None:
    first_end = OPENAI_STREAM.index(b"\n\n") + 2
    chunk = OPENAI_STREAM[: first_end + 10]
    meter = StreamMeter(provider("openai"), ApiFlavor.OPENAI_CHAT, drop_usage_only_chunk=True)
    assert meter.feed(chunk) == OPENAI_STREAM[:first_end]
    # The stream ends early: the held-back bytes come out at the end, unchanged.
    assert meter.finish() == OPENAI_STREAM[first_end : first_end + 10]


def test_drop_mode_keeps_usage_in_normal_chunks() -> None:
    """Usage riding on a chunk with choices (Together, Fireworks style) is never dropped."""
    for chunks in all_splittings(TOGETHER_STREAM):
        meter = StreamMeter(provider("together"), ApiFlavor.OPENAI_CHAT, drop_usage_only_chunk=True)
        assert feed_all(meter, chunks) == TOGETHER_STREAM
        assert meter.usage == TOGETHER_STREAM_USAGE


def test_drop_flag_ignored_outside_chat_streams() -> None:
    meter = StreamMeter(provider("cohere"), ApiFlavor.COHERE_V1, drop_usage_only_chunk=True)
    out = [meter.feed(c) for c in one_byte_chunks(COHERE_V1_STREAM)]
    assert b"".join(out) + meter.finish() == COHERE_V1_STREAM
    assert all(o for o in out)
