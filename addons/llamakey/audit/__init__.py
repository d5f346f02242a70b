"""The audit database: one flat SQLite file that answers "who spent what, on which model, when,
and what was refused" with plain SQL.

Storage layer only. The mitmproxy addon that feeds it runs on an asyncio loop that must never
block, so every SQLite call happens on one writer thread owned by :class:`AuditWriter`. Callers
hand it work through a queue and get :class:`concurrent.futures.Future` objects back.

Schema
    ``requests``  one row per flow (flow id is the primary key), see :data:`REQUEST_COLUMNS`.
                  Indexes on ``(ts)``, ``(user, ts)``, ``(provider, ts)`` and a unique one on
                  ``seq``. ``groups`` is a JSON list, so ``json_each(groups)`` explodes it.
    ``bodies``    request/response bodies, only written when ``log_bodies`` is on; index on ``ts``.
    ``audit_meta``  key/value: where the hash chain starts after a prune.
    The schema version lives in ``PRAGMA user_version``. The database runs in WAL mode with
    ``synchronous=NORMAL`` and a busy timeout; the file and its ``-wal``/``-shm`` companions are
    chmod 0600 whatever the umask.

Write-ahead and group commit
    :meth:`AuditWriter.begin` inserts the request row *before* the request goes upstream; its
    future resolves only once the row is committed, or fails with :class:`AuditUnavailable`, so
    a request that cannot be audited is never sent. The writer thread drains everything queued
    (waiting ``group_commit_ms`` after the first item for stragglers), writes it all in one
    transaction, commits once and then resolves every future of that batch. :attr:`commits`
    counts the commits.

Tamper evidence: the chain is built in completion order
    A row is only complete when its flow ends, and a hash over half a row would prove nothing.
    So a row joins the chain when :meth:`AuditWriter.finish` seals it: on the writer thread, in
    the same transaction that writes the completion fields, it gets ``seq`` = last seq + 1,
    ``prev_hash`` = the previous sealed row's ``row_hash`` and
    ``row_hash = sha256(prev_hash + canonical JSON of the stored row)`` (see :func:`row_digest`).
    The hash is computed from the row as read back from SQLite, so :func:`verify` recomputes
    exactly the same bytes. ``seq`` order is therefore completion order, not ``ts`` order.
    A sealed row is never updated again; a second ``finish`` for it is ignored.

    Rows never finished (still in flight, or the proxy was killed) have NULL ``seq``/hashes.
    :func:`verify` counts them as ``unfinished`` rather than calling them tampering; but since
    only ``finish`` ever sets ``completed_ts`` or a hash, an unsealed row carrying either is
    reported as ``inserted``.

    The canonical JSON leaves out NULL columns, so a later migration that adds a column does not
    change the hashes of existing rows. ``seq`` itself is not hashed: order is already fixed by
    each row naming its predecessor's hash.

    Pruning deletes sealed rows strictly as a ``seq`` prefix (an old row sealed after a row that
    is still inside the retention window waits for it, see :meth:`AuditWriter.prune`) and records
    the last deleted ``(seq, row_hash)`` in ``audit_meta``, so the remaining chain still verifies
    from that anchor.

    Limits: anyone who can write the file can also recompute every hash after an edit. The chain
    catches edits made with a plain SQL client, not a forger who knows this module; for more,
    copy :attr:`VerifyResult.head_hash` somewhere the proxy host cannot write.

Failures
    If the database cannot be written (read-only file, directory removed, disk full, locked
    beyond the busy timeout) the batch is rolled back, its ``begin`` futures fail with
    :class:`AuditUnavailable`, :attr:`AuditWriter.healthy` turns False and the connection is
    dropped. The next batch reopens the database (recreating the file if it was removed), so the
    writer recovers by itself. ``finish``/``bodies`` work from a failed batch is kept and retried
    (about once a second, and with every new batch). The writer thread never dies on an error.

Reading
    :func:`verify`, :func:`usage_report` open the file read-only (``mode=ro``) and can run while
    the proxy writes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence, Set
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlite_utils

__all__ = [
    "GENESIS_HASH",
    "REPORT_COLUMNS",
    "REQUEST_COLUMNS",
    "SCHEMA_VERSION",
    "AuditUnavailable",
    "AuditWriter",
    "VerifyResult",
    "ensure_schema",
    "format_report",
    "format_ts",
    "parse_since",
    "row_digest",
    "usage_report",
    "verify",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1

#: Column name -> SQLite type of the ``requests`` table, in table order.
REQUEST_COLUMNS: Final[Mapping[str, str]] = {
    "id": "TEXT",
    "ts": "TEXT",
    "user": "TEXT",
    "groups": "TEXT",
    "client_addr": "TEXT",
    "provider": "TEXT",
    "host": "TEXT",
    "method": "TEXT",
    "path": "TEXT",
    "model": "TEXT",
    "stream": "INTEGER",
    "request_bytes": "INTEGER",
    "status": "INTEGER",
    "refused_by": "TEXT",
    "error": "TEXT",
    "latency_ms": "REAL",
    "ttfb_ms": "REAL",
    "response_bytes": "INTEGER",
    "input_tokens": "INTEGER",
    "output_tokens": "INTEGER",
    "cache_read_tokens": "INTEGER",
    "cache_write_tokens": "INTEGER",
    "reasoning_tokens": "INTEGER",
    "cost_usd": "REAL",
    "provider_cost_usd": "REAL",
    "response_model": "TEXT",
    "finish_reason": "TEXT",
    "client_disconnected": "INTEGER",
    "completed_ts": "TEXT",
    "seq": "INTEGER",
    "prev_hash": "TEXT",
    "row_hash": "TEXT",
}

#: Chain bookkeeping columns: written only by the writer thread, never hashed.
_CHAIN_COLUMNS: Final = frozenset({"seq", "prev_hash", "row_hash"})
#: Columns ``begin`` may not set: the chain columns, and ``completed_ts`` which marks a sealed row.
_NOT_AT_BEGIN: Final = _CHAIN_COLUMNS | {"completed_ts"}
#: Columns ``finish`` may not set.
_NOT_AT_FINISH: Final = _CHAIN_COLUMNS | {"id"}

#: ``prev_hash`` of the very first sealed row.
GENESIS_HASH: Final = "0" * 64

#: Columns of every :func:`usage_report` row, in order.
REPORT_COLUMNS: Final = (
    "key",
    "requests",
    "refused",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "unpriced",
)

_FILE_MODE: Final = 0o600
_RETRY_INTERVAL_S: Final = 1.0
# Bounds the memory held by finish()/bodies() work waiting for a broken database to come back.
_MAX_RETRY: Final = 10_000

type SqlValue = str | int | float | None


class AuditUnavailable(Exception):
    """The database cannot be written (locked, disk full, removed, read-only).

    The message says why, and never carries row contents or secrets.
    """


# --------------------------------------------------------------------------- values and hashing


def format_ts(moment: datetime) -> str:
    """Format ``moment`` as UTC ISO-8601 with milliseconds and ``Z``: ``2025-01-31T09:05:07.042Z``.

    A naive datetime is taken to be UTC. Every timestamp in the database uses this form, so text
    comparison orders them correctly.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now_ts() -> str:
    return format_ts(datetime.now(UTC))


