"""The interface between the batching engine and a store: the work items the writer thread
hands over, and the :class:`Backend` protocol a store implements.

:class:`~llamakey.audit.writer.BatchWriter` owns the thread, the queue, the futures and the
failure handling; a backend only applies what it is given, one batch per transaction, from that
one thread. :class:`~llamakey.audit.sqlite.SQLiteBackend` is the one the proxy uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from llamakey.audit.rows import RequestEnd, RequestStart

__all__ = ["Backend", "Begin", "Bodies", "Finish", "PruneJob", "Write"]


@dataclass(eq=False)
class Begin:
    """A write-ahead row. The backend sets ``rejected`` (why, without row values) when this one
    row cannot be stored although the rest of the batch can, e.g. a duplicate id."""

    row: RequestStart
    future: Future[None] = field(default_factory=Future)
    rejected: str | None = None


@dataclass(eq=False)
class Finish:
    request_id: str
    end: RequestEnd


@dataclass(eq=False)
class Bodies:
    request_id: str
    ts: datetime
    request_body: str | None
    response_body: str | None


type Write = Begin | Finish | Bodies


@dataclass(eq=False)
class PruneJob:
    """One prune, carried across its steps. ``boundary`` is the backend's own bookmark (the
    first ``seq`` to keep, fixed at the first step so the deleted set is a chain prefix)."""

    cutoff: datetime
    future: Future[int] = field(default_factory=Future)
    boundary: int | None = None
    deleted: int = 0


class Backend(Protocol):
    """Storage driven by :class:`~llamakey.audit.writer.BatchWriter`, only ever from its thread.

    Every method raises :class:`~llamakey.audit.sink.AuditUnavailable` (with a message free of
    row values) when the store cannot be used, after dropping whatever it holds open; the next
    call starts afresh.
    """

    #: Names the store in log lines, e.g. ``database /var/lib/lmk_audit.db``.
    name: str

    def open(self) -> None:
        """Create, open or migrate the store."""
        ...

    def write(self, ops: Sequence[Write]) -> None:
        """Apply ``ops`` in order in one transaction and commit once. A problem with one row
        rejects that row only (``Begin.rejected``, or a logged warning for the others)."""
        ...

    def prune_step(self, job: PruneJob, limit: int) -> bool:
        """Delete up to ``limit`` rows older than ``job.cutoff`` in one transaction, adding to
        ``job.deleted``; True if more may remain."""
        ...

    def upkeep(self, *, flush: bool = False) -> float | None:
        """Deferred work that need not hold up the callers of a batch (the SQLite backend writes
        its head file and logs its head here).

        Called after every batch, once its futures are settled, and again when the delay it
        last returned has passed with nothing queued; ``flush`` when a flush asks for it all to
        be done now. Returns that delay in seconds, or None to wait for the next batch. An
        exception is logged and the call retried later.
        """
        ...

    def close(self) -> None:
        """Release the store (on the writer thread, as it stops), finishing its upkeep."""
        ...
