"""Usage reports for ``lmk usage``: aggregation by user, group, provider, model and day, the
three output formats, and reading ``--since``."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llamakey.audit import (
    REPORT_COLUMNS,
    AuditWriter,
    RequestEnd,
    RequestStart,
    format_report,
    parse_since,
    usage_report,
)
from tests.unit.audit.helpers import done, row, write_sealed


def at(day: int, hour: int) -> datetime:
    return datetime(2025, 1, day, hour, tzinfo=UTC)


USAGE_ROWS: list[tuple[RequestStart, RequestEnd | None]] = [
    (
        row("a1", user="alice", groups=("eng", "ml"), ts=at(1, 10)),
        done(input_tokens=100, output_tokens=10, cache_read_tokens=5, cost_usd=0.25),
    ),
    (
        row(
            "a2",
            user="alice",
            groups=("eng", "ml"),
            provider="anthropic",
            model="claude-sonnet-4",
            ts=at(2, 10),
        ),
        done(input_tokens=200, output_tokens=20, cache_write_tokens=7, cost_usd=0.5),
    ),
    (
        row("b1", user="bob", ts=at(2, 11)),
        done(input_tokens=50, output_tokens=5),  # no price known
    ),
    (
        row("b2", user="bob", ts=at(3, 9), refused_by="budget"),
        done(status=403),
    ),
    (
        row("c1", user="carol", groups=None, model="gpt-4o-mini", ts=at(3, 12)),
        done(input_tokens=10, output_tokens=1, cost_usd=0.125),
    ),
]


@pytest.fixture
def usage_db(db_path: Path) -> Path:
    w = AuditWriter(db_path)
    w.start()
    for begin_row, end in USAGE_ROWS:
        w.begin(begin_row).result(5)
        if end is not None:
            w.finish(begin_row.id, end)
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