def _canonical_json(row: Mapping[str, object]) -> str:
    """Content columns of ``row`` as compact, key-sorted JSON; NULLs and chain columns left out."""
    content = {k: v for k, v in row.items() if v is not None and k not in _CHAIN_COLUMNS}
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def row_digest(prev_hash: str, row: Mapping[str, object]) -> str:
    """The ``row_hash`` a sealed row must carry: ``sha256(prev_hash + canonical JSON)`` in hex.

    The JSON holds every column of the row except ``seq``, ``prev_hash`` and ``row_hash``, with
    NULL columns omitted, keys sorted, no whitespace, UTF-8.
    """
    return hashlib.sha256((prev_hash + _canonical_json(row)).encode("utf-8")).hexdigest()


def _coerce(column: str, value: object) -> SqlValue:
    """Check ``value`` for ``column`` and convert it to what SQLite will store.

    Raises ``ValueError``/``TypeError`` with a message naming the column but never the value,
    since values may be sensitive.
    """
    kind = REQUEST_COLUMNS.get(column)
    if kind is None:
        raise ValueError(f"unknown column {column!r}")
    if value is None:
        return None
    if column in ("ts", "completed_ts"):
        if isinstance(value, datetime):
            return format_ts(value)
        if isinstance(value, str):
            # Re-format so every stored timestamp sorts as text.
            return format_ts(datetime.fromisoformat(value))
        raise TypeError(f"{column} must be a datetime or an ISO-8601 string")
    if column == "groups":
        return _coerce_groups(value)
    if kind == "TEXT":
        if not isinstance(value, str):
            raise TypeError(f"{column} must be a string")
        if column == "path":
            # Query strings can carry credentials (e.g. Gemini's ?key=); never store them.
            return re.split(r"[?#]", value, maxsplit=1)[0]
        return value
    if kind == "INTEGER":
        if not isinstance(value, int):
            raise TypeError(f"{column} must be an integer")
        return int(value)  # bool -> 0/1
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{column} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{column} must be finite")
    return float(value)


def _coerce_groups(value: object) -> str:
    """Store groups as a JSON list of strings (sets are sorted, so the text is deterministic)."""
    parsed: object
    if isinstance(value, str):
        parsed = json.loads(value)
    elif isinstance(value, Set):
        parsed = sorted(value)
    elif isinstance(value, list | tuple):
        parsed = list(value)
    else:
        raise TypeError("groups must be a list of strings")
    if not isinstance(parsed, list) or not all(isinstance(g, str) for g in parsed):
        raise TypeError("groups must be a list of strings")
    return json.dumps(parsed, ensure_ascii=False)


