"""Span export over OTLP/HTTP: one pipeline per trace destination (README "Traces").

Each destination of `[traces]` gets the OpenTelemetry SDK's own parts: a `TracerProvider`
(its resource names the service), a `BatchSpanProcessor` and an `OTLPSpanExporter` (protobuf
over HTTP), built once per configuration, never per request. Ending a span on the event loop
only appends it to the processor's queue; serialising and sending happen on the processor's
thread, so a slow or unreachable collector never holds up a request: its spans are dropped
once the queue is full.

The SDK logs every failed export (and every retry) itself. Those records are held back here,
and a `ReportingExporter` says instead, at most once a minute per destination, how many spans
could not be exported and why, and once when exporting works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Tracer

from llamakey.config import TraceDestination, TraceSettings

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 2.0
"""How long closing a destination waits for its queued spans to go out before dropping them."""

# The SDK's loggers on the export path (retries, failed batches, a full queue).
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
_last_problem = threading.local()  # what the SDK first said during this thread's export


class _HoldBack(logging.Filter):
    """Keeps the SDK's warnings and errors out of the proxy's log, remembering the first one
    said during an export on the exporting thread so that our own warning can name it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # The first word of an export is the telling one (a connection refused, a status);
        # what follows is about retries.
        if getattr(_last_problem, "text", None) is None:
            _last_problem.text = record.getMessage()
        return False


_hold_back = _HoldBack()
for _name in _SDK_LOGGERS:
    logging.getLogger(_name).addFilter(_hold_back)


class _NotingSession(requests.Session):
    """The exporter's HTTP session, noting why a request failed (the SDK's own message after
    a connection error says only that the export timed out)."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            response = super().request(*args, **kwargs)
        except requests.RequestException as error:
            _last_problem.cause = _root_cause(error)
            raise
        if response.status_code >= 400:
            _last_problem.cause = f"the collector answered HTTP {response.status_code}"
        return response


def _root_cause(error: BaseException) -> str:
    """The innermost exception of a chain (``[Errno 111] Connection refused``), not the
    wrappers' long texts."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return str(error)[:300] or type(error).__name__


class ReportingExporter(SpanExporter):
    """An exporter that says, at most once per `interval` seconds, that spans could not be
    exported to its destination (how many, and why), and once that it works again."""

    def __init__(
        self,
        inner: SpanExporter,
        destination: TraceDestination,
        interval: float = WARN_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.destination = destination
        self._interval = interval
        self._clock = clock
        self._failed = 0  # spans not exported since the last warning
        self._warned_at: float | None = None
        self._failing = False
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        _last_problem.text = _last_problem.cause = None
        try:
            result = self.inner.export(spans)
        except Exception as error:  # the exporter's own bug must not end the worker thread
            _last_problem.text = repr(error)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            if self._failing:
                log.info(
                    "Traces: exporting to %s (%s) works again",
                    self.destination.where,
                    self.destination.endpoint,
                )
            self._failing, self._failed = False, 0
            return result
        self._failing = True
        self._failed += len(spans)
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= self._interval:
            log.warning(
                "Traces: %d span(s) could not be exported to %s (%s): %s. Requests are not "
                "affected; the next such warning comes in %.0f s at the earliest.",
                self._failed,
                self.destination.where,
                self.destination.endpoint,
                _last_problem.cause or _last_problem.text or "the export failed",
                self._interval,
            )
            self._warned_at, self._failed = now, 0
        return result

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


type MakeExporter = Callable[[TraceDestination, float], SpanExporter]


def otlp_http(destination: TraceDestination, timeout: float) -> SpanExporter:
    """The production exporter: OTLP protobuf over HTTP to the destination's endpoint."""
    return OTLPSpanExporter(
        endpoint=destination.endpoint,
        headers=dict(destination.headers),
        timeout=timeout,
        session=_NotingSession(),
    )


class Pipeline:
    """One destination's provider, processor and exporter."""

    def __init__(
        self, destination: TraceDestination, settings: TraceSettings, make: MakeExporter
    ) -> None:
        self.destination = destination
        self.exporter = ReportingExporter(make(destination, settings.timeout_seconds), destination)
        # Every call is recorded: a client's traceparent makes our span its child, but its
        # sampling decision does not decide whether the gateway's record exists.
        self.provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=Resource.create({"service.name": settings.service_name}),
            shutdown_on_exit=False,  # closed by `Destinations.close`, bounded in time
        )
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("llamakey")


class Destinations:
    """The pipelines of one `TraceSettings`, by destination name."""

    def __init__(self, settings: TraceSettings, make: MakeExporter = otlp_http) -> None:
        self.settings = settings
        self.pipelines: Mapping[str, Pipeline] = {
            name: Pipeline(destination, settings, make)
            for name, destination in settings.destinations.items()
            if destination.missing is None
        }
        for destination in settings.destinations.values():
            if destination.missing is not None:
                log.warning("Traces: no spans go to %s: %s", destination.where, destination.missing)

    def close(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Export what is queued, for at most `grace` seconds, then stop. Blocking: runs in a
        worker thread (a reload, the proxy's shutdown), never on the event loop."""
        closing = [
            threading.Thread(target=p.provider.shutdown, name=f"lmk-traces-close-{n}", daemon=True)
            for n, p in self.pipelines.items()
        ]
        for thread in closing:
            thread.start()
        deadline = time.monotonic() + grace
        for thread in closing:
            thread.join(max(0.0, deadline - time.monotonic()))
        for pipeline, thread in zip(self.pipelines.values(), closing, strict=True):
            if thread.is_alive():  # a collector that does not answer: stop its retries
                pipeline.exporter.shutdown()
        for thread in closing:
            thread.join(1.0)
