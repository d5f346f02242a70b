"""Column ``cut_by`` (migration m004): the rule that cut a stream off, written by the seal and
covered by the row hash; NULL, and so out of the hash, on every other row."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamakey.audit import (
    GENESIS_HASH,
    REQUEST_COLUMNS,
    AuditWriter,
    InvalidRow,
    row_digest,
    verify,
)
from llamakey.audit.schema import MIGRATION_NAMES
from tests.unit.audit.helpers import done, execute, full_row, query, row


def test_the_migration_adds_a_text_column() -> None:
    assert "m004_stream_cut" in MIGRATION_NAMES
    assert REQUEST_COLUMNS["cut_by"] == "TEXT"


def test_the_field_is_a_string_or_none() -> None:
    assert "cut_by" not in done().sql_values()
    assert done(cut_by="budget_exceeded").sql_values()["cut_by"] == "budget_exceeded"
    with pytest.raises(InvalidRow, match=r"^audit row rejected: cut_by must be a string"):
        done(cut_by=1)


def test_the_seal_writes_it_and_the_hash_covers_it(writer: AuditWriter, db_path: Path) -> None:
    assert [c[2] for c in query(db_path, "PRAGMA table_info(requests)") if c[1] == "cut_by"] == [
        "TEXT"
    ]
    writer.begin(row("r1")).result(5)
    writer.finish("r1", done(status=200, cut_by="budget_exceeded"))
    writer.flush()
    r1 = full_row(db_path, "r1")
    assert r1["cut_by"] == "budget_exceeded"
    assert r1["row_hash"] == row_digest(GENESIS_HASH, r1)
    assert verify(db_path).ok
    execute(db_path, "UPDATE requests SET cut_by = NULL")
    result = verify(db_path)
    assert (result.ok, result.first_bad_id, result.problem) == (False, "r1", "altered")
