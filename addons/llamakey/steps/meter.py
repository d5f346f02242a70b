"""Stream answers through unbuffered, and meter the tokens they report.

Streamed answers (server-sent events, NDJSON, chunked bodies) are forwarded chunk by chunk
as the provider sends them; a small tap reads usage on the way. Plain answers are read whole
in `response`. Usage seen before a client disconnects is kept (only `error` fires then).

A stream that a budget watches (`FlowState.allowance`, set by the rate limits) gets a tap of
its own, `_BudgetTap`: it also counts the output so far, and when the budget says stop it cuts
the answer off at an event boundary with a final error event in the stream's format
(`usage.cut`), ends the body and closes an HTTP/1 upstream (README "Budgets").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from typing import Protocol

import brotli
from mitmproxy import ctx, http

from llamakey import usage as usage_lib
from llamakey.flowstate import FlowState, StreamAllowance
from llamakey.providers import ErrorShape, Provider
from llamakey.scrub import StreamScrubber
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed
from llamakey.usage.cut import ENDINGS, Framing, OutputCount, error_event, framing_of

log = logging.getLogger(__name__)

_STREAMING_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/jsonl",
    "application/stream+json",
    "application/grpc",  # xAI's SDK: forwarded unbuffered (not metered yet)
)
BODY_COPY_LIMIT = 4 * 1024 * 1024  # a chunked plain answer is copied up to this for its usage


class _BodyCopy:
    """Meters a plain (non-event) answer that arrives chunked: forwards each chunk at once and
    keeps a bounded copy, so the usage can be read from the whole body at the end."""

    __slots__ = ("body", "flavor", "provider")

    def __init__(self, provider: Provider, flavor: usage_lib.ApiFlavor) -> None:
        self.provider = provider
        self.flavor = flavor
        self.body = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        if len(self.body) + len(chunk) <= BODY_COPY_LIMIT:
            self.body += chunk
        return chunk

    def finish(self) -> bytes:
        return b""

    @property
    def usage(self) -> usage_lib.Usage:
        found = usage_lib.usage_from_body(self.provider, self.flavor, bytes(self.body))
        return found if found is not None else usage_lib.Usage()


type _Metering = usage_lib.StreamMeter | _BodyCopy


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Zlib:
    """gzip or deflate, decoded as it arrives."""

    __slots__ = ("_inner",)

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> bytes:
        return self._inner.decompress(data)

    def finish(self) -> bytes:
        return self._inner.flush()


class _Brotli:
    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        out: bytes = self._inner.process(data)
        return out

    def finish(self) -> bytes:
        return b""


def _decoder(encoding: str) -> _Decoder | None:
    """An incremental decoder for a content-encoding we can read as it streams, else None."""
    match encoding:
        case "gzip" | "x-gzip":
            return _Zlib(zlib.MAX_WBITS | 16)
        case "deflate":
            return _Zlib(zlib.MAX_WBITS)
        case "br":
            return _Brotli()
        case _:
            return None


class _Tap:
    """The `flow.response.stream` callable: decode, meter each chunk, mask secrets, forward."""

    __slots__ = ("decoder", "meter", "scrubber", "state")

    def __init__(
        self,
        state: FlowState,
        meter: _Metering,
        scrubber: StreamScrubber,
        decoder: _Decoder | None = None,
    ) -> None:
        self.state = state
        self.meter = meter
        self.scrubber = scrubber
        self.decoder = decoder

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:  # end of the answer
            return self._finish()
        out = self.scrubber.feed(self.meter.feed(self._decode(data)))
        # b"" would end a chunked answer early: an empty list forwards nothing.
        return out if out else []

    def _decode(self, data: bytes) -> bytes:
        state = self.state
        if state.first_byte is None:
            state.first_byte = time.time()
        state.response_bytes += len(data)
        if self.decoder is not None:
            data = self.decoder.feed(data)
        state.events += data.count(b"data:")
        return data

    def _finish(self) -> bytes:
        rest = self.decoder.finish() if self.decoder else b""
        tail: bytes = self.scrubber.feed(self.meter.feed(rest) + self.meter.finish())
        return tail + self.scrubber.finish()


class _BudgetTap(_Tap):
    """The tap of a stream a budget watches (`FlowState.allowance`): it also counts the output
    so far, and once the budget says stop, it cuts the answer off at the next event boundary
    with a final error event in the stream's format, ends the answer and closes upstream.

    Its own class, so streams no budget watches pay nothing for it."""

    __slots__ = (
        "allowance",
        "at_boundary",
        "count",
        "due",
        "flow",
        "framing",
        "shape",
        "stopped",
    )

    def __init__(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        meter: usage_lib.StreamMeter,
        scrubber: StreamScrubber,
        decoder: _Decoder | None,
        allowance: StreamAllowance,
        framing: Framing,
        shape: ErrorShape,
    ) -> None:
        super().__init__(state, meter, scrubber, decoder)
        self.flow = flow
        self.shape = shape
        self.allowance = allowance
        self.framing = framing
        self.count = OutputCount(state.flavor or usage_lib.ApiFlavor.OTHER)
        self.at_boundary = True  # what the client got so far ends between two events
        self.due: str | None = None  # the budget said stop: cut at the next boundary
        self.stopped = False

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if self.stopped:  # cut off: what upstream still sends is metered (it is billed), not sent
            if data:
                decoded = self._decode(data)
                self.meter.feed(decoded)
                with contextlib.suppress(Exception):
                    self.count.feed(decoded)
                    self.state.output_estimate = self.count.tokens
            return []
        if not data:
            return self._finish()
        decoded = self._decode(data)
        metered = self.meter.feed(decoded)
        if metered:
            self.at_boundary = metered.endswith(ENDINGS[self.framing])
        out = self.scrubber.feed(metered)
        if self.due is None:
            self.due = self._over(decoded)
            if self.due is None:
                return out if out else []
        if not self.at_boundary and self.framing is not Framing.NONE:
            return out if out else []  # mid-event: the cut waits for the event's end
        return self._cut(out)

    def _over(self, decoded: bytes) -> str | None:
        """Count what `decoded` says and ask the budget; a failure here fails closed (a cut)."""
        try:
            self.count.feed(decoded)
            self.state.output_estimate = self.count.tokens
            assert isinstance(self.meter, usage_lib.StreamMeter)
            said = max(self.count.tokens, self.meter.output_tokens or 0)
            return self.allowance.over(said, self.meter.input_tokens)
        except Exception:
            log.exception("LlaMaKey: a stream's budget could not be checked; cutting it off")
            return "LlaMaKey: the budget of this answer could not be checked; it was cut off"

    def _cut(self, out: bytes) -> bytes | list[bytes]:
        """End the answer: what was forwarded, the final error event, the end of the body."""
        assert self.due is not None
        state, flow = self.state, self.flow
        state.cut = self.due
        self.stopped = True
        assert state.flavor is not None and flow.response is not None
        event = error_event(state.flavor, self.shape, self.framing, self.due)
        payload = out + self.scrubber.finish() + event
        client_http1 = flow.request.http_version.startswith("HTTP/1")
        response = flow.response
        if client_http1 and "chunked" in response.headers.get("transfer-encoding", "").lower():
            # Frame the last chunk and the end of the body ourselves, and drop the header, so
            # that the end mitmproxy writes when upstream closes or ends adds nothing more.
            del response.headers["transfer-encoding"]
            payload = (b"%x\r\n%s\r\n" % (len(payload), payload) if payload else b"") + b"0\r\n\r\n"
        if response.http_version.startswith("HTTP/1"):
            # An HTTP/1 upstream connection carries this one request: closing it stops the
            # provider generating (an HTTP/2 one may carry the client's other streams: there the
            # client's SDK, raising on the event, resets the stream, and mitmproxy upstream).
            asyncio.get_running_loop().call_soon(_close_upstream, flow)
        return payload if payload else []


def _close_upstream(flow: http.HTTPFlow) -> None:
    """Close `flow`'s upstream connection (mitmproxy then ends the flow with `error`)."""
    master = getattr(ctx, "master", None)  # none in unit tests' contexts without a proxy
    proxyserver = master.addons.lookup.get("proxyserver") if master is not None else None
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    if handler is not None and flow.server_conn in handler.transports:
        handler.close_connection(flow.server_conn)