def _begin_values(row: Mapping[str, object]) -> dict[str, SqlValue]:
    """Validate a ``begin`` row; raise ``ValueError``/``TypeError`` on the first problem."""
    values: dict[str, SqlValue] = {}
    for column, value in row.items():
        if column in _NOT_AT_BEGIN:
            raise ValueError(f"{column} is set by the audit writer, not by begin()")
        values[column] = _coerce(column, value)
    request_id = values.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("row needs a non-empty string id")
    if values.get("ts") is None:
        values["ts"] = _now_ts()
    return values


def _finish_values(request_id: str, fields: Mapping[str, object]) -> dict[str, SqlValue]:
    """Validate ``finish`` fields, dropping (and logging) the bad ones instead of raising."""
    values: dict[str, SqlValue] = {}
    for column, value in fields.items():
        try:
            if column in _NOT_AT_FINISH:
                raise ValueError(f"{column} cannot be set by finish()")
            values[column] = _coerce(column, value)
        except (ValueError, TypeError) as exc:
            log.warning("audit: finish(%s): ignoring field: %s", request_id, exc)
    if values.get("completed_ts") is None:
        values["completed_ts"] = _now_ts()
    return values


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_MAX_BEGUN = 100_000  # begin rows kept for sealing; beyond, the oldest is sealed by readback


@functools.lru_cache(maxsize=64)
def _seal_sql(columns: tuple[str, ...]) -> str:
    """UPDATE that completes and seals a row, only if it is not sealed yet (cached per shape)."""
    assignments = ", ".join(f"{_quote(c)} = ?" for c in columns)
    return f'UPDATE requests SET {assignments} WHERE id = ? AND "seq" IS NULL'


# --------------------------------------------------------------------------- schema


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or migrate the tables and indexes, then set ``PRAGMA user_version``.

    Safe to run on every open: everything is ``IF NOT EXISTS``, so a dropped table comes back.
    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises
    :class:`AuditUnavailable` if the file was written by a newer schema.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise AuditUnavailable(
            f"audit database schema version {version} is newer than this LlaMaKey "
            f"understands ({SCHEMA_VERSION})"
        )
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        requests = db.table("requests")
        requests.create(dict(REQUEST_COLUMNS), pk="id", not_null={"ts"}, if_not_exists=True)
        requests.create_index(["ts"], index_name="idx_requests_ts", if_not_exists=True)
        requests.create_index(["user", "ts"], index_name="idx_requests_user_ts", if_not_exists=True)
        requests.create_index(
            ["provider", "ts"], index_name="idx_requests_provider_ts", if_not_exists=True
        )
        # The chain is walked and extended by seq; unique also stops two rows sharing a slot.
        requests.create_index(
            ["seq"], index_name="idx_requests_seq", unique=True, if_not_exists=True
        )
        bodies = db.table("bodies")
        bodies.create(
            {"request_id": "TEXT", "ts": "TEXT", "request_body": "TEXT", "response_body": "TEXT"},
            pk="request_id",
            foreign_keys=[("request_id", "requests", "id")],
            if_not_exists=True,
        )
        bodies.create_index(["ts"], index_name="idx_bodies_ts", if_not_exists=True)
        db.table("audit_meta").create(
            {"key": "TEXT", "value": "TEXT"}, pk="key", if_not_exists=True
        )
        # Later schema versions add their steps here, each guarded by `version < N`. New
        # columns must default to NULL: NULLs are left out of row hashes, so old rows still verify.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; errors are ignored (SQLite may have rolled back)."""
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _chain_base(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, row_hash)`` the chain starts after: genesis, or the last pruned row."""
    try:
        rows = dict(
            conn.execute(
                "SELECT key, value FROM audit_meta"
                " WHERE key IN ('chain_base_seq', 'chain_base_hash')"
            ).fetchall()
        )
    except sqlite3.OperationalError:  # no audit_meta table (not created by this module)
        return 0, GENESIS_HASH
    return int(rows.get("chain_base_seq", 0)), str(rows.get("chain_base_hash", GENESIS_HASH))


def _chain_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, row_hash)`` of the last sealed row, or the chain base if there is none."""
    row = conn.execute(
        "SELECT seq, row_hash FROM requests WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return _chain_base(conn)
    return int(row[0]), str(row[1])


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO audit_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _describe(path: Path, exc: BaseException) -> str:
    """One line saying why the database could not be used. SQLite and OS messages name files
    and conditions, never row values, so they are safe to pass on."""
    if isinstance(exc, AuditUnavailable):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None)
        suffix = f" ({name})" if name else ""
        return f"audit database {path} is not writable: {exc}{suffix}"
    if isinstance(exc, OSError):
        return f"audit database {path} is not writable: {exc.strerror or exc}"
    return f"audit database {path} is not writable: {type(exc).__name__}"


# --------------------------------------------------------------------------- writer thread work


@dataclass(eq=False)
class _Begin:
    values: dict[str, SqlValue]
    future: Future[None]
    rejected: str | None = None


@dataclass(eq=False)
class _Finish:
    request_id: str
    values: dict[str, SqlValue]


@dataclass(eq=False)
class _Bodies:
    request_id: str
    ts: str
    request_body: str | None
    response_body: str | None


