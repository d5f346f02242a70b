"""The schema and its migrations: tables and indexes as documented, every migration recorded by
name and time, a database from before the migration table adopted with its rows and chain
intact, and a newer database refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llamakey.audit import (
    GENESIS_HASH,
    REQUEST_COLUMNS,
    SCHEMA_VERSION,
    AuditUnavailable,
    AuditWriter,
    row_digest,
    verify,
)
from llamakey.audit.schema import MIGRATION_NAMES, MIGRATIONS
from tests.unit.audit.helpers import done, execute, full_row, query, row, write_sealed


def test_schema_tables_columns_and_indexes(writer: AuditWriter, db_path: Path) -> None:
    tables = {
        name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"requests", "bodies", "audit_meta", MIGRATIONS.migrations_table} <= tables

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
    with pytest.raises(AuditUnavailable, match="not running"):
        future.begin(row("r3")).result(1)


# --------------------------------------------------------------------------- migrations


def applied(path: Path) -> list[tuple[str, str, str]]:
    return query(path, f"SELECT migration_set, name, applied_at FROM {MIGRATIONS.migrations_table}")


def test_a_new_database_records_every_migration(writer: AuditWriter, db_path: Path) -> None:
    records = applied(db_path)
    assert [(s, n) for s, n, _ in records] == [("llamakey.audit", n) for n in MIGRATION_NAMES]
    assert SCHEMA_VERSION == len(MIGRATION_NAMES) >= 1
    for *_, when in records:
        assert datetime.now(UTC) - datetime.fromisoformat(when) < timedelta(minutes=1)


def test_reopening_applies_nothing_twice(writer: AuditWriter, db_path: Path) -> None:
    writer.close()
    first = applied(db_path)
    for _ in range(2):
        again = AuditWriter(db_path)
        again.start()
        again.close()
    assert applied(db_path) == first


def test_a_database_recording_an_unknown_migration_is_refused(
    writer: AuditWriter, db_path: Path
) -> None:
    write_sealed(writer, "r1")
    writer.close()
    execute(
        db_path,
        f"INSERT INTO {MIGRATIONS.migrations_table} (migration_set, name, applied_at)"
        " VALUES ('llamakey.audit', 'm999_from_the_future', '2030-01-01 00:00:00+00:00')",
    )
    with pytest.raises(AuditUnavailable, match=r"m999_from_the_future.*newer"):
        AuditWriter(db_path).start()
    assert query(db_path, "SELECT id FROM requests") == [("r1",)]


def test_a_failing_migration_leaves_nothing_behind(db_path: Path) -> None:
    db_path.parent.mkdir()
    execute(db_path, "CREATE VIEW bodies AS SELECT 1 AS request_id")  # in the first one's way
    with pytest.raises(AuditUnavailable, match="not writable"):
        AuditWriter(db_path).start()
    assert query(db_path, "SELECT type, name FROM sqlite_master") == [("view", "bodies")]
    assert query(db_path, "PRAGMA user_version") == [(0,)]


# The schema exactly as LlaMaKey wrote it before migrations were recorded (user_version 1 only).
OLD_SCHEMA = """
CREATE TABLE "requests" (
   "id" TEXT PRIMARY KEY, "ts" TEXT NOT NULL, "user" TEXT, "groups" TEXT,
   "client_addr" TEXT, "provider" TEXT, "host" TEXT, "method" TEXT, "path" TEXT,
   "model" TEXT, "stream" INTEGER, "request_bytes" INTEGER, "status" INTEGER,
   "refused_by" TEXT, "error" TEXT, "latency_ms" REAL, "ttfb_ms" REAL,
   "response_bytes" INTEGER, "input_tokens" INTEGER, "output_tokens" INTEGER,
   "cache_read_tokens" INTEGER, "cache_write_tokens" INTEGER, "reasoning_tokens" INTEGER,
   "cost_usd" REAL, "provider_cost_usd" REAL, "response_model" TEXT, "finish_reason" TEXT,
   "client_disconnected" INTEGER, "completed_ts" TEXT, "seq" INTEGER, "prev_hash" TEXT,
   "row_hash" TEXT
);
CREATE INDEX "idx_requests_ts" ON "requests" ("ts");
CREATE INDEX "idx_requests_user_ts" ON "requests" ("user", "ts");
CREATE INDEX "idx_requests_provider_ts" ON "requests" ("provider", "ts");
CREATE UNIQUE INDEX "idx_requests_seq" ON "requests" ("seq");
CREATE TABLE "bodies" (
   "request_id" TEXT PRIMARY KEY REFERENCES "requests"("id"),
   "ts" TEXT, "request_body" TEXT, "response_body" TEXT
);
CREATE INDEX "idx_bodies_ts" ON "bodies" ("ts");
CREATE TABLE "audit_meta" ("key" TEXT PRIMARY KEY, "value" TEXT);
PRAGMA user_version = 1;
"""


def old_database(path: Path) -> list[str]:
    """A database as the old code left it: three sealed rows (chained as it chained them), one
    unfinished row and a body. Returns the sealed ids in chain order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sealed = ["old2", "old1", "old3"]  # completion order, not ts order
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("PRAGMA journal_mode = WAL")
        prev = GENESIS_HASH
        for seq, request_id in enumerate(sealed, start=1):
            stored = {
                "id": request_id,
                "ts": f"2025-01-0{request_id[-1]}T10:00:00.000Z",
                "user": "zoë",
                "groups": '["eng"]',
                "path": "/v1/chat/completions",
                "stream": 1,
                "status": 200,
                "latency_ms": 12.5,
                "cost_usd": 0.25,
                "completed_ts": "2025-01-05T10:00:00.000Z",
            }
            digest = row_digest(prev, stored)
            columns = [*stored, "seq", "prev_hash", "row_hash"]
            conn.execute(
                f"INSERT INTO requests ({', '.join(columns)}) VALUES ({', '.join('?' * 13)})",
                [*stored.values(), seq, prev, digest],
            )
            prev = digest
        conn.execute(
            "INSERT INTO requests (id, ts, user)"
            " VALUES ('inflight', '2025-01-06T00:00:00.000Z', 'x')"
        )
        conn.execute("INSERT INTO bodies VALUES ('old1', '2025-01-01T10:00:00.000Z', 'q', 'a')")
        conn.commit()
    assert verify(path, head=False).ok  # it has no head file yet
    return sealed


