"""An in-memory :class:`~llamakey.audit.sink.AuditSink` for unit tests.

What httpx's ``MockTransport`` is to its tests: code that writes an audit log (the gateway's
audit step) can be tested without a thread or a file, and can be made to meet an audit log that
is down. :class:`MemorySink` keeps the rows it is given, answers synchronously (every future it
returns is already settled), and keeps the promises of the real writer that callers rely on:
``begin`` fails with :class:`~llamakey.audit.sink.AuditUnavailable` when the sink is not running,
is failing, or already has the id; a completion for an unknown or completed row is ignored;
completions that arrive while it is failing are applied when it recovers.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

from llamakey.audit.rows import RequestEnd, RequestStart, SqlValue
from llamakey.audit.sink import AuditUnavailable

__all__ = ["MemorySink"]


class MemorySink:
    """Records what an audit step writes. Call :meth:`fail` to make it unavailable (``start``,
    ``begin`` and ``prune`` then fail with :class:`AuditUnavailable`) and :meth:`recover` to
    end that."""

    def __init__(self, *, log_bodies: bool = False) -> None:
        self.log_bodies = log_bodies
        #: Write-ahead rows by id, in the order they were begun.
        self.begun: dict[str, RequestStart] = {}
        #: Completions by id, in the order they were applied.
        self.finished: dict[str, RequestEnd] = {}
        #: ``(request_body, response_body)`` by id (only with ``log_bodies``).
        self.stored_bodies: dict[str, tuple[str | None, str | None]] = {}
        #: The ``retention_days`` of every prune asked for.
        self.prunes: list[int] = []
        self.running = False
        self.failure: str | None = None
        self._held: list[tuple[str, RequestEnd]] = []
        self._lock = threading.Lock()

    def fail(self, reason: str = "audit database is not writable (test)") -> None:
        """From now on, behave like a database that cannot be written, saying ``reason``."""
        with self._lock:
            self.failure = reason

    def recover(self) -> None:
        """Writable again: completions held back meanwhile are applied now."""
        with self._lock:
            self.failure = None
            held, self._held = self._held, []
            for request_id, end in held:
                self._complete(request_id, end)

    def row(self, request_id: str) -> dict[str, SqlValue]:
        """The row as a database would hold it: begin values, overlaid by the completion."""
        with self._lock:
            values = self.begun[request_id].sql_values()
            if request_id in self.finished:
                values.update(self.finished[request_id].sql_values())
            return values

    # ---- AuditSink

    def start(self) -> None:
        with self._lock:
            if self.failure is not None:
                raise AuditUnavailable(self.failure)
            self.running = True

    def begin(self, row: RequestStart) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            if not self.running:
                future.set_exception(AuditUnavailable("audit writer is not running"))
            elif self.failure is not None:
                future.set_exception(AuditUnavailable(self.failure))
            elif row.id in self.begun:
                future.set_exception(AuditUnavailable(f"audit row {row.id!r} rejected: duplicate"))
            else:
                self.begun[row.id] = row
                future.set_result(None)
        return future

    def finish(self, request_id: str, end: RequestEnd) -> None:
        with self._lock:
            if not self.running:
                return
            if self.failure is not None:
                self._held.append((request_id, end))
            else:
                self._complete(request_id, end)

    def bodies(self, request_id: str, request_body: str | None, response_body: str | None) -> None:
        with self._lock:
            if self.log_bodies and self.running:
                self.stored_bodies[request_id] = (request_body, response_body)

    def prune(self, retention_days: int) -> Future[int]:
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        future: Future[int] = Future()
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        with self._lock:
            self.prunes.append(retention_days)
            if not self.running or self.failure is not None:
                reason = self.failure or "audit writer is not running"
                future.set_exception(AuditUnavailable(reason))
                return future
            old = [i for i, r in self.begun.items() if _aware(r.ts) < cutoff]
            for request_id in old:
                del self.begun[request_id]
                self.finished.pop(request_id, None)
                self.stored_bodies.pop(request_id, None)
        future.set_result(len(old))
        return future

    def flush(self, timeout: float = 5.0) -> None:
        """Nothing to wait for: every call was applied as it was made."""

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self.running = False

    def _complete(self, request_id: str, end: RequestEnd) -> None:
        if request_id in self.begun and request_id not in self.finished:
            self.finished[request_id] = end


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
