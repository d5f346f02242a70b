"""What the gateway's audit step needs from an audit log: the :class:`AuditSink` protocol.

The step (``llamakey.steps.audit``) runs on mitmproxy's asyncio loop, which must never block,
so every method here only hands work over and returns at once: ``begin`` and ``prune`` give a
:class:`concurrent.futures.Future` the caller awaits (``asyncio.wrap_future``), the rest are
fire-and-forget. :class:`~llamakey.audit.sqlite.AuditWriter` is the implementation the proxy
runs; :class:`~llamakey.audit.memory.MemorySink` stands in for it in unit tests.

The one promise every sink keeps is write-ahead: the future of ``begin`` resolves only once the
row is durable, and fails with :class:`AuditUnavailable` otherwise, so a request that cannot be
audited is never sent upstream.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llamakey.audit.rows import RequestEnd, RequestStart

__all__ = ["AuditSink", "AuditUnavailable"]


class AuditUnavailable(Exception):
    """The audit log cannot take this row, so the request it describes must not go out.

    Raised by ``start`` and set on the future of ``begin`` when the database cannot be written
    (locked beyond the busy timeout, disk full, file or directory removed, file read-only,
    written by a newer schema), when the sink is not running (before ``start``, after
    ``close``), and for a row that cannot be stored (a duplicate id;
    :class:`~llamakey.audit.rows.InvalidRow` is the subclass for a badly typed field). The
    gateway answers such a request with a 503 in the provider's shape.

    The message says why, and never carries row contents or secrets: it is logged, and part of
    it may reach the client.
    """


class AuditSink(Protocol):
    """The audit log as the audit step drives it. Every method is safe to call from any thread
    and never blocks on storage, except ``start``, ``flush`` and ``close``, which wait (call
    them off the event loop)."""

    #: Whether :meth:`bodies` stores anything; the step skips building bodies when False.
    log_bodies: bool

    def start(self) -> None:
        """Open (create, migrate) the store. Raises :class:`AuditUnavailable` if it cannot."""
        ...

    def begin(self, row: RequestStart) -> Future[None]:
        """Write-ahead: store ``row`` before the request goes upstream.

        The future resolves once the row is durable, or fails with :class:`AuditUnavailable`.
        """
        ...

    def finish(self, request_id: str, end: RequestEnd) -> None:
        """Complete the row when the flow ends (and seal it, where the sink keeps a chain).

        Fire-and-forget; never raises. A finish for an unknown or already completed row is
        ignored.
        """
        ...

    def bodies(self, request_id: str, request_body: str | None, response_body: str | None) -> None:
        """Store the (already redacted) bodies of a flow; ignored unless ``log_bodies``."""
        ...

    def prune(self, retention_days: int) -> Future[int]:
        """Delete rows older than ``retention_days`` days; the future gives how many went."""
        ...

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything handed over so far is stored (or has failed)."""
        ...

    def close(self, timeout: float = 5.0) -> None:
        """Store what is queued and stop; later calls fail as "not running"."""
        ...
