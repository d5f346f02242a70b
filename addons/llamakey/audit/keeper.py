"""The chain head of one audit database, kept outside it (see :mod:`llamakey.audit.anchor`).

A :class:`HeadKeeper` belongs to one SQLite backend and runs on its thread: it checks the
database against its head file when the file is opened and against the last seal before each
sealing transaction, writes the head file (at most every ``head_file_interval_s`` under load)
and logs the head now and then. What it finds missing is logged as an ERROR, the old head file
is set aside as evidence, and a new head starts.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from llamakey.audit.anchor import (
    HEAD_FILE_INTERVAL_S,
    HEAD_LOG_INTERVAL_S,
    Head,
    HeadUnreadable,
    anchor_problem,
    database_id,
    head_log,
    head_path,
    read_head,
    set_aside,
    write_head,
)
from llamakey.audit.chain import chain_head
from llamakey.audit.rows import format_ts
from llamakey.audit.schema import DATABASE_ID_KEY, immediate

__all__ = ["HeadKeeper"]

log = logging.getLogger("llamakey.audit.sqlite")

_HEAD_RETRY_S: Final = 1.0  # a head file that could not be written is tried again after this


class HeadKeeper:
    """The head of the database at ``path``, its head file and its log lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_file = head_path(path)
        self.head_log_interval_s = HEAD_LOG_INTERVAL_S
        self.head_file_interval_s = HEAD_FILE_INTERVAL_S
        # The head of the open database as this keeper knows it (None: none open yet), and
        # what of it was last written to the head file and last logged.
        self._head: Head | None = None
        self._head_written: Head | None = None
        self._head_logged: Head | None = None
        self._logged_at = float("-inf")
        self._head_due = float("-inf")  # time.monotonic() the head file may next be written
        self._head_error: str | None = None  # the last failure to write the head file
        self._keep_head_file = False  # True: the head file is evidence we could not set aside
        self._suspect: str | None = None  # the database lost what this keeper sealed

    def sealed(self, seq: int, row_hash: str) -> None:
        """A sealing transaction committed: the head moved to ``(seq, row_hash)``."""
        if self._head is not None:
            self._head = Head(self._head.database_id, seq, row_hash)

    def upkeep(self, *, flush: bool = False) -> float | None:
        """Report a lost head, write the head file if the head moved (at once when ``flush``,
        else at most every ``head_file_interval_s``), log the head when that is due; the
        seconds until more is due, or None."""
        if self._head is None:
            return None
        if self._suspect is not None:
            self._mismatch(self._suspect)
            self._suspect = None
        waits: list[float] = []
        if self._pending():
            if flush or self._head_due <= time.monotonic():
                self._write()
            if self._pending():  # not due yet, or failed: try again then
                waits.append(self._head_due - time.monotonic())
        if self._head != self._head_logged:
            due = self._logged_at + self.head_log_interval_s - time.monotonic()
            if due <= 0:
                self._log()
            else:
                waits.append(due)
        return min(waits) if waits else None

    def close(self) -> None:
        """The database closes: report, write and log what is still due."""
        if self._head is None:
            return
        if self._suspect is not None:
            self._mismatch(self._suspect)
            self._suspect = None
        if self._pending():
            self._write()
        if self._head != self._head_logged:
            self._log()

    def anchor(self, conn: sqlite3.Connection) -> None:
        """On opening a file: check the database against its head file, and start this
        backend's head from the database. A mismatch is logged and the head file set aside."""
        assert self.head_file is not None
        problem: str | None = None
        try:
            recorded = read_head(self.head_file)
        except HeadUnreadable as exc:
            recorded, problem = None, f"its head file is not a usable head file: {exc}"
        conn.execute("BEGIN")  # one snapshot for the check and the head
        try:
            own_id = database_id(conn)
            seq, row_hash = chain_head(conn)
            if recorded is not None:
                problem = anchor_problem(conn, recorded)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")  # a read transaction: nothing to keep or undo
        if own_id is None:  # its audit_meta row was removed: give it an identity again
            with immediate(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO audit_meta (key, value) VALUES (?, ?)",
                    (DATABASE_ID_KEY, secrets.token_hex(16)),
                )
                own_id = database_id(conn)
            log.warning("audit: database %s had no id; it was given %s", self.path, own_id)
            assert own_id is not None
        self._head = Head(own_id, seq, row_hash)
        self._keep_head_file = False
        if problem is not None:
            self._mismatch(problem)
        elif recorded is None and seq > 0:
            log.warning(
                "audit: no head file %s although database %s has sealed rows up to seq %d: it"
                " was deleted, or the database predates head files; a new head starts",
                self.head_file,
                self.path,
                seq,
            )
        if self._pending():
            self._write()
        if self._head != self._head_logged:
            self._log()

    def _pending(self) -> bool:
        """Whether the head file is behind the head (and is ours to write)."""
        return (
            self._head is not None
            and self.head_file is not None
            and not self._keep_head_file
            and self._head != self._head_written
        )

    def current(self, conn: sqlite3.Connection) -> tuple[int, str]:
        """The chain head in the database, inside a sealing transaction. If it is not what this
        backend last sealed (or opened with), and the database no longer holds that, the
        problem is kept for :meth:`upkeep` to report."""
        head = chain_head(conn)
        mine = self._head
        if mine is not None and head != (mine.seq, mine.row_hash):
            # Another writer on the same file moves the head on, leaving ours in place.
            problem = anchor_problem(conn, mine, source="the proxy's last seal")
            if problem is not None:
                self._suspect = problem
        return head

    def _mismatch(self, problem: str) -> None:
        """Report that the database lacks what the head file (or our last seal) names, and set
        the head file aside so that a new head does not overwrite the evidence."""
        assert self.head_file is not None
        kept = ""
        try:
            if self.head_file.exists() or self.head_file.is_symlink():
                kept = f"; its head file was kept as {set_aside(self.head_file).name}"
        except OSError as exc:
            # Keep it where it is, rather than overwrite it.
            self._keep_head_file = True
            kept = f"; its head file could not be set aside ({exc.strerror or exc}) and is kept"
        self._head_written = None
        log.error(
            "audit: database %s does not hold its recorded head: %s%s; a new head starts",
            self.path,
            problem,
            kept,
        )

    def _write(self) -> bool:
        """Write the head file; on failure log it (once per reason) and return False."""
        head, file = self._head, self.head_file
        if head is None or file is None or self._keep_head_file:
            return False
        stamped = Head(head.database_id, head.seq, head.row_hash, format_ts(datetime.now(UTC)))
        try:
            write_head(file, stamped)
        except OSError as exc:
            self._head_due = time.monotonic() + _HEAD_RETRY_S
            reason = f"audit: head file {file} cannot be written: {exc.strerror or exc}"
            if reason != self._head_error:
                log.error("%s", reason)
            self._head_error = reason
            return False
        self._head_due = time.monotonic() + self.head_file_interval_s
        if self._head_error is not None:
            log.warning("audit: head file %s is written again", file)
        self._head_error = None
        self._head_written = head
        return True

    def _log(self) -> None:
        head = self._head
        if head is None:
            return
        head_log.info(
            "audit: head of database %s (id %s): seq %d, row_hash %s",
            self.path,
            head.database_id,
            head.seq,
            head.row_hash,
        )
        self._head_logged = head
        self._logged_at = time.monotonic()
