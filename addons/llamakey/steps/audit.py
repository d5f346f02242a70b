"""Audit: every provider flow and every refusal, written ahead to SQLite.

A request goes upstream only after its row is committed; if the database cannot be written,
the request is refused with a 503 in the provider's shape and nothing is served unaudited.
The row is completed when the flow ends (answer, error or client disconnect). All SQLite work
happens on `AuditWriter`'s thread: hooks only enqueue, or await a future.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import http

from llamakey import state as keys
from llamakey.audit import AuditUnavailable, AuditWriter, RequestEnd, RequestStart
from llamakey.refusals import STATUS, Refusal, refuse
from llamakey.state import GatewayState
from llamakey.steps import meter, settle

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


class Audit:
    """Owns the audit writer; writes a row ahead of each request and completes it at the end."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.writer: AuditWriter | None = None
        self._path: Path | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._open: set[str] = set()
        self._switching = asyncio.Lock()  # flow ids with a row begun and not yet finished

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
        # No waiting for stragglers (it would add to every request's latency): requests that
        # queue while one commit runs share the next.
        writer = AuditWriter(
            settings.audit_path, group_commit_ms=0.0, log_bodies=settings.file.audit.log_bodies
        )
        try:
            writer.start()
        except AuditUnavailable as error:
            # Every request will be refused (503) until the database can be written.
            log.error("Audit database unavailable: %s", error)
        self.writer = writer

    def _writer(self) -> AuditWriter | None:
        """The current writer, or None when auditing is off."""
        settings = self.state.settings
        if settings is None or not settings.file.audit.enabled:
            return None
        return self.writer

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

    @staticmethod
    def _begin_row(flow: http.HTTPFlow) -> RequestStart:
        # Raises InvalidRow (an AuditUnavailable: the request is refused) for a mistyped value.
        request = flow.request
        return RequestStart(
            id=flow.id,
            ts=datetime.fromtimestamp(request.timestamp_start, UTC),  # formatted by the writer
            user=flow.metadata.get(keys.USER),
            groups=tuple(flow.metadata.get(keys.GROUPS) or ()),
            client_addr=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            provider=flow.metadata.get(keys.PROVIDER),
            host=request.pretty_host,
            method=request.method,
            path=request.path.partition("?")[0],
            model=flow.metadata.get(meter.MODEL),
            stream=bool(flow.metadata.get(meter.STREAM)),
            request_bytes=len(request.raw_content or b""),
            refused_by=flow.metadata.get(keys.REFUSED),
        )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # A CONNECT refused by a rule (blocked host, proxy auth) never reaches `request`.
        if flow.response is not None and keys.REFUSED in flow.metadata:
            self._write_refusal(flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        if keys.PROVIDER not in flow.metadata and keys.REFUSED not in flow.metadata:
            return  # plain HTTP to some other host: not ours to audit
        if self._stale():  # the config named another database: switch off the loop, once
            async with self._switching:
                if self._stale():
                    await asyncio.to_thread(self._switch_writer)
        writer = self._writer()
        if writer is None:
            return
        if flow.response is not None:  # refused earlier on the data path
            self._write_refusal(flow)
            return
        try:
            await asyncio.wrap_future(writer.begin(self._begin_row(flow)))
        except AuditUnavailable as error:
            log.error("Request refused, the audit log cannot be written: %s", error)
            resolved = self.state.provider_of(flow)
            assert resolved is not None
            refuse(
                flow,
                resolved.provider.error_shape,
                Refusal.AUDIT_UNAVAILABLE,
                "the audit log cannot be written; the request was not sent, retry shortly",
            )
            return
        self._open.add(flow.id)

    def _write_refusal(self, flow: http.HTTPFlow) -> None:
        writer = self._writer()
        if writer is None:
            return
        row = self._begin_row(flow)
        future = writer.begin(row)
        refusal = Refusal(flow.metadata[keys.REFUSED])
        status = flow.response.status_code if flow.response else STATUS[refusal]
        end = RequestEnd(status=status, latency_ms=0.0, completed_ts=datetime.now(UTC))

        def seal(begun: Future[None]) -> None:
            if begun.exception() is None:
                writer.finish(flow.id, end)

        # The refusal's row is not awaited: nothing goes upstream, so there is nothing to hold.
        future.add_done_callback(seal)

    def _finish(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self._open or self.writer is None:
            return
        self._open.discard(flow.id)
        now = time.time()
        request, response = flow.request, flow.response
        usage = flow.metadata.get(meter.USAGE) or {}
        first_byte = flow.metadata.get(meter.FIRST_BYTE) or (
            response.timestamp_start if response else None
        )
        end = RequestEnd(
            status=response.status_code if response else None,
            refused_by=flow.metadata.get(keys.REFUSED),
            error=flow.error.msg if flow.error else None,
            latency_ms=round(
                (
                    (response.timestamp_end if response and response.timestamp_end else now)
                    - request.timestamp_start
                )
                * 1000,
                3,
            ),
            ttfb_ms=round((first_byte - request.timestamp_start) * 1000, 3) if first_byte else None,
            response_bytes=_response_bytes(flow),
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            cache_read_tokens=usage.get("cache_read_tokens"),
            cache_write_tokens=usage.get("cache_write_tokens"),
            reasoning_tokens=usage.get("reasoning_tokens"),
            provider_cost_usd=usage.get("provider_cost_usd"),
            response_model=usage.get("model"),
            finish_reason=usage.get("finish_reason"),
            cost_usd=flow.metadata.get(settle.COST),
            client_disconnected=bool(flow.metadata.get(meter.DISCONNECTED)),
            completed_ts=datetime.fromtimestamp(now, UTC),
        )
        self.writer.finish(flow.id, end)
        if self.writer.log_bodies:
            self.writer.bodies(
                flow.id,
                _text(request.raw_content, self.state),
                _text(response.raw_content if response else None, self.state),
            )

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)


def _response_bytes(flow: http.HTTPFlow) -> int | None:
    response = flow.response
    if response is None:
        return None
    if response.raw_content is not None:
        return len(response.raw_content)
    if (streamed := flow.metadata.get(meter.RESPONSE_BYTES)) is not None:
        return int(streamed)
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _text(body: bytes | None, state: GatewayState) -> str | None:
    if not body:
        return None
    return redact_json_text(body.decode("utf-8", "replace"), state)
