"""Trace: an OpenTelemetry span for every provider call once it has ended (README "Traces").

Registered after Settle, RateLimits and CompleteAudit: the span carries what the audit row
records (usage, cost, latency, time to first byte, the refusal), named after OpenTelemetry's
GenAI conventions (``gen_ai.*``), and goes to the user's destination: their own ``traces``,
else their first group's that names one, else ``[traces]``'s own endpoint. Prompt and
completion text go only to destinations with ``include_bodies`` (which needs
``audit.log_bodies``), redacted as the audit log's bodies are.

The span is built in the event loop's next round, once mitmproxy has sent the answer on its
way, and ending it only queues it (`llamakey.tracing`): export runs on the SDK's thread, so a
collector that is slow or down costs no request anything but a warning a minute. The
pipelines are built when the proxy starts and again only when a reload changes `[traces]`;
the old ones are closed in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Mapping

from mitmproxy import http
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from llamakey.config import TraceSettings
from llamakey.flowstate import FlowState
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.audit import FlowTimes, flow_times, redacted_bodies
from llamakey.steps.guard import fail_closed
from llamakey.tracing import Destinations, MakeExporter, otlp_http
from llamakey.usage import ApiFlavor

# gen_ai.operation.name of each API flavor (OTHER: a listing, a file... has none).
OPERATIONS: Mapping[ApiFlavor, str] = {
    ApiFlavor.OPENAI_CHAT: "chat",
    ApiFlavor.OPENAI_RESPONSES: "chat",
    ApiFlavor.ANTHROPIC_MESSAGES: "chat",
    ApiFlavor.COHERE_V1: "chat",
    ApiFlavor.COHERE_V2: "chat",
    ApiFlavor.GEMINI: "generate_content",
    ApiFlavor.OPENAI_EMBEDDINGS: "embeddings",
    ApiFlavor.OPENAI_COMPLETIONS: "text_completion",
}
_PROPAGATOR = TraceContextTextMapPropagator()
log = logging.getLogger(__name__)


def span_attributes(
    flow: http.HTTPFlow, state: FlowState, gateway: GatewayState, times: FlowTimes
) -> dict[str, AttributeValue]:
    """What the span of an ended flow says; a value that is not known is left out."""
    provider = gateway.provider_entry(state)
    request, response = flow.request, flow.response
    usage = state.usage
    values: dict[str, AttributeValue | None] = {
        "gen_ai.system": provider.genai_name,
        "gen_ai.provider.name": provider.genai_name,
        "gen_ai.operation.name": OPERATIONS.get(state.flavor) if state.flavor else None,
        "gen_ai.request.model": state.model,
        "gen_ai.request.stream": state.stream,
        "server.address": request.pretty_host,
        "http.response.status_code": response.status_code if response else None,
        "user.id": state.user,
        "lmk.groups": list(state.groups) if state.user is not None else None,
        # Our catalogue's name, where the conventions call the provider otherwise.
        "lmk.provider": state.provider if state.provider != provider.genai_name else None,
        "lmk.flow_id": flow.id,  # the audit row's id
        "lmk.deployment": state.deployment,
        "lmk.latency_ms": times.latency_ms,
        "lmk.ttfb_ms": times.ttfb_ms,
        "lmk.cost_usd": state.cost_usd,
        "lmk.refused_by": state.refusal.value if state.refusal else None,
        "lmk.client_disconnected": state.client_disconnected or None,
    }
    if state.stream and times.ttfb_ms is not None:
        values["gen_ai.response.time_to_first_chunk"] = times.ttfb_ms / 1000
    if usage is not None:
        cached = (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0)
        values |= {
            "gen_ai.response.model": usage.model,
            # The conventions count cached input inside the input tokens (our audit row and
            # `Usage` keep them apart).
            "gen_ai.usage.input_tokens": (
                usage.input_tokens + cached if usage.input_tokens is not None else None
            ),
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
            "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
            "gen_ai.response.finish_reasons": [usage.finish_reason]
            if usage.finish_reason
            else None,
            "lmk.provider_cost_usd": usage.provider_cost_usd,
            "lmk.usage_estimated": state.usage_estimated or None,
        }
    return {name: value for name, value in values.items() if value is not None}


def span_name(flow: http.HTTPFlow, state: FlowState) -> str:
    """``{operation} {model}`` as the conventions name GenAI spans; else the provider's call."""
    operation = OPERATIONS.get(state.flavor) if state.flavor else None
    if operation is None:
        return f"{flow.request.method} {state.provider}"
    return f"{operation} {state.model}" if state.model else operation


