"""Budgets while a stream flows (README "Budgets"): a stream reserves at most its budgets'
``reserve_output``, grows its reservation in the store as it goes, and once the store refuses,
the meter's tap cuts it off at an event boundary with a final error event in its format and a
well-formed end; settlement replaces all it held with its real cost. Streams no budget
watches keep the plain tap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http

from llamakey.providers import ErrorShape
from llamakey.state import GatewayState
from llamakey.steps.meter import Meter, _BudgetTap, _Tap
from llamakey.steps.ratelimit import RateLimits, StreamBudget
from llamakey.steps.settle import Settle
from llamakey.store import Admission, MemoryCounterStore, StoreUnavailable, Window
from llamakey.usage import ApiFlavor
from llamakey.usage.cut import Framing, OutputCount, error_event
from tests.unit.builders import mitm_context
from tests.unit.test_step_budgets import DAY, KEY, call, setup

# $0.001 an input token, $0.002 an output token (test_step_budgets.PRICES)
STREAM = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}).encode()
INPUT_USD = (len(STREAM) + 3) // 4 * 0.001
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "abcd"}}]}\n\n'  # one token


def usage_event(prompt: int, completion: int) -> bytes:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"


class Flaky(MemoryCounterStore):
    """Admits the first reservation, then is down."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        self.calls += 1
        if self.calls > 1:
            raise StoreUnavailable("down")
        return await super().add_within(key, amount, limit, window)


async def streaming(
    usd: float,
    store: MemoryCounterStore | None = None,
    on_store_error: str = "deny",
    content_type: str = "text/event-stream",
) -> tuple[GatewayState, RateLimits, MemoryCounterStore, Meter, http.HTTPFlow]:
    state, authorize, rate, store = setup(
        [{"usd": usd, "per": "day", "reserve_output": 10}], store, on_store_error
    )
    f = await call(state, authorize, STREAM)
    assert f.response is None
    state.flows(f).audited = True
    meter = Meter(state)
    meter.request(f)
    f.response = http.Response.make(
        200, b"", {"content-type": content_type, "transfer-encoding": "chunked"}
    )
    f.response.headers.pop("content-length", None)
    meter.responseheaders(f)
    return state, rate, store, meter, f


async def feed(f: http.HTTPFlow, events: int, chunk: bytes = EVENT) -> list[bytes]:
    """Send `events` chunks through the tap, letting the store's extensions run in between."""
    tap = f.response.stream if f.response else None
    assert callable(tap)
    out: list[bytes] = []
    for _ in range(events):
        got = tap(chunk)
        out.append(got if isinstance(got, bytes) else b"".join(got))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    return out


async def finish(
    state: GatewayState, rate: RateLimits, meter: Meter, f: http.HTTPFlow, cut: bool
) -> None:
    """The rest of the flow: upstream ended (`response`) or was closed at the cut (`error`)."""
    settle = Settle(state)
    if cut:
        f.error = mflow.Error("HTTP/1 protocol error: peer closed connection")
        meter.error(f)
        settle.error(f)
        pending = rate.error(f)
    else:
        tap = f.response.stream if f.response else None
        assert callable(tap)
        tap(b"")
        meter.response(f)
        settle.response(f)
        pending = rate.response(f)
    assert pending is not None
    await pending


