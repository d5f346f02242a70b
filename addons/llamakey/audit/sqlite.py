"""The SQLite backend of the audit writer, and :class:`AuditWriter`, the sink the proxy runs.

One flat SQLite file answers "who spent what, on which model, when, and what was refused" with
plain SQL (tables in :mod:`llamakey.audit.schema`). :class:`SQLiteBackend` is driven by
:class:`~llamakey.audit.writer.BatchWriter` from its one thread, so it holds one connection and
no locks.

The file
    Runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout. We create the file
    ourselves, so its mode is 0600 whatever the umask and a missing directory fails instead of
    SQLite creating nothing; the ``-wal``/``-shm`` companions are chmod 0600 as soon as they
    exist. Every open migrates the schema (:func:`~llamakey.audit.schema.ensure_schema`).

    Before each transaction the connection checks the file is still the one it opened: if it was
    removed or replaced, it reopens (recreating it); if it was made read-only, it fails at once,
    because an open connection would otherwise keep writing through its old file descriptor.
    After any failed transaction the connection is dropped and the next one reopens.

One transaction per batch
    A batch of begins, finishes and bodies is one ``BEGIN IMMEDIATE`` transaction. A statement
    that fails for its own row (a duplicate id, a bad value) undoes only itself and rejects that
    row; anything else fails the whole batch.

Sealing
    ``finish`` seals the row into the hash chain (see :mod:`llamakey.audit.chain`) in the same
    transaction as the completion. The hash is computed from the begin values this backend
    committed plus the completion values, exactly what SQLite stores, so nothing is read back. A
    row begun by an earlier writer (before a restart) is hashed as read back instead.

The head file
    After each commit that sealed rows (once the batch's callers are answered; under load at
    most once a second), the chain head is written to ``<database>.head``, and it is logged now
    and then (:mod:`llamakey.audit.anchor`).
    Every open checks the database against that file, and every sealing transaction checks it
    against the head this backend last sealed: a database replaced, recreated or cut short is
    logged as an ERROR naming what is missing, the old head file is set aside, and a new head
    starts; writing goes on.

Pruning
    Sealed rows go strictly in ``seq`` order so the chain stays verifiable: the deletion stops at
    the first sealed row whose ``ts`` is inside the window, which may keep a few old rows that
    were completed after a newer one. Unsealed rows older than the cutoff go too, as do old
    bodies without a request row. Each step deletes a small batch in its own transaction.

``":memory:"`` instead of a path (as in ``sqlite_utils.Database``) keeps the database in the
connection, for tests: no file, no WAL, nothing to reopen.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from llamakey.audit.backend import Begin, Bodies, Finish, PruneJob, Write
from llamakey.audit.chain import chain_head, row_digest, set_chain_base
from llamakey.audit.keeper import HeadKeeper
from llamakey.audit.rows import RequestEnd, SqlValue, format_ts
from llamakey.audit.schema import ensure_schema, immediate
from llamakey.audit.sink import AuditUnavailable
from llamakey.audit.writer import BatchWriter

__all__ = ["AuditWriter", "SQLiteBackend"]

log = logging.getLogger(__name__)

_FILE_MODE: Final = 0o600
_MAX_BEGUN: Final = 100_000  # begin rows kept for sealing; beyond, the oldest is sealed by readback
_HEAD_RETRY_S: Final = 1.0  # a head file that could not be written is tried again after this

# Row-level problems: they reject one piece of work, not the whole batch.
_ROW_ERRORS: Final = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,
    TypeError,
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=8)
def _insert_sql(columns: tuple[str, ...]) -> str:
    return "INSERT INTO requests ({}) VALUES ({})".format(
        ", ".join(_quote(c) for c in columns), ", ".join("?" for _ in columns)
    )


@functools.lru_cache(maxsize=64)
def _seal_sql(columns: tuple[str, ...]) -> str:
    """UPDATE that completes and seals a row, only if it is not sealed yet (cached per shape)."""
    assignments = ", ".join(f"{_quote(c)} = ?" for c in columns)
    return f'UPDATE requests SET {assignments} WHERE id = ? AND "seq" IS NULL'


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


class SQLiteBackend:
    """The audit database at ``path`` (or ``":memory:"``), as a
    :class:`~llamakey.audit.writer.Backend`. ``busy_timeout_ms`` bounds how long a write waits
    for a lock held by someone else before the batch fails.

    Not thread-safe: use it from one thread (the writer's, or a test's own).
    """

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 2000) -> None:
        self.memory = str(path) == ":memory:"
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.name = f"database {self.path}"
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        # Committed begin rows not yet sealed, by id: their hash is computed from these values
        # and the finish values (exactly what SQLite stores) without reading back.
        self._begun: dict[str, dict[str, SqlValue]] = {}
        #: The chain head, kept outside the database (None for ``:memory:``).
        self.keeper: HeadKeeper | None = None if self.memory else HeadKeeper(self.path)

    # ---- Backend

    def open(self) -> None:
        try:
            if not self.memory:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.connection()
        except Exception as exc:
            raise self._failed(exc) from exc

    def write(self, ops: Sequence[Write]) -> None:
        inserted: dict[str, dict[str, SqlValue]] = {}
        head: tuple[int, str] | None = None
        try:
            conn = self.connection()
            with immediate(conn):
                for op in ops:
                    if isinstance(op, Begin):
                        self._insert(conn, op, inserted)
                    elif isinstance(op, Finish):
                        if head is None:
                            head = self.keeper.current(conn) if self.keeper else chain_head(conn)
                        head = self._seal(conn, op.request_id, op.end, head)
                    else:
                        self._store_bodies(conn, op)
        except Exception as exc:
            raise self._failed(exc) from exc
        if head is not None and self.keeper is not None:
            self.keeper.sealed(*head)
        self._begun.update(inserted)
        while len(self._begun) > _MAX_BEGUN:  # flows that never ended: forget the oldest
            del self._begun[next(iter(self._begun))]

    def prune_step(self, job: PruneJob, limit: int) -> bool:
        cutoff = format_ts(job.cutoff)
        try:
            conn = self.connection()
            with immediate(conn):
                if job.boundary is None:
                    job.boundary = int(
                        conn.execute(
                            "SELECT COALESCE("
                            "  (SELECT MIN(seq) FROM requests WHERE seq IS NOT NULL AND ts >= ?),"
                            "  (SELECT COALESCE(MAX(seq), 0) + 1 FROM requests))",
                            (cutoff,),
                        ).fetchone()[0]
                    )
                victims = conn.execute(
                    "SELECT id, seq, row_hash FROM requests WHERE seq < ? ORDER BY seq LIMIT ?",
                    (job.boundary, limit),
                ).fetchall()
                if not victims:
                    victims = conn.execute(
                        "SELECT id, seq, row_hash FROM requests"
                        " WHERE seq IS NULL AND ts < ? LIMIT ?",
                        (cutoff, limit),
                    ).fetchall()
                if victims:
                    ids = [v[0] for v in victims]
                    marks = ", ".join("?" for _ in ids)
                    conn.execute(f"DELETE FROM bodies WHERE request_id IN ({marks})", ids)
                    conn.execute(f"DELETE FROM requests WHERE id IN ({marks})", ids)
                    sealed = [v for v in victims if v[1] is not None]
                    if sealed:
                        # Remember where the surviving chain starts, so verify() can anchor it.
                        set_chain_base(conn, int(sealed[-1][1]), str(sealed[-1][2]))
                    more = True
                else:
                    orphans = conn.execute(
                        "DELETE FROM bodies WHERE rowid IN (SELECT rowid FROM bodies WHERE ts < ?"
                        " AND request_id NOT IN (SELECT id FROM requests) LIMIT ?)",
                        (cutoff, limit),
                    ).rowcount
                    more = orphans > 0
        except Exception as exc:
            raise self._failed(exc) from exc
        job.deleted += len(victims)
        return more

    def upkeep(self, *, flush: bool = False) -> float | None:
        return self.keeper.upkeep(flush=flush) if self.keeper else None

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.close()
        self._disconnect()

    # ---- the connection

    def connection(self) -> sqlite3.Connection:
        """The open connection, reopened if the file was removed or replaced since.

        Raises :class:`AuditUnavailable` if the file was made read-only: an already open
        connection would otherwise keep writing through its old file descriptor.
        """
        if self._conn is not None:
            if self.memory:
                return self._conn
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

    def configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings: busy timeout, WAL, ``synchronous=NORMAL``.

        Subclasses may extend this (the tests use it to cap the file size, simulating a full
        disk).
        """
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        if not self.memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditUnavailable(f"audit database {self.path} cannot use WAL mode ({mode})")
        # In WAL mode NORMAL is still crash-safe; only the last commits can roll back on power
        # loss.
        conn.execute("PRAGMA synchronous = NORMAL")

    def _open(self) -> sqlite3.Connection:
        """Create (0600) or open the file, configure the connection and migrate the schema."""
        if self.memory:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            try:
                self.configure(conn)
                ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            self.configure(conn)
            ensure_schema(conn)
            # A read transaction makes SQLite create -wal and -shm, so they can be chmod'ed now.
            conn.execute("SELECT 1 FROM requests LIMIT 1").fetchall()
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.path}{suffix}", _FILE_MODE)
            assert self.keeper is not None
            self.keeper.anchor(conn)
        except BaseException:
            conn.close()
            raise
        self._file_id = (st.st_dev, st.st_ino)
        return conn

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._file_id = None

    def _failed(self, exc: Exception) -> AuditUnavailable:
        """Describe a failed transaction; drop the connection so the next one reopens (an
        in-memory database is the connection, so it stays)."""
        if not self.memory:
            self._disconnect()
        return AuditUnavailable(_describe(self.path, exc))

    # ---- statements, inside the batch's transaction

    def _insert(
        self, conn: sqlite3.Connection, op: Begin, inserted: dict[str, dict[str, SqlValue]]
    ) -> None:
        values = op.row.sql_values()
        try:
            conn.execute(_insert_sql(tuple(values)), list(values.values()))
        except _ROW_ERRORS as exc:
            # A failed statement undoes only itself; the rest of the batch still commits.
            op.rejected = f"audit row {op.row.id!r} rejected: {exc}"
            return
        inserted[op.row.id] = values

    def _seal(
        self,
        conn: sqlite3.Connection,
        request_id: str,
        end: RequestEnd,
        head: tuple[int, str],
    ) -> tuple[int, str]:
        """Write the completion fields and append the row to the hash chain.

        ``head`` is the chain head as of the previous seal in this transaction. Returns the new
        head.
        """
        seq, prev_hash = head[0] + 1, head[1]
        completion = end.sql_values()
        begun = self._begun.pop(request_id, None)
        if begun is None:  # begun by an earlier writer (a restart): hash what SQLite holds
            return self._seal_stored_row(conn, request_id, completion, seq, prev_hash, head)
        digest = row_digest(prev_hash, {**begun, **completion})
        values: dict[str, SqlValue] = {
            **completion,
            "seq": seq,
            "prev_hash": prev_hash,
            "row_hash": digest,
        }
        try:
            # One statement: it fails or succeeds alone, and never touches a sealed row.
            sealed = conn.execute(_seal_sql(tuple(values)), [*values.values(), request_id]).rowcount
        except _ROW_ERRORS as exc:
            log.warning("audit: finish(%s) rejected: %s", request_id, exc)
            return head
        if not sealed:
            log.warning("audit: finish for unknown or sealed request %s ignored", request_id)
            return head
        return seq, digest

    def _seal_stored_row(
        self,
        conn: sqlite3.Connection,
        request_id: str,
        completion: dict[str, SqlValue],
        seq: int,
        prev_hash: str,
        head: tuple[int, str],
    ) -> tuple[int, str]:
        """Seal a row whose begin values this backend does not hold, hashing it as stored."""
        found = conn.execute('SELECT "seq" FROM requests WHERE id = ?', (request_id,)).fetchone()
        if found is None:
            log.warning("audit: finish for unknown request %s ignored", request_id)
            return head
        if found[0] is not None:
            log.warning("audit: request %s is already sealed; finish ignored", request_id)
            return head
        values: dict[str, SqlValue] = {**completion, "seq": seq, "prev_hash": prev_hash}
        conn.execute("SAVEPOINT seal")
        try:
            conn.execute(
                "UPDATE requests SET {} WHERE id = ?".format(
                    ", ".join(f"{_quote(c)} = ?" for c in values)
                ),
                [*values.values(), request_id],
            )
            cursor = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,))
            names = [d[0] for d in cursor.description]
            digest = row_digest(prev_hash, dict(zip(names, cursor.fetchone(), strict=True)))
            conn.execute("UPDATE requests SET row_hash = ? WHERE id = ?", (digest, request_id))
        except _ROW_ERRORS as exc:
            conn.execute("ROLLBACK TO seal")
            conn.execute("RELEASE seal")
            log.warning("audit: finish(%s) rejected: %s", request_id, exc)
            return head
        conn.execute("RELEASE seal")
        return seq, digest

    def _store_bodies(self, conn: sqlite3.Connection, op: Bodies) -> None:
        try:
            conn.execute(
                "INSERT OR REPLACE INTO bodies (request_id, ts, request_body, response_body) "
                "VALUES (?, ?, ?, ?)",
                (op.request_id, format_ts(op.ts), op.request_body, op.response_body),
            )
        except _ROW_ERRORS as exc:
            log.warning("audit: bodies(%s) rejected: %s", op.request_id, exc)


class AuditWriter(BatchWriter):
    """The audit sink the proxy runs: a :class:`~llamakey.audit.writer.BatchWriter` over a
    :class:`SQLiteBackend` at ``path``. See both for the parameters."""

    def __init__(
        self,
        path: Path | str,
        *,
        group_commit_ms: float = 2.0,
        log_bodies: bool = False,
        busy_timeout_ms: int = 2000,
        max_batch: int = 1000,
        prune_batch: int = 500,
    ) -> None:
        backend = SQLiteBackend(path, busy_timeout_ms=busy_timeout_ms)
        super().__init__(
            backend,
            group_commit_ms=group_commit_ms,
            log_bodies=log_bodies,
            max_batch=max_batch,
            prune_batch=prune_batch,
        )
        self.path = backend.path
