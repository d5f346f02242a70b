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
from llamakey.state import GatewayState

FLAVOR = "lmk.flavor"
MODEL = "lmk.model"
STREAM = "lmk.stream"
USAGE = "lmk.usage"  # dict of Usage fields
FIRST_BYTE = "lmk.first_byte"  # epoch seconds of the first body chunk sent to the client
RESPONSE_BYTES = "lmk.response_bytes"  # bytes of a streamed answer (its body is not kept)
DISCONNECTED = "lmk.client_disconnected"
INJECTED_USAGE = "lmk.injected_stream_usage"

_STREAMING_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl")


class _Tap:
    """The `flow.response.stream` callable: meter each chunk, forward it at once."""

    __slots__ = ("flow", "meter", "scrubber")

    def __init__(
        self, flow: http.HTTPFlow, meter: usage_lib.StreamMeter, scrubber: Scrubber
    ) -> None:
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
        self._meters: dict[str, usage_lib.StreamMeter] = {}

    def request(self, flow: http.HTTPFlow) -> None:
        resolved = self.state.provider_of(flow)
        if flow.response or resolved is None or keys.USER not in flow.metadata:
            return
        # The tap parses plain bytes: ask the provider not to compress the answer.
        flow.request.anticomp()
        name = resolved.provider.name
        body = flow.request.raw_content or b""
        flavor = usage_lib.api_flavor(name, flow.request.method, flow.request.path)
        flow.metadata[FLAVOR] = flavor
        flow.metadata[MODEL] = usage_lib.request_model(flavor, flow.request.path, body)
        flow.metadata[STREAM] = usage_lib.is_stream_request(flavor, flow.request.path, body)
        if flow.metadata[STREAM]:
            rewritten = usage_lib.ensure_stream_usage(flavor, name, body)
            if rewritten is not None:
                flow.request.content = rewritten
                flow.metadata[INJECTED_USAGE] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if FLAVOR not in flow.metadata or flow.response is None:
            return
        content_type = flow.response.headers.get("content-type", "")
        if content_type.startswith(_STREAMING_TYPES) or (
            flow.metadata.get(STREAM) and "content-length" not in flow.response.headers
        ):
            meter = usage_lib.StreamMeter(
                flow.metadata[keys.PROVIDER],
                flow.metadata[FLAVOR],
                drop_usage_only_chunk=bool(flow.metadata.get(INJECTED_USAGE)),
            )
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
                flow.metadata[keys.PROVIDER], flow.metadata[FLAVOR], flow.response.content or b""
            )
        if found is not None:
            flow.metadata[USAGE] = found.as_dict()

    def error(self, flow: http.HTTPFlow) -> None:
        meter = self._meters.pop(flow.id, None)
        if meter is not None:  # usage seen before the break is kept
            flow.metadata[USAGE] = meter.usage.as_dict()
        if flow.error and flow.error.msg == "Client disconnected.":
            flow.metadata[DISCONNECTED] = True