@dataclass(eq=False)
class _Prune:
    cutoff: str
    future: Future[int]
    # First seq that must be kept; fixed at the first step so the deleted set is a seq prefix.
    boundary: int | None = None
    deleted: int = 0


@dataclass(eq=False)
class _Control:
    """Open, flush or stop: resolved once everything queued before it is done."""

    action: str
    future: Future[None] = field(default_factory=Future)


type _Write = _Begin | _Finish | _Bodies
type _Op = _Write | _Prune | _Control

# Row-level problems: they reject one piece of work, not the whole batch.
_ROW_ERRORS: Final = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,
    TypeError,
)


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


class AuditWriter:
    """Writes the audit database from one dedicated thread; every method is safe to call from
    any thread (in particular the asyncio loop) and never blocks on SQLite.

    ``busy_timeout_ms`` bounds how long a write waits for a lock held by someone else before the
    batch fails; ``prune_batch`` is how many rows one prune transaction deletes.
    """

    def __init__(
        self,
        path: Path,
        *,
        group_commit_ms: float = 2.0,
        log_bodies: bool = False,
        busy_timeout_ms: int = 2000,
        max_batch: int = 1000,
        prune_batch: int = 500,
    ) -> None:
        self.path = Path(path)
        self.group_commit_ms = group_commit_ms
        self.log_bodies = log_bodies
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self.prune_batch = prune_batch
        #: Number of transactions committed so far (group commit makes this far below row count).
        self.commits = 0
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders enqueue against close()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._healthy = False
        self._last_error: str | None = None
        # Owned by the writer thread.
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._retry: list[_Finish | _Bodies] = []
        # Committed begin rows not yet sealed, by id: their hash is computed from these values
        # and the finish fields (exactly what SQLite stores, see _coerce) without reading back.
        self._begun: dict[str, dict[str, SqlValue]] = {}

    # ---- public API (any thread)

    def start(self) -> None:
        """Start the writer thread and open, create or migrate the database on it.

        Raises :class:`AuditUnavailable` if the database cannot be opened; the writer is then
        closed.
        """
        opened = _Control("open")
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("AuditWriter.start() called twice")
            self._queue.put(opened)
            self._thread = threading.Thread(target=self._run, name="llamakey-audit", daemon=True)
            self._thread.start()
        try:
            opened.future.result()
        except AuditUnavailable:
            self.close()
            raise

    def begin(self, row: Mapping[str, object]) -> Future[None]:
        """Write-ahead: insert the request row.

        The future resolves when the row is committed (durable), or fails with
        :class:`AuditUnavailable`. The caller awaits it (``asyncio.wrap_future``) before sending
        the request upstream. Concurrent begins share one commit. A row with an unknown column,
        a badly typed value or a duplicate id also fails with :class:`AuditUnavailable`, because
        an unauditable request must not go out. ``ts`` defaults to now; ``path`` loses its query.
        """
        future: Future[None] = Future()
        try:
            values = _begin_values(row)
        except (ValueError, TypeError) as exc:
            future.set_exception(AuditUnavailable(f"audit row rejected: {exc}"))
            return future
        if not self._enqueue(_Begin(values, future)):
            future.set_exception(AuditUnavailable("audit writer is not running"))
        return future

    def finish(self, request_id: str, fields: Mapping[str, object]) -> None:
        """Complete the row when the flow ends, and seal it into the hash chain.

        Fire-and-forget, group-committed like ``begin``. Never raises: bad fields are logged and
        skipped, a finish for an unknown or already sealed row is logged and ignored.
        ``completed_ts`` defaults to now.
        """
        try:
            values = _finish_values(request_id, fields)
            if not self._enqueue(_Finish(request_id, values)):
                log.error("audit: writer not running; completion of %s lost", request_id)
        except Exception:  # finish() must never raise into the proxy
            log.exception("audit: finish(%s) failed", request_id)

    def bodies(self, request_id: str, request_body: str | None, response_body: str | None) -> None:
        """Store the bodies of a flow (replacing earlier ones). Ignored unless ``log_bodies``.

        Fire-and-forget; never raises.
        """
        if not self.log_bodies:
            return
        try:
            if not all(b is None or isinstance(b, str) for b in (request_body, response_body)):
                raise TypeError("bodies must be str or None")
            if not self._enqueue(_Bodies(request_id, _now_ts(), request_body, response_body)):
                log.error("audit: writer not running; bodies of %s lost", request_id)
        except Exception:
            log.exception("audit: bodies(%s) failed", request_id)

    @property
    def healthy(self) -> bool:
        """False after a failed write until a later write succeeds (and before ``start``)."""
        return self._healthy

    def prune(self, retention_days: int) -> Future[int]:
        """Delete rows (and their bodies) whose ``ts`` is older than ``retention_days`` days.

        Runs on the writer thread in transactions of ``prune_batch`` rows, re-queued behind other
        work so requests are never held up by a long lock. The returned future gives the number
        of request rows deleted (callers may ignore it).

        Sealed rows go strictly in ``seq`` order so the chain stays verifiable: the deletion
        stops at the first sealed row whose ``ts`` is inside the window, which may keep a few
        old rows that were completed after a newer one. Unsealed rows older than the cutoff
        go too, as do old bodies without a request row.
        """
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        future: Future[int] = Future()
        cutoff = format_ts(datetime.now(UTC) - timedelta(days=retention_days))
        if not self._enqueue(_Prune(cutoff, future)):
            future.set_exception(AuditUnavailable("audit writer is not running"))
        return future

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been written (or has failed).

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
        self._shutdown()

    def _next_batch(self) -> list[_Op]:
        """Block for work, then gather what else arrives within the group-commit window."""
        try:
            first = self._queue.get(timeout=_RETRY_INTERVAL_S if self._retry else None)
        except queue.Empty:
            return []  # time to retry held-back finish/bodies work
        batch: list[_Op] = [first]
        if isinstance(first, _Begin | _Finish | _Bodies) and self.group_commit_ms > 0:
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
                if isinstance(op, _Prune | _Control):
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
        writes: list[_Write] = list(self._retry)
        self._retry = []
        stop = False
        for op in batch:
            if isinstance(op, _Begin | _Finish | _Bodies):
                writes.append(op)
                continue
            self._write(writes)
            writes = []
            if isinstance(op, _Prune):
                self._prune_step(op)
            elif op.action == "open":
                self._open_for_start(op)
            elif op.action == "stop":
                stop = True
                _resolve(op.future, None)
            else:
                _resolve(op.future, None)
        self._write(writes)
        return stop

    def _write(self, ops: Sequence[_Write]) -> None:
        """Apply ``ops`` in one transaction and commit once; then settle the begin futures."""
        if not ops:
            return
        begins = [op for op in ops if isinstance(op, _Begin)]
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                head: tuple[int, str] | None = None
                for op in ops:
                    if isinstance(op, _Begin):
                        self._insert(conn, op)
                    elif isinstance(op, _Finish):
                        head = self._seal(conn, op, head)
                    else:
                        self._store_bodies(conn, op)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except Exception as exc:
            error = self._write_failed(exc)
            for op in begins:
                _fail(op.future, error)
            self._hold_for_retry([op for op in ops if not isinstance(op, _Begin)])
            return
        self.commits += 1
        self._mark_healthy()
        for op in begins:
            if op.rejected is None:
                self._begun[str(op.values["id"])] = op.values
                if len(self._begun) > _MAX_BEGUN:  # a flow that never ended: forget the oldest
                    del self._begun[next(iter(self._begun))]
                _resolve(op.future, None)
            else:
                _fail(op.future, AuditUnavailable(op.rejected))

    def _write_failed(self, exc: Exception) -> AuditUnavailable:
        """After a failed transaction: unhealthy until a write works, reconnect next time."""
        message = _describe(self.path, exc)
        self._mark_unhealthy(message)
        self._disconnect()
        return AuditUnavailable(message)

    def _insert(self, conn: sqlite3.Connection, op: _Begin) -> None:
        columns = list(op.values)
        sql = "INSERT INTO requests ({}) VALUES ({})".format(
            ", ".join(_quote(c) for c in columns), ", ".join("?" for _ in columns)
        )
        try:
            conn.execute(sql, [op.values[c] for c in columns])
        except _ROW_ERRORS as exc:
            # A failed statement undoes only itself; the rest of the batch still commits.
            op.rejected = f"audit row {op.values['id']!r} rejected: {exc}"

    def _seal(
        self, conn: sqlite3.Connection, op: _Finish, head: tuple[int, str] | None
    ) -> tuple[int, str] | None:
        """Write the completion fields and append the row to the hash chain.

        ``head`` is the chain head as of the previous seal in this transaction (None: read it
        from the database). Returns the new head.
        """
        if head is None:
            head = _chain_head(conn)
        seq, prev_hash = head[0] + 1, head[1]
        begun = self._begun.pop(op.request_id, None)
        if begun is None:  # begun by an earlier writer (a restart): hash what SQLite holds
            return self._seal_stored_row(conn, op, seq, prev_hash, head)
        digest = row_digest(prev_hash, {**begun, **op.values})
        values: dict[str, SqlValue] = {
            **op.values,
            "seq": seq,
            "prev_hash": prev_hash,
            "row_hash": digest,
        }
        try:
            # One statement: it fails or succeeds alone, and never touches a sealed row.
            sealed = conn.execute(
                _seal_sql(tuple(values)), [*values.values(), op.request_id]
            ).rowcount
        except _ROW_ERRORS as exc:
            log.warning("audit: finish(%s) rejected: %s", op.request_id, exc)
            return head
        if not sealed:
            log.warning("audit: finish for unknown or sealed request %s ignored", op.request_id)
            return head
        return seq, digest

    def _seal_stored_row(
        self,
        conn: sqlite3.Connection,
        op: _Finish,
        seq: int,
        prev_hash: str,
        head: tuple[int, str],
    ) -> tuple[int, str]:
        """Seal a row whose begin values this writer does not hold, hashing it as stored."""
        found = conn.execute('SELECT "seq" FROM requests WHERE id = ?', (op.request_id,)).fetchone()
        if found is None:
            log.warning("audit: finish for unknown request %s ignored", op.request_id)
            return head
        if found[0] is not None:
            log.warning("audit: request %s is already sealed; finish ignored", op.request_id)
            return head
        values: dict[str, SqlValue] = {**op.values, "seq": seq, "prev_hash": prev_hash}
        conn.execute("SAVEPOINT seal")
        try:
            conn.execute(
                "UPDATE requests SET {} WHERE id = ?".format(
                    ", ".join(f"{_quote(c)} = ?" for c in values)
                ),
                [*values.values(), op.request_id],
            )
            cursor = conn.execute("SELECT * FROM requests WHERE id = ?", (op.request_id,))
            names = [d[0] for d in cursor.description]
            digest = row_digest(prev_hash, dict(zip(names, cursor.fetchone(), strict=True)))
            conn.execute("UPDATE requests SET row_hash = ? WHERE id = ?", (digest, op.request_id))
        except _ROW_ERRORS as exc:
            conn.execute("ROLLBACK TO seal")
            conn.execute("RELEASE seal")
            log.warning("audit: finish(%s) rejected: %s", op.request_id, exc)
            return head
        conn.execute("RELEASE seal")
        return seq, digest

    def _store_bodies(self, conn: sqlite3.Connection, op: _Bodies) -> None:
        try:
            conn.execute(
                "INSERT OR REPLACE INTO bodies (request_id, ts, request_body, response_body) "
                "VALUES (?, ?, ?, ?)",
                (op.request_id, op.ts, op.request_body, op.response_body),
            )
        except _ROW_ERRORS as exc:
            log.warning("audit: bodies(%s) rejected: %s", op.request_id, exc)

    def _prune_step(self, op: _Prune) -> None:
        """Delete up to ``prune_batch`` old rows in one short transaction; re-queue if more."""
        if not _claim(op.future):
            return  # the caller cancelled the prune
        limit = self.prune_batch
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if op.boundary is None:
                    op.boundary = int(
                        conn.execute(
                            "SELECT COALESCE("
                            "  (SELECT MIN(seq) FROM requests WHERE seq IS NOT NULL AND ts >= ?),"
                            "  (SELECT COALESCE(MAX(seq), 0) + 1 FROM requests))",
                            (op.cutoff,),
                        ).fetchone()[0]
                    )
                victims = conn.execute(
                    "SELECT id, seq, row_hash FROM requests WHERE seq < ? ORDER BY seq LIMIT ?",
                    (op.boundary, limit),
                ).fetchall()
                if not victims:
                    victims = conn.execute(
                        "SELECT id, seq, row_hash FROM requests"
                        " WHERE seq IS NULL AND ts < ? LIMIT ?",
                        (op.cutoff, limit),
                    ).fetchall()
                if victims:
                    ids = [v[0] for v in victims]
                    marks = ", ".join("?" for _ in ids)
                    conn.execute(f"DELETE FROM bodies WHERE request_id IN ({marks})", ids)
                    conn.execute(f"DELETE FROM requests WHERE id IN ({marks})", ids)
                    sealed = [v for v in victims if v[1] is not None]
                    if sealed:
                        # Remember where the surviving chain starts, so verify() can anchor it.
                        _set_meta(conn, "chain_base_seq", str(sealed[-1][1]))
                        _set_meta(conn, "chain_base_hash", str(sealed[-1][2]))
                    more = True
                else:
                    orphans = conn.execute(
                        "DELETE FROM bodies WHERE rowid IN (SELECT rowid FROM bodies WHERE ts < ?"
                        " AND request_id NOT IN (SELECT id FROM requests) LIMIT ?)",
                        (op.cutoff, limit),
                    ).rowcount
                    more = orphans > 0
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except Exception as exc:
            _fail(op.future, self._write_failed(exc))
            return
        self.commits += 1
        self._mark_healthy()
        op.deleted += len(victims)
        if more:
            self._queue.put(op)  # behind any begins that arrived meanwhile
        else:
            _resolve(op.future, op.deleted)

    def _open_for_start(self, op: _Control) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._connection()
        except Exception as exc:
            _fail(op.future, self._write_failed(exc))
            return
        self._mark_healthy()
        _resolve(op.future, None)

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened if the file was removed or replaced since.

        Raises :class:`AuditUnavailable` if the file was made read-only: an already open
        connection would otherwise keep writing through its old file descriptor.
        """
        if self._conn is not None:
            if not self._same_file():
                log.warning("audit: database %s was removed or replaced; reopening", self.path)
                self._disconnect()
            elif not os.access(self.path, os.W_OK):
                self._disconnect()
                raise AuditUnavailable(f"audit database {self.path} is read-only")
            else:
                return self._conn
        self._conn = self._open()
        return self._conn

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id

    def _open(self) -> sqlite3.Connection:
        """Create (0600) or open the file, configure the connection and migrate the schema."""
        # Create the file ourselves so its mode never depends on the umask, and so a missing
        # directory fails here instead of SQLite creating nothing.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            self._configure(conn)
            ensure_schema(conn)
            # A read transaction makes SQLite create -wal and -shm, so they can be chmod'ed now.
            conn.execute("SELECT 1 FROM requests LIMIT 1").fetchall()
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.path}{suffix}", _FILE_MODE)
        except BaseException:
            conn.close()
            raise
        self._file_id = (st.st_dev, st.st_ino)
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings: busy timeout, WAL, ``synchronous=NORMAL``.

        Subclasses may extend this (the tests use it to cap the file size, simulating a full
        disk).
        """
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise AuditUnavailable(f"audit database {self.path} cannot use WAL mode ({mode})")
        # In WAL mode NORMAL is still crash-safe; only the last commits can roll back on power
        # loss.
        conn.execute("PRAGMA synchronous = NORMAL")

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._file_id = None

    def _hold_for_retry(self, ops: list[_Finish | _Bodies]) -> None:
        self._retry.extend(ops)
        overflow = len(self._retry) - _MAX_RETRY
        if overflow > 0:
            log.error("audit: database down too long; dropping %d pending completions", overflow)
            del self._retry[:overflow]

    def _mark_unhealthy(self, message: str) -> None:
        if self._healthy or message != self._last_error:
            log.error("audit: %s", message)
        self._healthy = False
        self._last_error = message

    def _mark_healthy(self) -> None:
        if not self._healthy and self._last_error is not None:
            log.warning("audit: database %s is writable again", self.path)
        self._healthy = True
        self._last_error = None

    def _fail_batch(self, batch: list[_Op], exc: AuditUnavailable) -> None:
        for op in batch:
            if isinstance(op, _Begin | _Prune | _Control):
                _fail(op.future, exc)

    def _shutdown(self) -> None:
        """Fail whatever slipped in behind the stop, report lost work, close the connection."""
        leftovers: list[_Op] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._fail_batch(leftovers, AuditUnavailable("audit writer is closed"))
        lost = len(self._retry) + sum(isinstance(op, _Finish | _Bodies) for op in leftovers)
        if lost:
            log.error("audit: closing with %d completions not written", lost)
        self._retry = []
        self._disconnect()
        self._healthy = False


