"""Counters in a SQLite file, shared by the proxy processes (workers) of one machine.

Each admission is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock first,
then reads the counter, compares it with the limit and adds, so two processes can never both
pass a check. The file is in WAL mode (readers never wait for the writer) with a busy timeout:
a process that cannot get the lock within it gets `StoreUnavailable`, never a guess.

SQLite calls block, so they run on one worker thread per store (its own connection), never on
the event loop. Counters are integers in millionths (`MICRO`), as in every store. Windows that
have ended are deleted at most once per `PRUNE_EVERY` seconds, inside a write transaction the
store takes anyway.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from llamakey.store.counters import (
    Admission,
    StoreUnavailable,
    Window,
    from_micros,
    to_micros,
)

PRUNE_EVERY = 60.0
"""Seconds between two deletions of ended windows (per store object)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL,
    window INTEGER NOT NULL,   -- seconds
    start INTEGER NOT NULL,    -- epoch second the window began
    total INTEGER NOT NULL,    -- millionths of a unit
    PRIMARY KEY (key, window, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_end ON counters (start + window);
"""

T = TypeVar("T")


class SQLiteCounterStore:
    """`CounterStore` on a SQLite file that several processes may open at once."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        """`readonly`: only `total` (``lmk status`` beside a running proxy): the file is opened
        ``mode=ro``, never created, and a missing file holds no counts yet."""
        self._path = Path(path)
        self._readonly = readonly
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmk-counters")
        self._connection: sqlite3.Connection | None = None  # used on the worker thread only
        self._last_prune = float("-inf")

    # -- on the worker thread ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None and self._readonly:
            self._connection = sqlite3.connect(
                self._path.resolve().as_uri() + "?mode=ro",
                uri=True,
                timeout=self._busy_timeout,
                check_same_thread=False,
            )
        if self._connection is None:
            connection = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we say BEGIN ourselves
                check_same_thread=False,  # made and used on the one worker thread
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _transaction(self, key: str, amount: int, limit: int | None, window: Window) -> Admission:
        now = self._clock()
        start = window.start(now)
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT total FROM counters WHERE key = ? AND window = ? AND start = ?",
                (key, window.seconds, start),
            ).fetchone()
            current = int(row[0]) if row is not None else 0
            if limit is not None and current + amount > limit:
                db.execute("ROLLBACK")
                return Admission(False, from_micros(current), window.resets_in(now))
            db.execute(
                "INSERT INTO counters (key, window, start, total) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, window, start) DO UPDATE SET total = total + excluded.total",
                (key, window.seconds, start, amount),
            )
            if now - self._last_prune >= PRUNE_EVERY:
                db.execute("DELETE FROM counters WHERE start + window < ?", (int(now),))
                self._last_prune = now
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return Admission(True, from_micros(current + amount), 0.0)

    def _read(self, key: str, window: Window) -> float:
        if self._readonly and not self._path.exists():
            return 0.0  # the proxy has not counted anything yet
        row = (
            self._connect()
            .execute(
                "SELECT total FROM counters WHERE key = ? AND window = ? AND start = ?",
                (key, window.seconds, window.start(self._clock())),
            )
            .fetchone()
        )
        return from_micros(int(row[0])) if row is not None else 0.0

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- on the event loop ---------------------------------------------------------------

    async def _off_loop(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as error:  # locked beyond the busy timeout, I/O error, unreadable
            raise StoreUnavailable(f"SQLite counters at {self._path}: {error}") from error

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        micros, limit_micros = to_micros(amount), to_micros(limit)
        return await self._off_loop(lambda: self._transaction(key, micros, limit_micros, window))

    async def add(self, key: str, amount: float, window: Window) -> float:
        micros = to_micros(amount)
        admission = await self._off_loop(lambda: self._transaction(key, micros, None, window))
        return admission.total

    async def total(self, key: str, window: Window) -> float:
        return await self._off_loop(lambda: self._read(key, window))

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)  # idle by now; its thread ends by itself