def test_a_database_from_before_migrations_is_adopted_intact(db_path: Path) -> None:
    sealed = old_database(db_path)
    before = {r: full_row(db_path, r) for r in [*sealed, "inflight"]}
    old_head = verify(db_path, head=False).head_hash

    w = AuditWriter(db_path)
    w.start()
    try:
        assert [n for _, n, _ in applied(db_path)] == list(MIGRATION_NAMES)
        after = {r: full_row(db_path, r) for r in before}
        # Not a byte changed; later migrations only added columns, NULL in old rows.
        for added in ("usage_estimated", "cut_by", "deployment", "attempts"):
            assert all(after[r].pop(added) is None for r in after)
        assert after == before
        assert verify(db_path).head_hash == old_head
        assert verify(db_path).ok  # the writer started a head file
        # The chain goes on from the old head, and an old unfinished row can still be sealed.
        w.finish("inflight", done(status=499))
        write_sealed(w, "new1")
    finally:
        w.close()
    assert query(db_path, "SELECT id, seq FROM requests WHERE seq > 3 ORDER BY seq") == [
        ("inflight", 4),
        ("new1", 5),
    ]
    assert full_row(db_path, "old3")["row_hash"] == full_row(db_path, "inflight")["prev_hash"]
    result = verify(db_path)
    assert (result.ok, result.rows_checked, result.unfinished) == (True, 5, 0)
    assert query(db_path, "SELECT request_id FROM bodies") == [("old1",)]
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
