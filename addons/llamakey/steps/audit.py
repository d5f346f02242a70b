"""Audit: every provider flow and every refusal, written ahead to SQLite.

Two steps of the data path share one `AuditLog`: `WriteAhead` commits a request's row before
the real key goes in (if the database cannot be written, the request is refused with a 503 in
the provider's shape and nothing is served unaudited), and `CompleteAudit` completes the row
once the flow has ended (answer, error or client disconnect) and been metered and settled. All
SQLite work happens on `AuditWriter`'s thread: hooks only enqueue, or await a future.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import http

from llamakey.audit import AuditSink, AuditUnavailable, AuditWriter, RequestEnd, RequestStart
from llamakey.flowstate import FlowState
from llamakey.refusals import STATUS, Refusal
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed
from llamakey.usage import Usage

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
_SENSITIVE_FIELDS = ("key", "token", "secret", "password", "authorization", "credential")


def redact_json_text(text: str, state: GatewayState) -> str:
    """A body with credential-named JSON fields blanked and every known secret scrubbed."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: "[redacted]"
                if any(s in k.lower() for s in _SENSITIVE_FIELDS) and isinstance(v, str)
                else walk(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    with contextlib.suppress(ValueError):
        text = json.dumps(walk(json.loads(text)), ensure_ascii=False)
    clean: str = state.scrubber.text(text)
    return clean


type OpenSink = Callable[[Path, bool], AuditSink]


def open_sqlite(path: Path, log_bodies: bool) -> AuditSink:
    """The production sink: SQLite at `path`, written on its own thread with group commit."""
    # No waiting for stragglers (it would add to every request's latency): requests that
    # queue while one commit runs share the next.
    return AuditWriter(path, group_commit_ms=0.0, log_bodies=log_bodies)


class AuditLog:
    """Owns the audit sink: opens the configured database, switches on reload, prunes.

    `open_sink` makes the sink for a database path (SQLite in production; tests may pass
    one that returns a `llamakey.audit.MemorySink`).
    """

    def __init__(self, state: GatewayState, open_sink: OpenSink = open_sqlite) -> None:
        self.state = state
        self._open_sink = open_sink
        self.writer: AuditSink | None = None
        self._path: Path | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._switching = asyncio.Lock()
        self.open: set[str] = set()  # flow ids with a row begun and not yet completed

    def _stale(self) -> bool:
        """True when the writer does not match the configured database (first start, reload)."""
        settings = self.state.settings
        if settings is None or not settings.file.audit.enabled:
            return self.writer is not None
        return self.writer is None or self._path != settings.audit_path

    def _switch_writer(self) -> None:
        """Close the old writer and open the configured one. Blocking (thread join, file I/O):
        runs at start-up or in a worker thread, never on the event loop."""
        settings = self.state.settings
        old, self.writer = self.writer, None
        if old is not None:
            old.close()
        if settings is None or not settings.file.audit.enabled:
            self._path = None
            return
        self._path = settings.audit_path
        writer = self._open_sink(settings.audit_path, settings.file.audit.log_bodies)
        try:
            writer.start()
        except AuditUnavailable as error:
            # Every request will be refused (503) until the database can be written.
            log.error("Audit database unavailable: %s", error)
        self.writer = writer

    def current(self) -> AuditSink | None:
        """The current writer, or None when auditing is off."""
        settings = self.state.settings
        if settings is None or not settings.file.audit.enabled:
            return None
        return self.writer

    async def up_to_date(self) -> AuditSink | None:
        """The writer of the configured database, switching first if the config named another."""
        if self._stale():  # switch off the loop, once
            async with self._switching:
                if self._stale():
                    await asyncio.to_thread(self._switch_writer)
        return self.current()

    def running(self) -> None:
        self._switch_writer()
        if self._pruner is None:
            self._pruner = asyncio.get_running_loop().create_task(self._prune_regularly())

    async def _prune_regularly(self) -> None:
        while True:
            settings, writer = self.state.settings, self.writer
            if settings and writer and settings.file.audit.retention_days:
                writer.prune(settings.file.audit.retention_days)  # runs on the writer thread
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    def done(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def write_refusal(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """A refused flow's row, begun and completed at once."""
        writer = self.current()
        if writer is None or state.recorded:
            return
        state.recorded = True
        future = writer.begin(_begin_row(flow, state))
        refusal = state.refusal
        assert refusal is not None
        status = flow.response.status_code if flow.response else STATUS[refusal]
        end = RequestEnd(status=status, latency_ms=0.0, completed_ts=datetime.now(UTC))

        def complete(begun: Future[None]) -> None:
            if begun.exception() is None:
                writer.finish(flow.id, end)

        # The refusal's row is not awaited: nothing goes upstream, so there is nothing to hold.
        future.add_done_callback(complete)


class WriteAhead:
    """Commits a request's row before anything goes upstream, and rows of refusals."""

    def __init__(self, state: GatewayState, audit_log: AuditLog) -> None:
        self.state = state
        self.log = audit_log

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        # A CONNECT refused by a rule (blocked host, proxy auth) never reaches `request`.
        state = self.state.flows.get(flow)
        if flow.response is not None and state is not None and state.refusal is not None:
            self.log.write_refusal(flow, state)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.get(flow)
        if state is None:
            return  # plain HTTP to some other host: not ours to audit
        writer = await self.log.up_to_date()
        if writer is None:
            state.audited = True  # auditing is off: the admin's choice
            return
        if flow.response is not None:  # refused earlier on the data path
            if state.refusal is not None:
                self.log.write_refusal(flow, state)
            return
        resolved = self.state.provider_of(state)
        if resolved is None:
            return
        try:
            await asyncio.wrap_future(writer.begin(_begin_row(flow, state)))
        except AuditUnavailable as error:
            log.error("Request refused, the audit log cannot be written: %s", error)
            state.refuse(
                flow,
                resolved.provider.error_shape,
                Refusal.AUDIT_UNAVAILABLE,
                "the audit log cannot be written; the request was not sent, retry shortly",
            )
            return
        state.audited = state.recorded = True
        self.log.open.add(flow.id)


class CompleteAudit:
    """Completes a request's row once it has been answered (or broken off), metered and settled."""

    def __init__(self, state: GatewayState, audit_log: AuditLog) -> None:
        self.state = state
        self.log = audit_log

    def _finish(self, flow: http.HTTPFlow) -> None:
        writer = self.log.current()
        state = self.state.flows.get(flow)
        if writer is None or state is None:
            return
        if flow.id not in self.log.open:
            # Refused where no row was written yet (a step failed at or after the write-ahead).
            if state.refusal is not None:
                self.log.write_refusal(flow, state)
            return
        self.log.open.discard(flow.id)
        now = time.time()
        response = flow.response
        usage = state.usage or Usage()
        times = flow_times(flow, state, now)
        end = RequestEnd(
            status=response.status_code if response else None,
            refused_by=state.refusal.value if state.refusal else None,
            # A stream we cut off ends in an error we caused: the row says why instead.
            error=state.cut or (flow.error.msg if flow.error else None),
            latency_ms=times.latency_ms,
            ttfb_ms=times.ttfb_ms,
            response_bytes=_response_bytes(flow, state),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            provider_cost_usd=usage.provider_cost_usd,
            response_model=usage.model,
            finish_reason=usage.finish_reason,
            cost_usd=state.cost_usd,
            client_disconnected=state.client_disconnected,
            usage_estimated=state.usage_estimated if state.usage is not None else None,
            cut_by=Refusal.BUDGET_EXCEEDED.value if state.cut is not None else None,
            deployment=state.deployment,
            attempts=json.dumps(state.attempts) if state.attempts else None,
            completed_ts=datetime.fromtimestamp(now, UTC),
        )
        writer.finish(flow.id, end)
        if writer.log_bodies:
            writer.bodies(flow.id, *redacted_bodies(flow, state, self.state))

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)


def _begin_row(flow: http.HTTPFlow, state: FlowState) -> RequestStart:
    # Raises InvalidRow (an AuditUnavailable: the request is refused) for a mistyped value.
    request = flow.request
    return RequestStart(
        id=flow.id,
        ts=datetime.fromtimestamp(request.timestamp_start, UTC),  # formatted by the writer
        user=state.user,
        groups=state.groups,
        client_addr=flow.client_conn.peername[0] if flow.client_conn.peername else None,
        provider=state.provider,
        host=request.pretty_host,
        method=request.method,
        path=request.path.partition("?")[0],
        model=state.model,
        stream=state.stream,
        request_bytes=len(request.raw_content or b""),
        refused_by=state.refusal.value if state.refusal else None,
    )


def _response_bytes(flow: http.HTTPFlow, state: FlowState) -> int | None:
    response = flow.response
    if response is None:
        return None
    if response.raw_content is not None:
        return len(response.raw_content)
    if callable(response.stream):  # streamed through: its body was not kept
        return state.response_bytes
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _text(body: bytes | None, state: GatewayState) -> str | None:
    if not body:
        return None
    return redact_json_text(body.decode("utf-8", "replace"), state)


def redacted_bodies(
    flow: http.HTTPFlow, state: FlowState, gateway: GatewayState
) -> tuple[str | None, str | None]:
    """The request's and the kept answer's text, redacted as the audit log stores them; made
    once per flow for the audit log and the spans alike (a streamed answer was not kept)."""
    if state.bodies is None:
        response = flow.response
        state.bodies = (
            _text(flow.request.raw_content, gateway),
            _text(response.raw_content if response else None, gateway),
        )
    return state.bodies


@dataclass(frozen=True, slots=True)
class FlowTimes:
    """When a flow ended, and how long it and its first byte took (what the audit row and
    the span record)."""

    end: float
    """Epoch seconds: the answer's last byte, else when the flow was given up."""
    latency_ms: float
    ttfb_ms: float | None


def flow_times(flow: http.HTTPFlow, state: FlowState, now: float) -> FlowTimes:
    """The times of a flow that has ended (`now`: when the flow is being completed)."""
    request, response = flow.request, flow.response
    end = response.timestamp_end if response and response.timestamp_end else now
    first_byte = state.first_byte or (response.timestamp_start if response else None)
    return FlowTimes(
        end=end,
        latency_ms=round((end - request.timestamp_start) * 1000, 3),
        ttfb_ms=round((first_byte - request.timestamp_start) * 1000, 3) if first_byte else None,
    )