async def test_a_stream_reserves_at_most_reserve_output_however_much_it_asks_for() -> None:
    state, authorize, _, store = setup([{"usd": 25.0, "per": "day", "reserve_output": 10}])
    asks = json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 4000}).encode()
    await call(state, authorize, asks)
    assert await store.total(KEY, DAY) == pytest.approx((len(asks) + 3) // 4 * 0.001 + 0.02)
    plain = json.dumps({"model": "gpt-4o-mini", "max_tokens": 4000}).encode()
    await call(state, authorize, plain)  # a plain answer cannot be cut: its worst case
    assert await store.total(KEY, DAY) == pytest.approx(
        (len(asks) + 3) // 4 * 0.001 + 0.02 + (len(plain) + 3) // 4 * 0.001 + 8.0
    )


async def test_a_stream_no_budget_watches_keeps_the_plain_tap() -> None:
    with mitm_context():
        _, _, _, _, watched = await streaming(1.0)
        assert watched.response is not None and type(watched.response.stream) is _BudgetTap
        state, authorize, _, _ = setup([])
        f = await call(state, authorize, STREAM)
        meter = Meter(state)
        meter.request(f)
        f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        meter.responseheaders(f)
    assert state.flows(f).allowance is None and type(f.response.stream) is _Tap


async def test_with_room_the_stream_grows_its_reservation_and_settles_to_its_cost() -> None:
    with mitm_context():
        state, rate, store, meter, f = await streaming(1.0)
        out = await feed(f, 50)  # 50 tokens: $0.113, past the $0.033 reserved
        assert out == [EVENT] * 50
        held = await store.total(KEY, DAY)
        assert held >= INPUT_USD + 50 * 0.002  # grown ahead of the stream, in steps of $0.02
        assert held <= INPUT_USD + 50 * 0.002 + 2 * 0.02
        usage = (
            b'data: {"choices": [], "usage": {"prompt_tokens": 13, "completion_tokens": 50}}\n\n'
        )
        await feed(f, 1, usage)
        await finish(state, rate, meter, f, cut=False)
    fs = state.flows(f)
    assert fs.cut is None and fs.cost_usd == pytest.approx(0.013 + 0.1)
    assert await store.total(KEY, DAY) == pytest.approx(0.113)


async def test_once_the_store_refuses_the_stream_is_cut_with_an_error_event() -> None:
    with mitm_context():
        # $0.06: the reservation ($0.033), one step ($0.02), then what is left ($0.007)
        state, rate, store, meter, f = await streaming(0.06)
        out = await feed(f, 40)
        assert f.response is not None
        allowed = int((0.06 - INPUT_USD) / 0.002)  # 23 tokens fit, the 24th crosses
        assert out[:allowed] == [EVENT] * allowed
        last = out[allowed]
        assert out[allowed + 1 :] == [b""] * (40 - allowed - 1)  # nothing after the cut
        # The crossing event, then the error event, framed as the last chunk, then the end
        # of the chunked body; the header is gone, so nothing more is framed after it.
        assert "transfer-encoding" not in f.response.headers
        size, rest = last.split(b"\r\n", 1)
        payload, end = rest[: int(size, 16)], rest[int(size, 16) :]
        assert end == b"\r\n0\r\n\r\n"
        assert payload.startswith(EVENT)
        error = json.loads(payload[len(EVENT) :].removeprefix(b"data: "))["error"]
        assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
        assert error["message"].startswith(
            "LlaMaKey: alice: $0.06 per day (defaults.budgets.0) is spent; resets "
        )
        assert error["message"].endswith("; the answer was cut off")
        fs = state.flows(f)
        assert fs.cut == error["message"]
        assert await store.total(KEY, DAY) == pytest.approx(0.06)
        await finish(state, rate, meter, f, cut=True)
    assert not fs.client_disconnected and fs.usage_estimated
    # Upstream was not closed here (no proxy): all it sent is billed, so all of it is counted.
    assert fs.usage is not None and fs.usage.output_tokens == 40
    assert fs.cost_usd == pytest.approx(INPUT_USD + 40 * 0.002)
    assert await store.total(KEY, DAY) == pytest.approx(fs.cost_usd)


async def test_the_cut_waits_for_the_end_of_an_event() -> None:
    with mitm_context():
        state, _, _, _, f = await streaming(INPUT_USD + 0.02)  # no room past the reservation
        out = await feed(f, 10)
        assert out == [EVENT] * 10
        half = len(EVENT) // 2
        (first,) = await feed(f, 1, EVENT[:half])  # due, but mid-event: no cut yet
        assert b"error" not in first and state.flows(f).cut is None
        (last,) = await feed(f, 1, EVENT[half:])
        size, rest = last.split(b"\r\n", 1)
        payload = rest[: int(size, 16)]
        assert (first + payload).startswith(EVENT)  # the event whole, then the error event
        assert payload.endswith(b"\n\n") and b"budget_exceeded" in payload[-300:]
        assert last.endswith(b"\r\n0\r\n\r\n") and state.flows(f).cut is not None


async def test_a_stream_without_event_boundaries_is_cut_where_it_crosses() -> None:
    with mitm_context():
        # One JSON document streamed (Gemini without alt=sse): no boundary, no error event.
        state, _, _, _, f = await streaming(INPUT_USD + 0.02, content_type="application/json")
        line = EVENT.rstrip(b"\n") + b"\n"  # whole lines, never a blank one between events
        out = await feed(f, 20, line)
        (last,) = [o for o in out if o.endswith(b"0\r\n\r\n")]
        assert out.index(last) == 10  # 10 tokens reserved: the 11th crosses
        assert b"budget_exceeded" not in last and state.flows(f).cut is not None


@pytest.mark.parametrize(("on_store_error", "cut"), [("deny", True), ("allow", False)])
async def test_a_store_down_while_it_flows_cuts_unless_allowed(
    on_store_error: str, cut: bool
) -> None:
    with mitm_context():
        state, _, _, _, f = await streaming(1.0, Flaky(), on_store_error)
        out = await feed(f, 30)
    assert (state.flows(f).cut is not None) == cut
    assert (out[-1] == b"") == cut


async def test_the_input_the_stream_reports_replaces_the_estimate() -> None:
    with mitm_context():
        _, _, _, _, f = await streaming(0.05)  # room for the reservation and $0.016 more
        # The provider counts 40 input tokens ($0.04): the output may reach $0.01, 5 tokens.
        await feed(f, 1, usage_event(40, 0))
        out = await feed(f, 10)
        assert out[:5] == [EVENT] * 5 and b"budget_exceeded" in out[5]


def _event(flavor: ApiFlavor, shape: ErrorShape) -> tuple[bytes, dict[str, Any]]:
    raw = error_event(flavor, shape, Framing.SSE, "LlaMaKey: spent")
    name, _, data = raw.rpartition(b"data: ")
    assert raw.endswith(b"\n\n")
    return name, json.loads(data)


def test_each_stream_format_gets_the_error_event_its_sdk_raises_on() -> None:
    name, body = _event(ApiFlavor.OPENAI_CHAT, ErrorShape.OPENAI)
    assert name == b"" and body["error"]["message"] == "LlaMaKey: spent"  # openai's APIError
    name, body = _event(ApiFlavor.OPENAI_RESPONSES, ErrorShape.OPENAI)
    assert name == b"event: error\n" and body["type"] == "error"  # the Responses API's own
    assert body["code"] == "budget_exceeded" and body["error"]["message"] == "LlaMaKey: spent"
    name, body = _event(ApiFlavor.ANTHROPIC_MESSAGES, ErrorShape.ANTHROPIC)
    assert name == b"event: error\n" and body["type"] == "error"
    assert body["error"] == {"type": "rate_limit_error", "message": "LlaMaKey: spent"}
    name, body = _event(ApiFlavor.GEMINI, ErrorShape.GOOGLE)
    assert name == b"" and list(body) == ["error"]  # google-genai: a chunk starting with error
    assert body["error"]["code"] == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    line = error_event(ApiFlavor.COHERE_V1, ErrorShape.COHERE, Framing.LINES, "LlaMaKey: spent")
    assert json.loads(line) == {"message": "LlaMaKey: spent"} and line.endswith(b"}\n")
    assert error_event(ApiFlavor.GEMINI, ErrorShape.GOOGLE, Framing.NONE, "x") == b""


@pytest.mark.parametrize(
    ("flavor", "events", "tokens"),
    [
        (ApiFlavor.OPENAI_CHAT, [{"choices": [{"delta": {"content": "x" * 9}}]}], 3),
        (
            ApiFlavor.ANTHROPIC_MESSAGES,
            [{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abcd"}}],
            1,
        ),
        (
            ApiFlavor.GEMINI,
            [{"candidates": [{"content": {"parts": [{"text": "x" * 16}]}}]}],
            4,
        ),
        (
            ApiFlavor.OPENAI_RESPONSES,
            [
                {"type": "response.output_text.delta", "delta": "abcdefgh"},
                {"type": "response.output_text.done", "text": "abcdefgh"},
                {"type": "response.completed", "response": {"output": [{"text": "abcdefgh"}]}},
            ],
            2,  # only the delta: the rest repeats it
        ),
        (
            ApiFlavor.COHERE_V1,
            [
                {"event_type": "text-generation", "text": "abcd"},
                {"event_type": "stream-end", "response": {"text": "abcd"}},
            ],
            1,
        ),
    ],
)
def test_the_output_count_reads_each_formats_text_once(
    flavor: ApiFlavor, events: list[dict[str, Any]], tokens: int
) -> None:
    count = OutputCount(flavor)
    wire = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    for i in range(0, len(wire), 7):  # split anywhere
        count.feed(wire[i : i + 7])
    assert count.tokens == tokens


async def test_a_budget_check_that_fails_cuts_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StreamBudget, "over", broken)
    with mitm_context():
        state, _, _, _, f = await streaming(1.0)
        (out,) = await feed(f, 1)
    assert b"could not be checked" in out and out.endswith(b"0\r\n\r\n")
    assert state.flows(f).cut is not None


async def test_a_models_token_prices_are_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[tuple[int, ...]] = []
    price = RateLimits._price

    def counting(self: RateLimits, state: Any, *tokens: Any) -> float | None:
        looked_up.append(tokens)
        return price(self, state, *tokens)

    monkeypatch.setattr(RateLimits, "_price", counting)
    state, authorize, rate, _ = setup([{"usd": 25.0, "per": "day", "reserve_output": 10}])
    for _ in range(3):
        f = await call(state, authorize, STREAM)
        allowance = state.flows(f).allowance
        assert isinstance(allowance, StreamBudget)
    # Each admission prices its reservation; the per-token prices came once, for all three.
    assert len(looked_up) == 3 + 4
    assert rate.unit_prices(state.flows(f)) == pytest.approx((0.001, 0.002, 0.001, 0.001))
