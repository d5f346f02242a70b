"""The batching engine behind the audit writer: one thread, one queue, group commit, recovery.

Backend-neutral: :class:`BatchWriter` knows nothing of SQLite. It drives a
:class:`~llamakey.audit.backend.Backend` (:class:`~llamakey.audit.sqlite.SQLiteBackend` in the
proxy) that applies a batch of work in one transaction; everything about threads, batching,
futures and failures lives here.

One thread
    The audit step runs on an asyncio loop that must never block, so every storage call happens
    on the one writer thread owned by :class:`BatchWriter`. Callers hand it work through a queue
    and get :class:`concurrent.futures.Future` objects back. One thread also means one writer
    for the backend: it needs no locking of its own.

Write-ahead and group commit
    :meth:`BatchWriter.begin` queues the request row *before* the request goes upstream; its
    future resolves only once the row is committed, or fails with
    :class:`~llamakey.audit.sink.AuditUnavailable`, so a request that cannot be audited is never
    sent. The writer thread drains everything queued (waiting ``group_commit_ms`` after the
    first item for stragglers), hands it all to the backend as one transaction, and then
    resolves every future of that batch. :attr:`BatchWriter.commits` counts the commits.

Failures
    If the backend cannot write (read-only file, directory removed, disk full, locked beyond
    the busy timeout) it raises ``AuditUnavailable`` having dropped what it held open; the batch
    is then lost as a whole: its ``begin`` futures fail, and the error is logged once (again
    only when it changes). The next batch retries the backend, which reopens by itself, so the
    writer recovers without help and logs that it did. ``finish``/``bodies`` work from a failed
    batch is kept and retried (about once a second, and with every new batch), up to a bound.
    The writer thread never dies on an error.

Pruning
    A prune runs as a series of short backend steps, each re-queued behind the work that arrived
    meanwhile, so requests are never held up by one long transaction.

Upkeep
    After each batch, once its futures are settled, the backend does its deferred work
    (``Backend.upkeep``: the SQLite backend's head file), and asks to be woken for it again
    after a delay if it needs to, even with nothing queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from llamakey.audit.backend import Backend, Begin, Bodies, Finish, PruneJob, Write
from llamakey.audit.rows import RequestEnd, RequestStart
from llamakey.audit.sink import AuditUnavailable

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)

_RETRY_INTERVAL_S: Final = 1.0
# Bounds the memory held by finish()/bodies() work waiting for a broken database to come back.
_MAX_RETRY: Final = 10_000


# --------------------------------------------------------------------------- control items


@dataclass(eq=False)
class _Control:
    """Open, flush or stop: resolved once everything queued before it is done."""

    action: str
    future: Future[None] = field(default_factory=Future)


type _Op = Write | PruneJob | _Control


def _claim[T](future: Future[T]) -> bool:
    """Mark a pending future running so that nobody can cancel it between our check and set."""
    if future.running():
        return True
    return future.set_running_or_notify_cancel()


def _resolve[T](future: Future[T], result: T) -> None:
    if _claim(future):
        future.set_result(result)


def _fail(future: Future[Any], exc: BaseException) -> None:
    if not future.done() and _claim(future):
        future.set_exception(exc)


class BatchWriter:
    """Writes audit rows through ``backend`` from one dedicated thread; an
    :class:`~llamakey.audit.sink.AuditSink`. Every method is safe to call from any thread (in
    particular the asyncio loop) and never blocks on storage, except ``start``, ``flush`` and
    ``close``.

    ``max_batch`` bounds how much one transaction carries; ``prune_batch`` is how many rows one
    prune step deletes.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        group_commit_ms: float = 2.0,
        log_bodies: bool = False,
        max_batch: int = 1000,
        prune_batch: int = 500,
    ) -> None:
        self.backend = backend
        self.group_commit_ms = group_commit_ms
        self.log_bodies = log_bodies
        self.max_batch = max_batch
        self.prune_batch = prune_batch
        #: Number of transactions committed so far (group commit makes this far below row count).
        self.commits = 0
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders enqueue against close()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the writer thread: the last failure (None while writes work), held-back work.
        self._failing: str | None = None
        self._retry: list[Finish | Bodies] = []
        self._upkeep_at: float | None = None  # time.monotonic() the backend asked to be woken

    # ---- public API (any thread)

    def start(self) -> None:
        """Start the writer thread and open the store on it.

        Raises :class:`AuditUnavailable` if the store cannot be opened; the writer is then
        closed.
        """
        opened = _Control("open")
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{type(self).__name__}.start() called twice")
            self._queue.put(opened)
            self._thread = threading.Thread(target=self._run, name="llamakey-audit", daemon=True)
            self._thread.start()
        try:
            opened.future.result()
        except AuditUnavailable:
            self.close()
            raise

    def begin(self, row: RequestStart) -> Future[None]:
        """Write-ahead: insert the request row.

        The future resolves when the row is committed (durable), or fails with
        :class:`AuditUnavailable`. The caller awaits it (``asyncio.wrap_future``) before sending
        the request upstream. Concurrent begins share one commit. A duplicate id also fails
        with :class:`AuditUnavailable`, because an unauditable request must not go out.
        """
        op = Begin(row)
        if not self._enqueue(op):
            op.future.set_exception(AuditUnavailable("audit writer is not running"))
        return op.future

    def finish(self, request_id: str, end: RequestEnd) -> None:
        """Complete the row when the flow ends, and seal it into the hash chain.

        Fire-and-forget, group-committed like ``begin``. Never raises: a finish for an unknown
        or already sealed row is logged and ignored.
        """
        if not self._enqueue(Finish(request_id, end)):
            log.error("audit: writer not running; completion of %s lost", request_id)

    def bodies(self, request_id: str, request_body: str | None, response_body: str | None) -> None:
        """Store the bodies of a flow (replacing earlier ones). Ignored unless ``log_bodies``.

        Fire-and-forget; never raises.
        """
        if not self.log_bodies:
            return
        if not all(b is None or isinstance(b, str) for b in (request_body, response_body)):
            log.error("audit: bodies(%s) ignored: bodies must be str or None", request_id)
            return
        op = Bodies(request_id, datetime.now(UTC), request_body, response_body)
        if not self._enqueue(op):
            log.error("audit: writer not running; bodies of %s lost", request_id)

    def prune(self, retention_days: int) -> Future[int]:
        """Delete rows (and their bodies) whose ``ts`` is older than ``retention_days`` days.

        Runs on the writer thread in steps of ``prune_batch`` rows, re-queued behind other work
        so requests are never held up by a long lock. The returned future gives the number of
        request rows deleted (callers may ignore it). What goes, and in which order, is the
        backend's: the SQLite one keeps the hash chain verifiable.
        """
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        job = PruneJob(datetime.now(UTC) - timedelta(days=retention_days))
        if not self._enqueue(job):
            job.future.set_exception(AuditUnavailable("audit writer is not running"))
        return job.future

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been written (or has failed), and the
        backend's upkeep after it is done.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds.
        """
        marker = _Control("flush")
        if self._enqueue(marker):
            marker.future.result(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush everything queued, commit, and stop the thread (waiting up to ``timeout``)."""
        with self._lock:
            if self._thread is None or self._closed:
                return
            self._closed = True
            self._queue.put(_Control("stop"))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit: writer did not stop within %.1fs; queued work may be lost", timeout)

    def _enqueue(self, op: _Op) -> bool:
        with self._lock:
            if self._thread is None or self._closed:
                return False
            self._queue.put(op)
            return True

    # ---- writer thread

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._next_batch()
            try:
                stop = self._process(batch)
            except Exception:  # a bug here must not kill the thread that guards every request
                log.exception("audit: unexpected error in writer thread")
                self._fail_batch(batch, AuditUnavailable("audit writer internal error"))
            if not stop:  # on stop, the backend's close() does its last upkeep
                self._upkeep()
        self._shutdown()

    def _upkeep(self, *, flush: bool = False) -> None:
        try:
            delay = self.backend.upkeep(flush=flush)
        except Exception:
            log.exception("audit: upkeep of %s failed", self.backend.name)
            delay = _RETRY_INTERVAL_S
        self._upkeep_at = None if delay is None else time.monotonic() + max(0.0, delay)

    def _next_batch(self) -> list[_Op]:
        """Block for work, then gather what else arrives within the group-commit window."""
        waits = [_RETRY_INTERVAL_S] if self._retry else []
        if self._upkeep_at is not None:
            waits.append(max(0.0, self._upkeep_at - time.monotonic()))
        try:
            first = self._queue.get(timeout=min(waits) if waits else None)
        except queue.Empty:
            return []  # time to retry held-back finish/bodies work, or for upkeep
        batch: list[_Op] = [first]
        if isinstance(first, Begin | Finish | Bodies) and self.group_commit_ms > 0:
            deadline = time.monotonic() + self.group_commit_ms / 1000
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    op = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                batch.append(op)
                if isinstance(op, PruneJob | _Control):
                    break
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[_Op]) -> bool:
        """Do one batch in queue order; writes between control items share one commit.

        Returns True when a stop was requested.
        """
        writes: list[Write] = list(self._retry)
        self._retry = []
        stop = False
        for op in batch:
            if isinstance(op, Begin | Finish | Bodies):
                writes.append(op)
                continue
            self._write(writes)
            writes = []
            if isinstance(op, PruneJob):
                self._prune_step(op)
            elif op.action == "open":
                self._open(op)
            elif op.action == "flush":
                self._upkeep(flush=True)  # a flush waits for the backend's upkeep too
                _resolve(op.future, None)
            else:  # stop: the backend's close() does its last upkeep
                stop = True
                _resolve(op.future, None)
        self._write(writes)
        return stop

    def _write(self, ops: Sequence[Write]) -> None:
        """Apply ``ops`` in one transaction and commit once; then settle the begin futures."""
        if not ops:
            return
        begins = [op for op in ops if isinstance(op, Begin)]
        try:
            self.backend.write(ops)
        except Exception as exc:
            error = self._failed(exc)
            for op in begins:
                _fail(op.future, error)
            self._hold_for_retry([op for op in ops if not isinstance(op, Begin)])
            return
        self.commits += 1
        self._recovered()
        for op in begins:
            if op.rejected is None:
                _resolve(op.future, None)
            else:
                _fail(op.future, AuditUnavailable(op.rejected))

    def _prune_step(self, job: PruneJob) -> None:
        """One short prune transaction; re-queued behind newer work while more remains."""
        if not _claim(job.future):
            return  # the caller cancelled the prune
        try:
            more = self.backend.prune_step(job, self.prune_batch)
        except Exception as exc:
            _fail(job.future, self._failed(exc))
            return
        self.commits += 1
        self._recovered()
        if more:
            self._queue.put(job)  # behind any begins that arrived meanwhile
        else:
            _resolve(job.future, job.deleted)

    def _open(self, op: _Control) -> None:
        try:
            self.backend.open()
        except Exception as exc:
            _fail(op.future, self._failed(exc))
            return
        self._recovered()
        _resolve(op.future, None)

    def _failed(self, exc: Exception) -> AuditUnavailable:
        """After a failed backend call: log the failure once (and again when it changes)."""
        if not isinstance(exc, AuditUnavailable):  # the backend broke its contract: a bug
            log.error("audit: %s failed", self.backend.name, exc_info=exc)
            exc = AuditUnavailable(f"audit {self.backend.name} failed: {type(exc).__name__}")
        message = str(exc)
        if message != self._failing:
            log.error("audit: %s", message)
        self._failing = message
        return exc

    def _recovered(self) -> None:
        if self._failing is not None:
            log.warning("audit: %s is writable again", self.backend.name)
        self._failing = None

    def _hold_for_retry(self, ops: list[Finish | Bodies]) -> None:
        self._retry.extend(ops)
        overflow = len(self._retry) - _MAX_RETRY
        if overflow > 0:
            log.error("audit: database down too long; dropping %d pending completions", overflow)
            del self._retry[:overflow]

    def _fail_batch(self, batch: list[_Op], exc: AuditUnavailable) -> None:
        for op in batch:
            if isinstance(op, Begin | PruneJob | _Control):
                _fail(op.future, exc)

    def _shutdown(self) -> None:
        """Fail whatever slipped in behind the stop, report lost work, close the store."""
        leftovers: list[_Op] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._fail_batch(leftovers, AuditUnavailable("audit writer is closed"))
        lost = len(self._retry) + sum(isinstance(op, Finish | Bodies) for op in leftovers)
        if lost:
            log.error("audit: closing with %d completions not written", lost)
        self._retry = []
        try:
            self.backend.close()
        except Exception:
            log.exception("audit: closing %s failed", self.backend.name)
