"""Tests for llamakey.auditdb: schema, write-ahead + group commit, the hash chain, failure
recovery, usage reports and pruning. Every check reads the database through a separate sqlite3
connection, the way an admin would."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llamakey.audit import (
    GENESIS_HASH,
    REPORT_COLUMNS,
    REQUEST_COLUMNS,
    SCHEMA_VERSION,
    AuditUnavailable,
    AuditWriter,
    format_report,
    format_ts,
    parse_since,
    row_digest,
    usage_report,
    verify,
)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def row(request_id: str, **fields: object) -> dict[str, object]:
    """A typical begin() row; keyword arguments override or add columns."""
    base: dict[str, object] = {
        "id": request_id,
        "user": "alice",
        "groups": ["eng"],
        "client_addr": "10.0.0.7",
        "provider": "openai",
        "host": "api.openai.com",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "gpt-4o",
        "stream": True,
        "request_bytes": 321,
    }
    base.update(fields)
    return base


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Run ``sql`` on a fresh connection, as an admin's sqlite3 shell would."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(sql, params)


def full_row(path: Path, request_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        assert found is not None, request_id
        return dict(found)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.db"


@pytest.fixture
def writer(db_path: Path) -> Iterator[AuditWriter]:
    w = AuditWriter(db_path, group_commit_ms=1.0, busy_timeout_ms=100)
    w.start()
    yield w
    w.close()


def write_sealed(w: AuditWriter, request_id: str, **fields: object) -> None:
    """begin + finish one row and wait until both are committed."""
    w.begin(row(request_id, **fields)).result(5)
    w.finish(request_id, {"status": 200, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.01})
    w.flush()


# --------------------------------------------------------------------------- schema and files


def test_schema_tables_columns_and_indexes(writer: AuditWriter, db_path: Path) -> None:
    tables = {
        name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"requests", "bodies", "audit_meta"} <= tables

    info = query(db_path, "PRAGMA table_info(requests)")
    assert [(c[1], c[2]) for c in info] == list(REQUEST_COLUMNS.items())
    assert [c[1] for c in info if c[5]] == ["id"]  # primary key
    assert [c[1] for c in query(db_path, "PRAGMA table_info(bodies)")] == [
        "request_id",
        "ts",
        "request_body",
        "response_body",
    ]

    def indexed(table: str) -> set[tuple[str, ...]]:
        out = set()
        for index in query(db_path, f"PRAGMA index_list({table})"):
            cols = query(db_path, f"PRAGMA index_info('{index[1]}')")
            out.add(tuple(c[2] for c in sorted(cols)))
        return out

    assert {("ts",), ("user", "ts"), ("provider", "ts"), ("seq",)} <= indexed("requests")
    assert ("ts",) in indexed("bodies")
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_reopen_keeps_rows_and_refuses_a_newer_schema(writer: AuditWriter, db_path: Path) -> None:
    write_sealed(writer, "r1")
    writer.close()

    again = AuditWriter(db_path)
    again.start()
    write_sealed(again, "r2")
    again.close()
    assert query(db_path, "SELECT id, seq FROM requests ORDER BY seq") == [("r1", 1), ("r2", 2)]
    assert verify(db_path).ok

    execute(db_path, "PRAGMA user_version = 99")
    future = AuditWriter(db_path)
    with pytest.raises(AuditUnavailable, match="newer"):
        future.start()
    assert not future.healthy


def test_start_fails_cleanly_when_path_is_impossible(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    w = AuditWriter(blocker / "audit.db")
    assert not w.healthy
    with pytest.raises(AuditUnavailable, match="not-a-dir"):
        w.start()
    assert not w.healthy
    with pytest.raises(AuditUnavailable, match="not running"):
        w.begin(row("r1")).result(1)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_files_are_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "audit.db"
    old = os.umask(umask)
    try:
        w = AuditWriter(path)
        w.start()
        write_sealed(w, "r1")
        for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        w.close()
    finally:
        os.umask(old)


def test_loose_permissions_are_tightened_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    w = AuditWriter(path)
    w.start()
    w.close()
    os.chmod(path, 0o644)
    w = AuditWriter(path)
    w.start()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    w.close()


# --------------------------------------------------------------------------- write-ahead


def test_begin_resolves_only_once_committed(db_path: Path) -> None:
    w = AuditWriter(db_path, busy_timeout_ms=10_000)
    w.start()
    try:
        # Hold the write lock so the writer cannot commit yet.
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        pending = w.begin(row("r1"))
        time.sleep(0.3)
        assert not pending.done()
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


def test_begin_rejects_bad_rows_without_leaking_values(writer: AuditWriter) -> None:
    writer.begin(row("dup")).result(5)
    bad = [
        row("x1", nonexistent="s3cr3t"),
        row("x2", stream="s3cr3t"),
        row("x3", cost_usd=float("nan")),
        row("x4", seq=7),
        row("x5", completed_ts=datetime.now(UTC)),
        row("x6", groups="s3cr3t"),
        {"user": "no id"},
        row("dup"),
    ]
    for candidate in bad:
        with pytest.raises(AuditUnavailable) as excinfo:
            writer.begin(candidate).result(5)
        assert "s3cr3t" not in str(excinfo.value)
    assert writer.healthy  # the database itself is fine


def test_path_query_and_fragment_are_never_stored(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(
        row("g1", path="/v1beta/models/gemini:generateContent?key=AIzaTOPSECRET&alt=sse")
    ).result(5)
    writer.begin(row("g2", path="/v1/x#AIzaTOPSECRET")).result(5)
    assert query(db_path, "SELECT path FROM requests ORDER BY id") == [
        ("/v1beta/models/gemini:generateContent",),
        ("/v1/x",),
    ]
    for name in ("audit.db", "audit.db-wal"):
        assert b"AIzaTOPSECRET" not in (db_path.parent / name).read_bytes()


def test_values_are_normalised(writer: AuditWriter, db_path: Path) -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    writer.begin(row("t1", ts=moment, groups=("ml", "eng"), stream=False)).result(5)
    writer.begin(row("t2", ts="2025-01-02T04:04:05+01:00", groups=frozenset({"b", "a"}))).result(5)
    writer.begin({"id": "t3"}).result(5)
    rows = query(db_path, 'SELECT id, ts, "groups", stream FROM requests ORDER BY id')
    assert rows[0] == ("t1", "2025-01-02T03:04:05.678Z", '["ml", "eng"]', 0)
    assert rows[1] == ("t2", "2025-01-02T03:04:05.000Z", '["a", "b"]', 1)
    assert TS_RE.match(rows[2][1])
    assert format_ts(datetime(2025, 1, 2)) == "2025-01-02T00:00:00.000Z"


# --------------------------------------------------------------------------- finish and chain


def test_finish_fills_fields_and_seals_in_completion_order(
    writer: AuditWriter, db_path: Path
) -> None:
    writer.begin(row("r1")).result(5)
    writer.begin(row("r2", stream=False)).result(5)
    done = {
        "status": 200,
        "latency_ms": 812,  # an int for a REAL column is stored as a float
        "ttfb_ms": 95.5,
        "response_bytes": 4096,
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
        "reasoning_tokens": 64,
        "cost_usd": 0.0123,
        "provider_cost_usd": 0.0125,
        "response_model": "gpt-4o-2024-08-06",
        "finish_reason": "stop",
        "client_disconnected": False,
    }
    writer.finish("r2", {"status": 200})
    writer.finish("r1", done)
    writer.flush()

    r1, r2 = full_row(db_path, "r1"), full_row(db_path, "r2")
    for key, value in done.items():
        assert r1[key] == value, key
    assert isinstance(r1["latency_ms"], float)
    assert TS_RE.match(r1["completed_ts"])
    # Chained by completion: r2 finished first.
    assert (r2["seq"], r2["prev_hash"]) == (1, GENESIS_HASH)
    assert (r1["seq"], r1["prev_hash"]) == (2, r2["row_hash"])
    assert r1["row_hash"] == row_digest(r1["prev_hash"], r1)
    assert r2["row_hash"] == row_digest(GENESIS_HASH, r2)
    assert verify(db_path).ok


def test_finish_never_raises_and_skips_bad_input(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    writer.finish("unknown", {"status": 200})
    writer.finish("r1", {"nonexistent": 1, "cost_usd": "free", "status": 201, "seq": 99})
    writer.finish("r1", {"status": 500})  # already sealed: ignored
    writer.flush()
    r1 = full_row(db_path, "r1")
    assert (r1["status"], r1["cost_usd"], r1["seq"]) == (201, None, 1)
    assert writer.healthy
    assert verify(db_path).ok


def test_bodies_only_when_enabled(tmp_path: Path) -> None:
    on = AuditWriter(tmp_path / "on.db", log_bodies=True)
    off = AuditWriter(tmp_path / "off.db")
    for w in (on, off):
        w.start()
        w.begin(row("r1")).result(5)
        w.bodies("r1", '{"messages": []}', '{"choices": []}')
        w.close()
    assert query(
        tmp_path / "on.db", "SELECT request_id, request_body, response_body FROM bodies"
    ) == [("r1", '{"messages": []}', '{"choices": []}')]
    assert query(tmp_path / "off.db", "SELECT COUNT(*) FROM bodies") == [(0,)]


def test_close_flushes_queued_work(db_path: Path) -> None:
    w = AuditWriter(db_path, group_commit_ms=50)
    w.start()
    w.begin(row("r1")).result(5)
    w.finish("r1", {"status": 200})
    w.close()
    assert full_row(db_path, "r1")["seq"] == 1
    with pytest.raises(AuditUnavailable):
        w.begin(row("r2")).result(1)
    assert not w.healthy


# --------------------------------------------------------------------------- verify


@pytest.fixture
def sealed_db(db_path: Path) -> Path:
    """Five sealed rows r1..r5 and one unfinished row, writer closed."""
    w = AuditWriter(db_path)
    w.start()
    for i in range(1, 6):
        write_sealed(w, f"r{i}", user=f"user{i}")
    w.begin(row("inflight")).result(5)
    w.close()
    return db_path


def test_verify_untouched(sealed_db: Path) -> None:
    result = verify(sealed_db)
    assert (result.ok, result.rows_checked, result.first_bad_id, result.problem) == (
        True,
        5,
        None,
        None,
    )
    assert result.unfinished == 1
    assert result.head_hash == full_row(sealed_db, "r5")["row_hash"]


def test_verify_names_an_altered_row(sealed_db: Path) -> None:
    execute(sealed_db, "UPDATE requests SET cost_usd = 0 WHERE id = 'r3'")
    result = verify(sealed_db)
    assert (result.ok, result.first_bad_id, result.problem) == (False, "r3", "altered")
    assert result.rows_checked == 3


def test_verify_notices_a_value_set_to_null(sealed_db: Path) -> None:
    execute(sealed_db, "UPDATE requests SET user = NULL WHERE id = 'r2'")
    assert (verify(sealed_db).first_bad_id, verify(sealed_db).problem) == ("r2", "altered")


@pytest.mark.parametrize(("victim", "blamed"), [("r3", "r4"), ("r1", "r2")])
def test_verify_names_the_row_after_a_deleted_one(
    sealed_db: Path, victim: str, blamed: str
) -> None:
    execute(sealed_db, "DELETE FROM requests WHERE id = ?", (victim,))
    result = verify(sealed_db)
    assert (result.ok, result.first_bad_id, result.problem) == (False, blamed, "deleted")


def test_verify_names_a_forged_row_appended(sealed_db: Path) -> None:
    execute(
        sealed_db,
        "INSERT INTO requests (id, ts, user, cost_usd, seq, prev_hash, row_hash)"
        " VALUES ('forged', '2030-01-01T00:00:00.000Z', 'mallory', 0, 6, ?, ?)",
        ("ab" * 32, "cd" * 32),
    )
    result = verify(sealed_db)
    assert (result.ok, result.first_bad_id, result.problem) == (False, "forged", "inserted")


def test_verify_names_a_copied_row(sealed_db: Path) -> None:
    columns = ", ".join(f'"{c}"' for c in REQUEST_COLUMNS if c not in ("id", "seq"))
    execute(
        sealed_db,
        f"INSERT INTO requests (id, seq, {columns}) SELECT 'copy', 6, {columns}"
        " FROM requests WHERE id = 'r5'",
    )
    result = verify(sealed_db)
    assert (result.first_bad_id, result.problem) == ("copy", "inserted")


def test_verify_names_a_row_slipped_in_with_a_valid_hash(sealed_db: Path) -> None:
    # Make room at seq 3, then insert a row that links correctly to r2 and hashes correctly.
    for i in (5, 4, 3):
        execute(sealed_db, "UPDATE requests SET seq = ? WHERE id = ?", (i + 1, f"r{i}"))
    forged = {"id": "forged", "ts": "2025-01-01T00:00:00.000Z", "user": "mallory"}
    prev_hash = full_row(sealed_db, "r2")["row_hash"]
    execute(
        sealed_db,
        "INSERT INTO requests (id, ts, user, seq, prev_hash, row_hash) VALUES (?, ?, ?, 3, ?, ?)",
        (*forged.values(), prev_hash, row_digest(prev_hash, forged)),
    )
    result = verify(sealed_db)
    assert (result.first_bad_id, result.problem) == ("forged", "inserted")


def test_verify_flags_an_unsealed_row_claiming_completion(sealed_db: Path) -> None:
    execute(
        sealed_db,
        "INSERT INTO requests (id, ts, user, cost_usd, completed_ts)"
        " VALUES ('ghost', '2025-01-01T00:00:00.000Z', 'mallory', 0, '2025-01-01T00:00:01.000Z')",
    )
    result = verify(sealed_db)
    assert (result.ok, result.first_bad_id, result.problem) == (False, "ghost", "inserted")
    assert result.rows_checked == 5


def test_verify_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError):
        usage_report(tmp_path / "missing.db", since=None, by="user")
    assert not (tmp_path / "missing.db").exists()


# --------------------------------------------------------------------------- failures


def test_locked_database_fails_then_recovers(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer.finish("r1", {"status": 200})  # held back and retried once the lock is gone
    with pytest.raises(AuditUnavailable) as excinfo:
        writer.begin(row("r2", user="alice-s3cr3t")).result(5)
    assert "locked" in str(excinfo.value)
    assert "s3cr3t" not in str(excinfo.value)
    assert not writer.healthy
    blocker.execute("COMMIT")
    blocker.close()

    writer.begin(row("r3")).result(5)
    assert writer.healthy
    writer.flush()
    assert query(db_path, "SELECT id, status, seq FROM requests ORDER BY id") == [
        ("r1", 200, 1),
        ("r3", None, None),
    ]
    assert verify(db_path).ok


class CappedWriter(AuditWriter):
    """Caps the file at its current size while ``full`` is set: a full disk, on demand."""

    full = False

    def _configure(self, conn: sqlite3.Connection) -> None:
        super()._configure(conn)
        if self.full:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")


def test_full_disk_fails_then_recovers(db_path: Path) -> None:
    first = AuditWriter(db_path)
    first.start()  # create the schema while there is room
    first.close()
    w = CappedWriter(db_path, busy_timeout_ms=100)
    w.full = True
    w.start()
    try:
        with pytest.raises(AuditUnavailable, match="full"):
            w.begin(row("big", path="/" + "x" * 50_000)).result(5)
        assert not w.healthy
        w.full = False  # space freed
        w.begin(row("after")).result(5)
        assert w.healthy
        assert query(db_path, "SELECT id FROM requests") == [("after",)]
    finally:
        w.close()


def test_removed_directory_fails_then_recovers(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    shutil.rmtree(db_path.parent)
    with pytest.raises(AuditUnavailable, match="not writable"):
        writer.begin(row("r2")).result(5)
    assert not writer.healthy

    db_path.parent.mkdir()
    writer.begin(row("r3")).result(5)
    assert writer.healthy
    assert query(db_path, "SELECT id FROM requests") == [("r3",)]
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_removed_file_is_recreated(writer: AuditWriter, db_path: Path) -> None:
    write_sealed(writer, "r1")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    writer.begin(row("r2")).result(5)
    assert writer.healthy
    assert query(db_path, "SELECT id FROM requests") == [("r2",)]
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_fails_then_recovers(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(row("r1")).result(5)
    os.chmod(db_path, 0o400)
    try:
        with pytest.raises(AuditUnavailable, match="read-only"):
            writer.begin(row("r2")).result(5)
        assert not writer.healthy
    finally:
        os.chmod(db_path, 0o600)
    writer.begin(row("r3")).result(5)
    assert writer.healthy


# --------------------------------------------------------------------------- usage report

USAGE_ROWS: list[tuple[dict[str, object], dict[str, object] | None]] = [
    (
        row("a1", user="alice", groups=["eng", "ml"], ts="2025-01-01T10:00:00Z"),
        {"input_tokens": 100, "output_tokens": 10, "cache_read_tokens": 5, "cost_usd": 0.25},
    ),
    (
        row(
            "a2",
            user="alice",
            groups=["eng", "ml"],
            provider="anthropic",
            model="claude-sonnet-4",
            ts="2025-01-02T10:00:00Z",
        ),
        {"input_tokens": 200, "output_tokens": 20, "cache_write_tokens": 7, "cost_usd": 0.5},
    ),
    (
        row("b1", user="bob", ts="2025-01-02T11:00:00Z"),
        {"input_tokens": 50, "output_tokens": 5},  # no price known
    ),
    (
        row("b2", user="bob", ts="2025-01-03T09:00:00Z", refused_by="budget", status=403),
        {"status": 403},
    ),
    (
        row("c1", user="carol", groups=None, model="gpt-4o-mini", ts="2025-01-03T12:00:00Z"),
        {"input_tokens": 10, "output_tokens": 1, "cost_usd": 0.125},
    ),
]


@pytest.fixture
def usage_db(db_path: Path) -> Path:
    w = AuditWriter(db_path)
    w.start()
    for begin_row, done in USAGE_ROWS:
        w.begin(begin_row).result(5)
        if done is not None:
            w.finish(str(begin_row["id"]), done)
    w.close()
    return db_path


def report_row(key: object, *values: object) -> dict[str, object]:
    return dict(zip(REPORT_COLUMNS, (key, *values), strict=True))


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "user",
            [
                report_row("alice", 2, 0, 300, 30, 5, 7, 0.75, 0),
                report_row("carol", 1, 0, 10, 1, 0, 0, 0.125, 0),
                report_row("bob", 2, 1, 50, 5, 0, 0, 0.0, 1),
            ],
        ),
        (
            "group",
            [
                report_row("eng", 4, 1, 350, 35, 5, 7, 0.75, 1),
                report_row("ml", 2, 0, 300, 30, 5, 7, 0.75, 0),
                report_row(None, 1, 0, 10, 1, 0, 0, 0.125, 0),
            ],
        ),
        (
            "provider",
            [
                report_row("anthropic", 1, 0, 200, 20, 0, 7, 0.5, 0),
                report_row("openai", 4, 1, 160, 16, 5, 0, 0.375, 1),
            ],
        ),
        (
            "model",
            [
                report_row("claude-sonnet-4", 1, 0, 200, 20, 0, 7, 0.5, 0),
                report_row("gpt-4o", 3, 1, 150, 15, 5, 0, 0.25, 1),
                report_row("gpt-4o-mini", 1, 0, 10, 1, 0, 0, 0.125, 0),
            ],
        ),
        (
            "day",
            [
                report_row("2025-01-01", 1, 0, 100, 10, 5, 0, 0.25, 0),
                report_row("2025-01-02", 2, 0, 250, 25, 0, 7, 0.5, 1),
                report_row("2025-01-03", 2, 1, 10, 1, 0, 0, 0.125, 0),
            ],
        ),
    ],
)
def test_usage_report(usage_db: Path, by: str, expected: list[dict[str, object]]) -> None:
    assert usage_report(usage_db, since=None, by=by) == expected


def test_usage_report_since_and_bad_key(usage_db: Path) -> None:
    since = datetime(2025, 1, 2, tzinfo=UTC)
    assert usage_report(usage_db, since=since, by="user") == [
        report_row("alice", 1, 0, 200, 20, 0, 7, 0.5, 0),
        report_row("carol", 1, 0, 10, 1, 0, 0, 0.125, 0),
        report_row("bob", 2, 1, 50, 5, 0, 0, 0.0, 1),
    ]
    assert usage_report(usage_db, since=datetime(2030, 1, 1, tzinfo=UTC), by="day") == []
    with pytest.raises(ValueError, match="cannot group by"):
        usage_report(usage_db, since=None, by="colour")


def test_usage_report_reads_while_the_writer_runs(writer: AuditWriter, db_path: Path) -> None:
    write_sealed(writer, "r1")
    writer.begin(row("r2")).result(5)
    assert usage_report(db_path, since=None, by="user") == [
        report_row("alice", 2, 0, 10, 2, 0, 0, 0.01, 1)
    ]


def test_format_report_round_trips(usage_db: Path) -> None:
    rows = usage_report(usage_db, since=None, by="group")

    assert json.loads(format_report(rows, "json")) == rows

    parsed = list(csv.DictReader(io.StringIO(format_report(rows, "csv"))))
    assert parsed == [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert [float(p["cost_usd"]) for p in parsed] == [r["cost_usd"] for r in rows]

    table = format_report(rows, "table").splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].split() == list(REPORT_COLUMNS)
    assert len({len(line) for line in table}) == 1  # right-aligned last column lines up
    assert table[-1].startswith("(none)")
    assert "0.750000" in table[2]

    assert format_report([], "csv") == ",".join(REPORT_COLUMNS) + "\n"
    with pytest.raises(ValueError, match="unknown format"):
        format_report(rows, "xml")


def test_parse_since() -> None:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("24h", now=now) == now - timedelta(hours=24)
    assert parse_since(" 30M ", now=now) == now - timedelta(minutes=30)
    assert parse_since("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_since("2025-01-31T13:00:00+01:00") == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert abs(parse_since("1h") - (datetime.now(UTC) - timedelta(hours=1))) < timedelta(seconds=5)
    for bad in ("", "7", "7y", "yesterday", "-3d"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_since(bad)


# --------------------------------------------------------------------------- prune


def test_prune_deletes_only_old_rows_and_keeps_the_chain(db_path: Path) -> None:
    w = AuditWriter(db_path, log_bodies=True, prune_batch=2)
    w.start()
    try:
        old = datetime.now(UTC) - timedelta(days=40)
        new = datetime.now(UTC) - timedelta(days=1)
        for i in range(5):
            write_sealed(w, f"old{i}", ts=old)
        w.bodies("old0", "req", "resp")
        write_sealed(w, "new1", ts=new)
        w.bodies("new1", "req", "resp")
        # Old, but completed after new1: it must wait, or the chain would get a hole.
        write_sealed(w, "old_late", ts=old)
        write_sealed(w, "new2", ts=new)
        w.begin(row("old_unfinished", ts=old)).result(5)
        w.begin(row("new_unfinished", ts=new)).result(5)

        commits = w.commits
        assert w.prune(30).result(10) == 6
        assert w.commits - commits >= 3  # six rows, two per transaction

        remaining = {r[0] for r in query(db_path, "SELECT id FROM requests")}
        assert remaining == {"new1", "old_late", "new2", "new_unfinished"}
        assert query(db_path, "SELECT request_id FROM bodies") == [("new1",)]
        result = verify(db_path)
        assert (result.ok, result.rows_checked, result.unfinished) == (True, 3, 1)

        write_sealed(w, "new3")
        assert verify(db_path).ok
        # Deleting the oldest surviving row is still caught after a prune.
        execute(db_path, "DELETE FROM requests WHERE id = 'new1'")
        assert (verify(db_path).first_bad_id, verify(db_path).problem) == ("old_late", "deleted")

        with pytest.raises(ValueError):
            w.prune(-1)
    finally:
        w.close()
