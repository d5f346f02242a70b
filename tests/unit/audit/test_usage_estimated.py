"""Column ``usage_estimated`` (migration m002): written by the seal, covered by the row hash,
and absent from the hash while NULL, so rows sealed before the migration keep their hashes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlite_utils import Database

from llamakey.audit import (
    GENESIS_HASH,
    REQUEST_COLUMNS,
    AuditWriter,
    InvalidRow,
    row_digest,
    verify,
)
from llamakey.audit.schema import MIGRATION_NAMES, MIGRATIONS
from tests.unit.audit.helpers import done, execute, full_row, query, row


def test_the_migration_adds_the_column_after_the_first_schema(
    writer: AuditWriter, db_path: Path
) -> None:
    assert MIGRATION_NAMES[:2] == ("m001_create_tables", "m002_usage_estimated")
    names = list(REQUEST_COLUMNS)
    assert names[names.index("row_hash") + 1] == "usage_estimated"
    assert REQUEST_COLUMNS["usage_estimated"] == "INTEGER"
    info = query(db_path, "PRAGMA table_info(requests)")
    column = [c for c in info if c[1] == "usage_estimated"]
    assert [(c[2], c[4]) for c in column] == [("INTEGER", None)]
    assert info.index(column[0]) == names.index("usage_estimated")


def test_the_field_is_a_bool_or_none() -> None:
    assert done().usage_estimated is None
    assert "usage_estimated" not in done().sql_values()
    assert done(usage_estimated=True).sql_values()["usage_estimated"] == 1
    assert done(usage_estimated=False).sql_values()["usage_estimated"] == 0
    with pytest.raises(InvalidRow, match=r"^audit row rejected: usage_estimated must be a bool"):
        done(usage_estimated=1)


@pytest.mark.parametrize(("estimated", "stored"), [(True, 1), (False, 0), (None, None)])
def test_the_seal_writes_it_and_the_hash_covers_it(
    writer: AuditWriter, db_path: Path, estimated: bool | None, stored: int | None
) -> None:
    writer.begin(row("r1")).result(5)
    writer.finish("r1", done(status=200, usage_estimated=estimated))
    writer.flush()
    r1 = full_row(db_path, "r1")
    assert r1["usage_estimated"] == stored
    assert r1["row_hash"] == row_digest(GENESIS_HASH, r1)
    assert verify(db_path).ok
    execute(db_path, "UPDATE requests SET usage_estimated = 1 - coalesce(usage_estimated, 0)")
    result = verify(db_path)
    assert (result.ok, result.first_bad_id, result.problem) == (False, "r1", "altered")


def test_a_database_from_before_the_migration_still_verifies(db_path: Path) -> None:
    """A database at m001, rows sealed as the code of then sealed them, then migrated."""
    db_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        MIGRATIONS.apply(Database(conn), stop_before="m002_usage_estimated")
        conn.execute("PRAGMA user_version = 1")
        prev = GENESIS_HASH
        for seq in (1, 2):
            stored = {
                "id": f"old{seq}",
                "ts": "2025-01-01T10:00:00.000Z",
                "user": "zoë",
                "status": 200,
                "input_tokens": 12,
                "cost_usd": 0.5,
                "completed_ts": "2025-01-01T10:00:01.000Z",
            }
            digest = row_digest(prev, stored)
            columns = [*stored, "seq", "prev_hash", "row_hash"]
            conn.execute(
                f"INSERT INTO requests ({', '.join(columns)}) VALUES ({', '.join('?' * 10)})",
                [*stored.values(), seq, prev, digest],
            )
            prev = digest
    assert "usage_estimated" not in {c[1] for c in query(db_path, "PRAGMA table_info(requests)")}
    old_head = verify(db_path, head=False).head_hash

    w = AuditWriter(db_path)
    w.start()
    try:
        assert query(db_path, "SELECT usage_estimated FROM requests") == [(None,), (None,)]
        result = verify(db_path)
        assert (result.ok, result.rows_checked, result.head_hash) == (True, 2, old_head)
        w.begin(row("new")).result(5)
        w.finish("new", done(status=200, usage_estimated=True))
        w.flush()
    finally:
        w.close()
    assert full_row(db_path, "new")["usage_estimated"] == 1
    assert full_row(db_path, "new")["prev_hash"] == old_head
    result = verify(db_path)
    assert (result.ok, result.rows_checked) == (True, 3)