class Meter:
    """Streams answers through as they arrive and reads the usage they report."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._meters: dict[str, _Metering] = {}

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.provider_flow(flow)
        if state is None or state.provider is None or state.flavor is None:
            return
        # The tap parses plain bytes: ask the provider not to compress the answer.
        flow.request.anticomp()
        if state.stream:
            body = flow.request.raw_content or b""
            provider = self.state.provider_entry(state)
            rewritten = usage_lib.ensure_stream_usage(state.flavor, provider, body)
            if rewritten is not None:
                state.client_body_bytes = len(body)
                flow.request.content = rewritten
                state.injected_stream_usage = True

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.get(flow)
        if state is None or state.provider is None or state.flavor is None or not flow.response:
            return
        headers = flow.response.headers
        events = headers.get("content-type", "").startswith(_STREAMING_TYPES)
        if not events and not state.stream and "content-length" in headers:
            return  # a plain answer of known size: read whole in `response`
        # Anything else passes through as it arrives: event streams, and chunked bodies. We
        # asked for no compression; a provider that compresses anyway is decoded on the way
        # (the meter and the scrubber read plain bytes), or, in an encoding we cannot decode
        # as it streams, kept whole and read in `response`.
        encoding = headers.get("content-encoding", "identity").strip().lower()
        decoder = None
        if encoding != "identity":
            decoder = _decoder(encoding)
            if decoder is None:
                return
            del headers["content-encoding"]
            headers.pop("content-length", None)
        meter: _Metering
        provider = self.state.provider_entry(state)
        if events or state.stream:
            meter = usage_lib.StreamMeter(
                provider, state.flavor, drop_usage_only_chunk=state.injected_stream_usage
            )
        else:
            meter = _BodyCopy(provider, state.flavor)
        self._meters[flow.id] = meter
        scrubber = self.state.scrubber.stream()
        if state.allowance is not None and isinstance(meter, usage_lib.StreamMeter):
            flow.response.stream = _BudgetTap(
                flow,
                state,
                meter,
                scrubber,
                decoder,
                state.allowance,
                framing_of(headers.get("content-type", "")),
                provider.error_shape,
            )
        else:
            flow.response.stream = _Tap(state, meter, scrubber, decoder)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.get(flow)
        if state is None or state.provider is None or state.flavor is None or not flow.response:
            return
        meter = self._meters.pop(flow.id, None)
        if meter is not None:
            state.usage = meter.usage
        else:
            state.usage = usage_lib.usage_from_body(
                self.state.provider_entry(state), state.flavor, flow.response.content or b""
            )
        if state.cut is not None:  # cut off, and upstream ended before it was closed
            _estimate_unreported_usage(flow, state)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        meter = self._meters.pop(flow.id, None)
        state = self.state.flows.get(flow)
        if state is None:
            return
        if meter is not None:  # usage seen before the break is kept
            state.usage = meter.usage
        if state.cut is not None:  # we ended it (and closed upstream): the client did not leave
            _estimate_unreported_usage(flow, state)
        elif flow.error and _client_went_away(flow):
            state.client_disconnected = True
            if state.stream:
                _estimate_unreported_usage(flow, state)


# How mitmproxy words a client going away: HTTP/1 ("Client disconnected."), an HTTP/2 or /3
# stream the client reset ("stream reset by client (CANCEL)").
_CLIENT_GONE = ("Client disconnected.", "stream reset by client")


def _client_went_away(flow: http.HTTPFlow) -> bool:
    assert flow.error is not None
    # Or the client's whole connection closed under the flow (an HTTP/2 client that hangs up).
    return flow.error.msg.startswith(_CLIENT_GONE) or flow.client_conn.timestamp_end is not None


def _estimate_unreported_usage(flow: http.HTTPFlow, state: FlowState) -> None:
    """A client that leaves a stream before the provider's usage chunk must not be metered at
    $0: what the provider did not report is estimated, and the row says so.

    Output: one token per streamed event (every provider's stream carries at least one token
    in each content event), a lower bound, or the text counted while a budget watched the
    stream (`state.output_estimate`), unless the provider already reported more. Input:
    a quarter of the request body's bytes, the usual ratio of characters to tokens (JSON
    syntax makes it an overestimate).
    """
    usage = state.usage if state.usage is not None else usage_lib.Usage()
    # Without a finish reason the provider's final count never came: a count seen so far is a
    # running one (Anthropic's message_start says 1), so the larger of the two is kept.
    said = max(state.events, state.output_estimate)
    if usage.finish_reason is None and said > (usage.output_tokens or 0):
        usage.output_tokens = said
        state.usage_estimated = True
    if usage.input_tokens is None:
        # The body as the client sent it, as its budgets estimated it (not our stream option).
        sent = state.client_body_bytes
        usage.input_tokens = -(
            -(sent if sent is not None else len(flow.request.raw_content or b"")) // 4
        )
        state.usage_estimated = True
    state.usage = usage
