"""The hash chain: rows are sealed in completion order, and verify names the first row that
was altered, deleted or inserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamakey.audit import (
    GENESIS_HASH,
    REQUEST_COLUMNS,
    AuditWriter,
    row_digest,
    usage_report,
    verify,
)
from tests.unit.audit.helpers import TS_RE, done, execute, full_row, row


def test_finish_fills_fields_and_seals_in_completion_order(
    writer: AuditWriter, db_path: Path
) -> None:
    writer.begin(row("r1")).result(5)
    writer.begin(row("r2", stream=False)).result(5)
    completion: dict[str, Any] = {
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
    writer.finish("r2", done(status=200))
    writer.finish("r1", done(**completion))
    writer.flush()

    r1, r2 = full_row(db_path, "r1"), full_row(db_path, "r2")
    for key, value in completion.items():
        assert r1[key] == value, key
    assert isinstance(r1["latency_ms"], float)
    assert TS_RE.match(r1["completed_ts"])
    # Chained by completion: r2 finished first.
    assert (r2["seq"], r2["prev_hash"]) == (1, GENESIS_HASH)
    assert (r1["seq"], r1["prev_hash"]) == (2, r2["row_hash"])
    assert r1["row_hash"] == row_digest(r1["prev_hash"], r1)
    assert r2["row_hash"] == row_digest(GENESIS_HASH, r2)
    assert verify(db_path).ok


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


def test_the_digest_ignores_nulls_and_chain_columns() -> None:
    stored = {"id": "r1", "ts": "2025-01-01T00:00:00.000Z", "user": "zoë"}
    digest = row_digest(GENESIS_HASH, stored)
    assert row_digest(GENESIS_HASH, {**stored, "model": None, "seq": 9, "row_hash": "x"}) == digest
    assert row_digest(GENESIS_HASH, {**stored, "user": "zoe"}) != digest
    assert row_digest("1" * 64, stored) != digest
