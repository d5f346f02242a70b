"""Stream answers through unbuffered, and meter the tokens they report.

Streamed answers (server-sent events, NDJSON, chunked bodies) are forwarded chunk by chunk
as the provider sends them; a small tap reads usage on the way. Plain answers are read whole
in `response`. Usage seen before a client disconnects is kept (only `error` fires then).
"""

from __future__ import annotations

import time

from mitmproxy import http

from llamakey import state as keys
from llamakey import usage as usage_lib
from llamakey.credentials import Scrubber
from llamakey.providers import BUILTIN_PROVIDERS, Provider
from llamakey.state import GatewayState

FLAVOR = "lmk.flavor"
MODEL = "lmk.model"
STREAM = "lmk.stream"
USAGE = "lmk.usage"  # dict of Usage fields
FIRST_BYTE = "lmk.first_byte"  # epoch seconds of the first body chunk sent to the client
RESPONSE_BYTES = "lmk.response_bytes"  # bytes of a streamed answer (its body is not kept)
DISCONNECTED = "lmk.client_disconnected"
INJECTED_USAGE = "lmk.injected_stream_usage"

_STREAMING_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/jsonl",
    "application/stream+json",
    "application/grpc",  # xAI's SDK: forwarded unbuffered (not metered yet)
)
BODY_COPY_LIMIT = 4 * 1024 * 1024  # a chunked plain answer is copied up to this for its usage


def flow_provider(state: GatewayState, flow: http.HTTPFlow) -> Provider:
    """The provider a flow went to. One dropped from the config while the flow was in flight
    is metered and priced as before: that depends on its catalogue entry only."""
    resolved = state.provider_of(flow)
    if resolved is not None:
        return resolved.provider
    name = flow.metadata[keys.PROVIDER]
    return BUILTIN_PROVIDERS.get(name) or Provider(name, ())


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


class _Tap:
    """The `flow.response.stream` callable: meter each chunk, forward it at once."""

    __slots__ = ("flow", "meter", "scrubber")

    def __init__(self, flow: http.HTTPFlow, meter: _Metering, scrubber: Scrubber) -> None:
        self.flow = flow
        self.meter = meter
        self.scrubber = scrubber

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:  # end of the answer
            tail: bytes = self.meter.finish()
            return tail
        metadata = self.flow.metadata
        if FIRST_BYTE not in metadata:
            metadata[FIRST_BYTE] = time.time()
        metadata[RESPONSE_BYTES] = metadata.get(RESPONSE_BYTES, 0) + len(data)
        out = self.meter.feed(data)
        if self.scrubber.has_secret(out):
            out = self.scrubber.same_length(out)
        # b"" would end a chunked answer early: an empty list forwards nothing.
        return out if out else []


class Meter:
    """Marks what a request is (API flavor, model, stream) and reads the usage of its answer."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._meters: dict[str, _Metering] = {}

    def request(self, flow: http.HTTPFlow) -> None:
        resolved = self.state.provider_of(flow)
        if flow.response or resolved is None or keys.USER not in flow.metadata:
            return
        # The tap parses plain bytes: ask the provider not to compress the answer.
        flow.request.anticomp()
        provider = resolved.provider
        body = flow.request.raw_content or b""
        flavor = usage_lib.api_flavor(provider, flow.request.method, flow.request.path)
        flow.metadata[FLAVOR] = flavor
        flow.metadata[MODEL] = usage_lib.request_model(flavor, flow.request.path, body)
        flow.metadata[STREAM] = usage_lib.is_stream_request(flavor, flow.request.path, body)
        if flow.metadata[STREAM]:
            rewritten = usage_lib.ensure_stream_usage(flavor, provider, body)
            if rewritten is not None:
                flow.request.content = rewritten
                flow.metadata[INJECTED_USAGE] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if FLAVOR not in flow.metadata or flow.response is None:
            return
        headers = flow.response.headers
        events = headers.get("content-type", "").startswith(_STREAMING_TYPES)
        if not events and not flow.metadata.get(STREAM) and "content-length" in headers:
            return  # a plain answer of known size: read whole in `response`
        # Anything else passes through as it arrives: event streams, and chunked bodies.
        provider, flavor = flow_provider(self.state, flow), flow.metadata[FLAVOR]
        meter: _Metering
        if events or flow.metadata.get(STREAM):
            meter = usage_lib.StreamMeter(
                provider, flavor, drop_usage_only_chunk=bool(flow.metadata.get(INJECTED_USAGE))
            )
        else:
            meter = _BodyCopy(provider, flavor)
        self._meters[flow.id] = meter
        flow.response.stream = _Tap(flow, meter, self.state.scrubber)

    def response(self, flow: http.HTTPFlow) -> None:
        if FLAVOR not in flow.metadata or flow.response is None:
            return
        meter = self._meters.pop(flow.id, None)
        if meter is not None:
            found: usage_lib.Usage | None = meter.usage
        else:
            found = usage_lib.usage_from_body(
                flow_provider(self.state, flow), flow.metadata[FLAVOR], flow.response.content or b""
            )
        if found is not None:
            flow.metadata[USAGE] = found.as_dict()

    def error(self, flow: http.HTTPFlow) -> None:
        meter = self._meters.pop(flow.id, None)
        if meter is not None:  # usage seen before the break is kept
            flow.metadata[USAGE] = meter.usage.as_dict()
        if flow.error and flow.error.msg == "Client disconnected.":
            flow.metadata[DISCONNECTED] = True
