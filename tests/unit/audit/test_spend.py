"""`spend_since`: what the audit database says went upstream since each window began, read
from a real database the writer filled: rows in flight and without usage or cost counted
apart, refused rows and older rows left out, no database or no tables yet read as nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llamakey.audit import AuditWriter
from llamakey.audit.spend import spend_since
from llamakey.rules.rebuild import Spend
from tests.unit.audit.helpers import done, row

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
HOUR = int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp())


def test_spend_is_aggregated_per_user_provider_and_model(
    writer: AuditWriter, db_path: Path
) -> None:
    at_nine, at_ten = T0, T0.replace(hour=10, minute=30)
    writer.begin(row("a", ts=at_nine, request_bytes=400)).result(5)
    writer.finish(
        "a", done(status=200, input_tokens=10, output_tokens=5, cache_read_tokens=2, cost_usd=0.25)
    )
    writer.begin(row("b", ts=at_ten, request_bytes=40)).result(5)  # in flight
    writer.begin(row("c", ts=at_ten, request_bytes=80)).result(5)
    writer.finish("c", done(status=500, error="upstream"))  # no usage, no cost
    writer.begin(row("refused", ts=at_ten, refused_by="rate_limited")).result(5)
    writer.begin(row("yesterday", ts=T0.replace(day=30, month=11))).result(5)
    writer.begin(row("bob", ts=at_ten, user="bob", groups=None, model=None)).result(5)
    writer.flush()

    got = spend_since(db_path, [DAY, HOUR])

    alice_day = Spend(
        user="alice",
        groups=("eng",),
        provider="openai",
        model="gpt-4o",
        requests=3,
        tokens=17,
        unmetered=2,
        unmetered_input=(40 + 3) // 4 + (80 + 3) // 4,
        usd=0.25,
        unpriced=2,
        unpriced_input=10 + 20,
    )
    bob = Spend("bob", (), "openai", None, 1, 0, 1, (321 + 3) // 4, 0.0, 1, (321 + 3) // 4)
    assert sorted(got[DAY], key=lambda s: s.user) == [alice_day, bob]
    (alice_hour,) = [s for s in got[HOUR] if s.user == "alice"]
    assert (alice_hour.requests, alice_hour.tokens, alice_hour.usd) == (2, 0, 0.0)


def test_no_database_or_no_tables_yet_is_nothing_spent(tmp_path: Path) -> None:
    assert spend_since(tmp_path / "none.db", [DAY]) == {DAY: []}
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert spend_since(empty, [DAY, HOUR]) == {DAY: [], HOUR: []}


def test_a_file_that_is_not_a_database_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database, " * 100)
    with pytest.raises(sqlite3.DatabaseError):
        spend_since(bad, [DAY])
