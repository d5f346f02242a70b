"""Step: stream unbuffered and meter."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from llamakey.state import GatewayState
from llamakey.steps.identify import IdentifyProvider
from tests.unit.builders import (
    mitm_context,
    provider_flow,
)


def identified(state: GatewayState, f: http.HTTPFlow) -> None:
    """Pass `f` through identify and authenticate as alice's request."""
    IdentifyProvider(state).requestheaders(f)
    IdentifyProvider(state).request(f)
    fs = state.flows(f)
    fs.user, fs.authenticated = "alice", True


# Meter: answers of unknown size pass through chunk by chunk, and are still metered


async def test_chunked_plain_answer_streams_and_is_metered(state: GatewayState) -> None:
    from llamakey.steps.meter import Meter

    meter = Meter(state)
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/chat/completions", content=body)
        identified(state, f)
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
    usage = state.flows(f).usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (11, 5)


async def test_plain_answer_of_known_size_is_read_whole(state: GatewayState) -> None:
    from llamakey.steps.meter import Meter

    meter = Meter(state)
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/embeddings", content=b'{"model":"m"}')
        identified(state, f)
        meter.request(f)
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        meter.responseheaders(f)
        assert f.response.stream is False


@pytest.mark.parametrize(
    ("message", "client_closed", "disconnected"),
    [
        ("Client disconnected.", False, True),  # HTTP/1
        ("stream reset by client (CANCEL)", False, True),  # HTTP/2 stream reset
        ("HTTP/2 connection closed: ConnectionTerminated", True, True),  # client hung up
        ("Server disconnected.", False, False),
    ],
)
async def test_a_client_going_away_is_recorded_on_every_protocol(
    state: GatewayState, message: str, client_closed: bool, disconnected: bool
) -> None:
    from mitmproxy import flow as mflow

    from llamakey.steps.meter import Meter

    meter = Meter(state)
    with mitm_context(meter):
        f = provider_flow("https://api.openai.com/v1/chat/completions", content=b'{"model":"m"}')
        identified(state, f)
        start = f.client_conn.timestamp_start
        f.client_conn.timestamp_end = start + 1 if client_closed else None
        f.error = mflow.Error(message)
        meter.error(f)
    assert state.flows(f).client_disconnected is disconnected


async def test_a_client_that_leaves_before_the_usage_is_metered_by_estimate(
    state: GatewayState,
) -> None:
    from mitmproxy import flow as mflow

    from llamakey.steps.meter import Meter

    meter = Meter(state)
    with mitm_context(meter):
        body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}).encode()
        f = provider_flow("https://api.openai.com/v1/chat/completions", content=body)
        identified(state, f)
        meter.request(f)
        f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        meter.responseheaders(f)
        tap = f.response.stream
        assert callable(tap)
        for n in range(3):
            tap(b'data: {"choices": [{"delta": {"content": "tok%d"}}]}\n\n' % n)
        f.client_conn.timestamp_end = None
        f.error = mflow.Error("Client disconnected.")
        meter.error(f)
    fs = state.flows(f)
    assert fs.client_disconnected and fs.usage_estimated
    assert fs.usage is not None and fs.usage.output_tokens == 3
    # A quarter of the body as the client sent it (as its budgets estimated it), not of the
    # body with the stream option we added.
    assert f.request.raw_content != body
    assert fs.usage.input_tokens == -(-len(body) // 4)
