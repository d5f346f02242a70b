"""Step: stream unbuffered and meter."""

from __future__ import annotations

import json

from mitmproxy import http

from llamakey import state as keys
from llamakey.state import GatewayState
from tests.unit.builders import (
    mitm_context,
    provider_flow,
)

# Meter: answers of unknown size pass through chunk by chunk, and are still metered


async def test_chunked_plain_answer_streams_and_is_metered(state: GatewayState) -> None:
    from llamakey.steps.meter import USAGE, Meter

    meter = Meter(state)
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/chat/completions", content=body)
        f.metadata.update({keys.PROVIDER: "openai", keys.USER: "alice"})
        meter.request(f)
        answer = json.dumps(
            {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}
        ).encode()
        f.response = http.Response.make(200, b"", {"content-type": "application/json"})
        del f.response.headers["content-length"]  # chunked: size unknown
        meter.responseheaders(f)
        tap = f.response.stream
        assert callable(tap), "an answer of unknown size must not be buffered"
        halves = [answer[:20], answer[20:]]
        assert [tap(part) for part in halves] == halves  # forwarded as they come
        tap(b"")
        meter.response(f)
    assert f.metadata[USAGE]["input_tokens"] == 11
    assert f.metadata[USAGE]["output_tokens"] == 5


async def test_plain_answer_of_known_size_is_read_whole(state: GatewayState) -> None:
    from llamakey.steps.meter import Meter

    meter = Meter(state)
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/embeddings", content=b'{"model":"m"}')
        f.metadata.update({keys.PROVIDER: "openai", keys.USER: "alice"})
        meter.request(f)
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        meter.responseheaders(f)
        assert f.response.stream is False