def span_status(
    flow: http.HTTPFlow, state: FlowState, gateway: GatewayState
) -> tuple[Status, str | None]:
    """The span's status and ``error.type``: a refusal, a stream cut off by a budget, a flow
    broken off, an upstream error status; else unset (the conventions leave successful client
    spans unset)."""
    if state.refusal is not None:
        return Status(StatusCode.ERROR, f"refused: {state.refusal.value}"), state.refusal.value
    if state.cut is not None:  # a stream a budget ended: the audit row's cut_by
        return Status(StatusCode.ERROR, state.cut[:200]), Refusal.BUDGET_EXCEEDED.value
    if flow.error is not None:
        return Status(StatusCode.ERROR, gateway.scrubber.text(flow.error.msg)[:200]), "flow_error"
    if flow.response is not None and flow.response.status_code >= 400:
        code = str(flow.response.status_code)
        return Status(StatusCode.ERROR, f"HTTP {code}"), code
    return Status(StatusCode.UNSET), None


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a note saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text)} characters in all]"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class Trace:
    """Owns the span pipelines of `[traces]` and records a span for each ended provider flow.

    `make_exporter` makes each destination's exporter (OTLP/HTTP in production; a test may
    pass an in-memory one)."""

    def __init__(self, state: GatewayState, make_exporter: MakeExporter = otlp_http) -> None:
        self.state = state
        self._make = make_exporter
        self.destinations: Destinations | None = None
        self._built_from: TraceSettings | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def current(self) -> Destinations | None:
        """The pipelines of the configured `[traces]`, rebuilt if a reload changed it."""
        settings = self.state.settings
        wanted = settings.traces if settings is not None else None
        if wanted is self._built_from:
            return self.destinations  # the common case: no reload since
        old = self.destinations
        if old is not None and old.settings == wanted:
            self._built_from = wanted  # reloaded, `[traces]` unchanged: keep the exporters
            return old
        self.destinations = Destinations(wanted, self._make) if wanted is not None else None
        self._built_from = wanted
        if old is not None:
            self._close_later(old)
        return self.destinations

    def _close_later(self, old: Destinations) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up, a test): close at once
            old.close()
            return
        task = loop.create_task(asyncio.to_thread(old.close))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def running(self) -> None:
        self.current()  # build the exporters now, not on the first answer

    async def done(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.destinations is not None:
            destinations, self.destinations = self.destinations, None
            await asyncio.to_thread(destinations.close)

    def record(self, flow: http.HTTPFlow) -> None:
        """Queue the span of `flow`, an ended provider flow, for its user's destination."""
        state = self.state.flows.get(flow)
        if state is None or state.provider is None:
            return
        destinations = self.current()
        settings = self.state.settings
        if destinations is None or settings is None:
            return
        route = settings.trace_choices.destination(state.user, state.groups)
        pipeline = destinations.pipelines.get(route) if route else None
        if pipeline is None:
            return
        times = flow_times(flow, state, time.time())
        attributes = span_attributes(flow, state, self.state, times)
        status, error_type = span_status(flow, state, self.state)
        if error_type is not None:
            attributes["error.type"] = error_type
        if pipeline.destination.include_bodies:
            limit = destinations.settings.max_body_chars
            prompt, completion = redacted_bodies(flow, state, self.state)
            if prompt is not None:
                attributes["gen_ai.prompt"] = cut(prompt, limit)
            if completion is not None:
                attributes["gen_ai.completion"] = cut(completion, limit)
        span = pipeline.tracer.start_span(
            span_name(flow, state),
            context=_parent(flow),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(flow.request.timestamp_start),
        )
        span.set_status(status)
        span.end(end_time=_ns(times.end))

    def _record_soon(self, flow: http.HTTPFlow) -> None:
        # In the loop's next round, once mitmproxy has sent the answer on its way: building
        # the span (tens of microseconds of the SDK's attribute checks) is added to no request.
        asyncio.get_running_loop().call_soon(self._record_logged, flow)

    def _record_logged(self, flow: http.HTTPFlow) -> None:
        try:
            self.record(flow)
        except Exception:  # a span is never worth a request: say it, and carry on
            log.error(
                "Traces: no span for %s:\n%s",
                flow.request.pretty_url,
                self.state.scrubber.text(traceback.format_exc()),
            )

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._record_soon(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._record_soon(flow)


def _parent(flow: http.HTTPFlow) -> Context | None:
    """The client's trace (a W3C ``traceparent`` header), so that our span joins it."""
    traceparent = flow.request.headers.get("traceparent")
    if traceparent is None:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})
