"""Stream answers through unbuffered, and meter the tokens they report.

Streamed answers (server-sent events, NDJSON, chunked bodies) are forwarded chunk by chunk
as the provider sends them; a small tap reads usage on the way. Plain answers are read whole
in `response`. Usage seen before a client disconnects is kept (only `error` fires then).
"""

from __future__ import annotations

import time
import zlib
from typing import Protocol

import brotli
from mitmproxy import http

from llamakey import usage as usage_lib
from llamakey.flowstate import FlowState
from llamakey.providers import Provider
from llamakey.scrub import StreamScrubber
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

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
            rest = self.decoder.finish() if self.decoder else b""
            tail: bytes = self.scrubber.feed(self.meter.feed(rest) + self.meter.finish())
            return tail + self.scrubber.finish()
        state = self.state
        if state.first_byte is None:
            state.first_byte = time.time()
        state.response_bytes += len(data)
        if self.decoder is not None:
            data = self.decoder.feed(data)
        state.events += data.count(b"data:")
        out = self.scrubber.feed(self.meter.feed(data))
        # b"" would end a chunked answer early: an empty list forwards nothing.
        return out if out else []


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
        flow.response.stream = _Tap(state, meter, self.state.scrubber.stream(), decoder)

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

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        meter = self._meters.pop(flow.id, None)
        state = self.state.flows.get(flow)
        if state is None:
            return
        if meter is not None:  # usage seen before the break is kept
            state.usage = meter.usage
        if flow.error and _client_went_away(flow):
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
    in each content event), a lower bound, unless the provider already reported more. Input:
    a quarter of the request body's bytes, the usual ratio of characters to tokens (JSON
    syntax makes it an overestimate).
    """
    usage = state.usage if state.usage is not None else usage_lib.Usage()
    # Without a finish reason the provider's final count never came: a count seen so far is a
    # running one (Anthropic's message_start says 1), so the larger of the two is kept.
    if usage.finish_reason is None and state.events > (usage.output_tokens or 0):
        usage.output_tokens = state.events
        state.usage_estimated = True
    if usage.input_tokens is None:
        usage.input_tokens = -(-len(flow.request.raw_content or b"") // 4)
        state.usage_estimated = True
    state.usage = usage