# --------------------------------------------------------------------------- reading


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-only; a missing file raises ``FileNotFoundError`` instead of being
    created."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`.

    ``problem`` is ``"altered"`` (a row's content no longer matches its hash), ``"inserted"``
    (a row that was not written by the chain) or ``"deleted"`` (the row before
    ``first_bad_id`` is missing). ``unfinished`` counts rows never sealed (in flight, or the
    proxy was killed), which prove nothing either way. ``head_hash`` is the last row's hash when
    the chain is intact: keep a copy elsewhere to detect a wholesale rewrite later.
    """

    ok: bool
    rows_checked: int
    first_bad_id: str | None
    problem: str | None
    unfinished: int = 0
    head_hash: str | None = None


@dataclass
class _Link:
    """What verify remembers of a row it has passed."""

    rowid: int
    id: str | None
    seq: int
    row_hash: object


def _judge(
    row: dict[str, object], rowid: int, prev: _Link, before: _Link | None
) -> tuple[str, str | None] | None:
    """Classify one sealed row against its predecessors; None when it chains correctly."""
    row_id, seq, prev_hash = str(row["id"]), row["seq"], row["prev_hash"]
    if not isinstance(seq, int):  # ours are always integers
        return "altered", row_id
    try:
        self_ok = isinstance(prev_hash, str) and row_digest(prev_hash, row) == row["row_hash"]
    except (TypeError, ValueError):  # e.g. a BLOB slipped in: cannot be a row we hashed
        self_ok = False
    if prev_hash == prev.row_hash:
        return None if self_ok and seq == prev.seq + 1 else ("altered", row_id)
    if seq > prev.seq + 1:
        return "deleted", row_id
    forks = self_ok and before is not None and prev_hash == before.row_hash
    if forks or seq == prev.seq:
        # Two rows claim the same predecessor (or the same seq): the later-written one is forged.
        return "inserted", (row_id if rowid > prev.rowid else prev.id)
    return "inserted", row_id


def verify(path: Path) -> VerifyResult:
    """Walk the hash chain in ``seq`` order and name the first row that breaks it.

    A row whose content does not match its ``row_hash`` while it still links to its predecessor
    is ``altered``; a ``seq`` gap means the predecessor was ``deleted``; a row that does not link
    to its predecessor, shares its ``seq``, or forks off the row before (the later-written of the
    pair is blamed) is ``inserted``, as is an unsealed row that carries a hash or
    ``completed_ts``. Only the first problem is reported. Opens the database read-only.
    """
    conn = _connect_ro(path)
    try:
        base_seq, base_hash = _chain_base(conn)
        prev = _Link(rowid=-1, id=None, seq=base_seq, row_hash=base_hash)
        before: _Link | None = None
        checked = 0
        unfinished = int(
            conn.execute("SELECT COUNT(*) FROM requests WHERE seq IS NULL").fetchone()[0]
        )
        cursor = conn.execute(
            "SELECT rowid AS __rowid, * FROM requests WHERE seq IS NOT NULL ORDER BY seq, rowid"
        )
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            rowid = int(row.pop("__rowid"))
            checked += 1
            verdict = _judge(row, rowid, prev, before)
            if verdict is not None:
                return VerifyResult(False, checked, verdict[1], verdict[0], unfinished)
            before = prev
            prev = _Link(rowid, str(row["id"]), int(row["seq"]), row["row_hash"])
        forged = conn.execute(
            "SELECT id FROM requests WHERE seq IS NULL AND (completed_ts IS NOT NULL"
            " OR prev_hash IS NOT NULL OR row_hash IS NOT NULL) ORDER BY ts LIMIT 1"
        ).fetchone()
        if forged is not None:
            return VerifyResult(False, checked, str(forged[0]), "inserted", unfinished)
        return VerifyResult(True, checked, None, None, unfinished, str(prev.row_hash))
    finally:
        conn.close()


_REPORT_KEYS: Final[Mapping[str, tuple[str, str]]] = {
    "user": ('r."user"', ""),
    "provider": ("r.provider", ""),
    # The model the client asked for; the response's when the request named none.
    "model": ("COALESCE(r.model, r.response_model)", ""),
    "day": ("substr(r.ts, 1, 10)", ""),
    # A request counts once for each of its user's groups; no groups -> NULL key.
    "group": (
        "g.value",
        'LEFT JOIN json_each(CASE WHEN json_valid(r."groups") THEN r."groups" ELSE \'[]\' END)'
        " AS g",
    ),
}


def usage_report(path: Path, *, since: datetime | None, by: str) -> list[dict[str, object]]:
    """Aggregate usage for ``lmk usage``, grouped ``by`` ``user``, ``group``, ``provider``,
    ``model`` or ``day`` (UTC), for requests with ``ts >= since`` (all when None).

    Each row has :data:`REPORT_COLUMNS`: ``key`` (None when the column is NULL), ``requests``,
    ``refused`` (rows with ``refused_by``), token sums, ``cost_usd`` (sum of known costs) and
    ``unpriced``: rows not refused whose cost is NULL (a refused request never reached a
    provider, so there is nothing to price). By group, a request counts in each of its groups.
    Days are sorted by date, everything else by cost then request count, descending. Opens the
    database read-only.
    """
    if by not in _REPORT_KEYS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(_REPORT_KEYS)}")
    key, join = _REPORT_KEYS[by]
    order = "key" if by == "day" else "cost_usd DESC, requests DESC, key"
    sql = f"""
        SELECT {key} AS key,
               COUNT(*) AS requests,
               COALESCE(SUM(r.refused_by IS NOT NULL), 0) AS refused,
               COALESCE(SUM(r.input_tokens), 0) AS input_tokens,
               COALESCE(SUM(r.output_tokens), 0) AS output_tokens,
               COALESCE(SUM(r.cache_read_tokens), 0) AS cache_read_tokens,
               COALESCE(SUM(r.cache_write_tokens), 0) AS cache_write_tokens,
               COALESCE(SUM(r.cost_usd), 0.0) AS cost_usd,
               COALESCE(SUM(r.cost_usd IS NULL AND r.refused_by IS NULL), 0) AS unpriced
        FROM requests AS r {join}
        {"" if since is None else "WHERE r.ts >= ?"}
        GROUP BY 1
        ORDER BY {order}
    """
    params = () if since is None else (format_ts(since),)
    conn = _connect_ro(path)
    try:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor]
    finally:
        conn.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def format_report(rows: list[dict[str, object]], fmt: str) -> str:
    """Render report rows as ``"table"`` (aligned text), ``"csv"`` (with header) or ``"json"``.

    CSV and JSON keep full precision and round-trip; the table shows floats with 6 decimals and
    a NULL key as ``(none)``.
    """
    columns = list(rows[0]) if rows else list(REPORT_COLUMNS)
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use table, csv or json")
    cells = [
        ["(none)" if c == "key" and row.get(c) is None else _cell(row.get(c)) for c in columns]
        for row in rows
    ]
    numeric = [bool(rows) and all(isinstance(r.get(c), int | float) for r in rows) for c in columns]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(columns), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    return "\n".join(lines) + "\n"


_RELATIVE = re.compile(r"\s*(\d+)\s*([dhm])\s*", re.IGNORECASE)
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Read ``7d``, ``24h``, ``30m`` (before ``now``, default the current time) or an ISO date
    or datetime (``2025-01-31``, ``2025-01-31T12:00Z``; naive means UTC). Returns an aware UTC
    datetime; raises ``ValueError`` otherwise."""
    match = _RELATIVE.fullmatch(text)
    if match:
        amount, unit = int(match[1]), _UNITS[match[2].lower()]
        return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use 7d, 24h, 30m or an ISO date like 2025-01-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
