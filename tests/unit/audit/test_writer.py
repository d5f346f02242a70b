"""The batching writer: write-ahead, group commit, and failures (locked, full disk, removed,
read-only) that fail the requests of the moment and heal by themselves. Most tests run it over
the real SQLite backend; the last ones over a scripted backend, since the engine knows nothing
of SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest

from llamakey.audit import (
    SCHEMA_VERSION,
    AuditSink,
    AuditUnavailable,
    AuditWriter,
    BatchWriter,
    SQLiteBackend,
    verify,
)
from llamakey.audit.backend import Begin, Finish, PruneJob, Write
from tests.unit.audit.helpers import done, full_row, query, row, write_sealed


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_the_writer_is_an_audit_sink(db_path: Path) -> None:
    sink: AuditSink = AuditWriter(db_path)  # checked by mypy
    assert not sink.log_bodies


# --------------------------------------------------------------------------- write-ahead


def test_begin_resolves_only_once_committed(db_path: Path) -> None:
    w = AuditWriter(db_path, busy_timeout_ms=10_000)
    w.start()
    try:
        # Hold the write lock so the writer cannot commit yet.
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        pending = w.begin(row("r1"))
        with pytest.raises(FutureTimeout):
            pending.result(0.3)  # still waiting for the lock
        assert query(db_path, "SELECT id FROM requests") == []
        blocker.execute("COMMIT")
        blocker.close()
        pending.result(10)
        assert query(db_path, "SELECT id FROM requests") == [("r1",)]

        for i in range(10):
            w.begin(row(f"n{i}")).result(5)
            assert query(db_path, "SELECT id FROM requests WHERE id = ?", (f"n{i}",)) == [
                (f"n{i}",)
            ]
    finally:
        w.close()


def test_concurrent_begins_share_commits(db_path: Path) -> None:
    w = AuditWriter(db_path, group_commit_ms=5.0)
    w.start()
    try:
        before = w.commits
        barrier = threading.Barrier(200)
        futures: list[Future[None]] = []
        lock = threading.Lock()

        def submit(i: int) -> None:
            barrier.wait()
            fut = w.begin(row(f"r{i}"))
            with lock:
                futures.append(fut)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fut in futures:
            fut.result(10)
        commits = w.commits - before
        assert query(db_path, "SELECT COUNT(*) FROM requests") == [(200,)]
        # One commit per row would be 200.
        assert 1 <= commits <= 40, commits
    finally:
        w.close()


async def test_begin_awaited_from_asyncio(writer: AuditWriter, db_path: Path) -> None:
    before = writer.commits
    await asyncio.gather(*(asyncio.wrap_future(writer.begin(row(f"a{i}"))) for i in range(50)))
    assert query(db_path, "SELECT COUNT(*) FROM requests") == [(50,)]
    assert writer.commits - before < 50


def test_begin_rejects_a_duplicate_id_without_leaking_values(writer: AuditWriter) -> None:
    writer.begin(row("dup", user="s3cr3t")).result(5)
    with pytest.raises(AuditUnavailable, match="'dup' rejected") as excinfo:
        writer.begin(row("dup", user="s3cr3t")).result(5)
    assert "s3cr3t" not in str(excinfo.value)
    writer.begin(row("after")).result(5)  # the database itself is fine


def test_finish_never_raises_and_ignores_what_it_cannot_apply(
    writer: AuditWriter, db_path: Path
) -> None:
    writer.begin(row("r1")).result(5)
    writer.finish("unknown", done(status=200))
    writer.finish("r1", done(status=201))
    writer.finish("r1", done(status=500))  # already sealed: ignored
    writer.flush()
    r1 = full_row(db_path, "r1")
    assert (r1["status"], r1["cost_usd"], r1["seq"]) == (201, None, 1)
    writer.begin(row("r2")).result(5)  # the database itself is fine
    assert verify(db_path).ok


def test_close_flushes_queued_work(db_path: Path) -> None:
    w = AuditWriter(db_path, group_commit_ms=50)
    w.start()
    w.begin(row("r1")).result(5)
    w.finish("r1", done(status=200))
    w.close()
    assert full_row(db_path, "r1")["seq"] == 1
    with pytest.raises(AuditUnavailable, match="not running"):
        w.begin(row("r2")).result(1)


# --------------------------------------------------------------------------- failures


def test_locked_database_fails_then_recovers(
    writer: AuditWriter, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer.begin(row("r1")).result(5)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer.finish("r1", done(status=200))  # held back and retried once the lock is gone
    with caplog.at_level(logging.WARNING, logger="llamakey.audit"):
        for attempt in ("r2", "r2b"):
            with pytest.raises(AuditUnavailable) as excinfo:
                writer.begin(row(attempt, user="alice-s3cr3t")).result(5)
            assert "locked" in str(excinfo.value)
            assert "s3cr3t" not in str(excinfo.value)
        blocker.execute("COMMIT")
        blocker.close()

        writer.begin(row("r3")).result(5)
        writer.flush()
    assert query(db_path, "SELECT id, status, seq FROM requests ORDER BY id") == [
        ("r1", 200, 1),
        ("r3", None, None),
    ]
    assert verify(db_path).ok
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not writable" in m for m in messages) == 1, messages  # once, not per batch
    assert any("writable again" in m for m in messages), messages


class CappedBackend(SQLiteBackend):
    """Caps the file at its current size while ``full`` is set: a full disk, on demand."""

    full = False

    def configure(self, conn: sqlite3.Connection) -> None:
        super().configure(conn)
        if self.full:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")


def test_full_disk_fails_then_recovers(db_path: Path) -> None:
    first = AuditWriter(db_path)
    first.start()  # create the schema while there is room
    first.close()
    backend = CappedBackend(db_path, busy_timeout_ms=100)
    backend.full = True
    w = BatchWriter(backend)
    w.start()
    try:
        with pytest.raises(AuditUnavailable, match="full"):
            w.begin(row("big", path="/" + "x" * 50_000)).result(5)
        backend.full = False  # space freed
        w.begin(row("after")).result(5)
        assert query(db_path, "SELECT id FROM requests") == [("after",)]
    finally:
        w.close()


def test_removed_directory_fails_then_recovers(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    shutil.rmtree(db_path.parent)
    with pytest.raises(AuditUnavailable, match="not writable"):
        writer.begin(row("r2")).result(5)

    db_path.parent.mkdir()
    writer.begin(row("r3")).result(5)
    assert query(db_path, "SELECT id FROM requests") == [("r3",)]
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_removed_file_is_recreated(writer: AuditWriter, db_path: Path) -> None:
    write_sealed(writer, "r1")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    writer.begin(row("r2")).result(5)
    assert query(db_path, "SELECT id FROM requests") == [("r2",)]
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_fails_then_recovers(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    os.chmod(db_path, 0o400)
    try:
        with pytest.raises(AuditUnavailable, match="read-only"):
            writer.begin(row("r2")).result(5)
    finally:
        os.chmod(db_path, 0o600)
    writer.begin(row("r3")).result(5)


# --------------------------------------------------------------------------- any backend


class ScriptedBackend:
    """A backend that keeps rows in a dict and fails while ``down`` says why."""

    name = "scripted store"

    def __init__(self) -> None:
        self.down: Exception | None = None
        self.rows: dict[str, list[object]] = {}
        self.transactions: list[int] = []
        self.upkeeps = 0
        self.wake_in: float | None = None

    def open(self) -> None:
        if self.down is not None:
            raise self.down

    def write(self, ops: Sequence[Write]) -> None:
        if self.down is not None:
            raise self.down
        for op in ops:
            if isinstance(op, Begin):
                self.rows[op.row.id] = [op.row]
            elif isinstance(op, Finish):
                self.rows[op.request_id].append(op.end)
        self.transactions.append(len(ops))

    def prune_step(self, job: PruneJob, limit: int) -> bool:
        job.deleted += 1
        return job.deleted < 3

    def upkeep(self, *, flush: bool = False) -> float | None:
        self.upkeeps += 1
        return self.wake_in

    def close(self) -> None:
        pass


def test_the_engine_drives_any_backend_and_retries_completions() -> None:
    backend = ScriptedBackend()
    w = BatchWriter(backend, group_commit_ms=0)
    w.start()
    try:
        w.begin(row("r1")).result(5)
        backend.down = AuditUnavailable("scripted store is down")
        w.finish("r1", done(status=200))  # fails with its batch: kept for a retry
        with pytest.raises(AuditUnavailable, match="scripted store is down"):
            w.begin(row("r2")).result(5)
        assert len(backend.rows["r1"]) == 1
        backend.down = None
        wait_for(lambda: len(backend.rows["r1"]) == 2)  # retried within about a second
        assert w.prune(0).result(5) == 3  # three steps, each its own transaction
    finally:
        w.close()


def test_a_backend_bug_fails_the_batch_not_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    backend = ScriptedBackend()
    w = BatchWriter(backend)
    w.start()
    try:
        backend.down = KeyError("not an AuditUnavailable")
        with (
            caplog.at_level(logging.ERROR, logger="llamakey.audit"),
            pytest.raises(AuditUnavailable, match="scripted store failed: KeyError"),
        ):
            w.begin(row("r1")).result(5)
        assert any(r.exc_info for r in caplog.records)  # logged with its traceback
        backend.down = None
        w.begin(row("r2")).result(5)
    finally:
        w.close()


def test_start_fails_when_the_backend_cannot_open() -> None:
    backend = ScriptedBackend()
    backend.down = AuditUnavailable("scripted store cannot open")
    w = BatchWriter(backend)
    with pytest.raises(AuditUnavailable, match="cannot open"):
        w.start()
    with pytest.raises(AuditUnavailable, match="not running"):
        w.begin(row("r1")).result(1)


def test_upkeep_follows_each_batch_and_wakes_the_idle_writer() -> None:
    backend = ScriptedBackend()
    w = BatchWriter(backend, group_commit_ms=0)
    w.start()
    try:
        w.flush()  # a flush waits for the upkeep after the work before it
        after_open = backend.upkeeps
        assert after_open >= 1
        w.begin(row("r1")).result(5)
        w.flush()
        assert backend.upkeeps > after_open
        backend.wake_in = 0.01  # the backend asks to be woken with nothing queued
        w.flush()
        settled = backend.upkeeps
        wait_for(lambda: backend.upkeeps >= settled + 3)
        backend.wake_in = None
        w.flush()
        assert w._upkeep_at is None  # set before the flush resolved: no more wake-ups
    finally:
        w.close()


def test_an_upkeep_that_raises_is_logged_and_the_writer_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ScriptedBackend()

    def broken(*, flush: bool = False) -> float | None:
        raise OSError("upkeep broke")

    monkeypatch.setattr(backend, "upkeep", broken)
    w = BatchWriter(backend)
    w.start()
    try:
        w.begin(row("r1")).result(5)
        assert any("upkeep of scripted store failed" in r.getMessage() for r in caplog.records)
        w.begin(row("r2")).result(5)
    finally:
        w.close()
