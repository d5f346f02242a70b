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
        done(status=200, input_tokens=100, output_tokens=10, cache_read_tokens=5, cost_usd=0.25),
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
        done(status=200, input_tokens=200, output_tokens=20, cache_write_tokens=7, cost_usd=0.5),
    ),
    (
        row("b1", user="bob", ts=at(2, 11)),
        done(status=200, input_tokens=50, output_tokens=5),  # no price known: unpriced
    ),
    (  # no tokens, nothing to price: not unpriced
        row("b3", user="bob", method="GET", path="/v1/models", model=None, ts=at(2, 12)),
        done(status=200),
    ),
    (  # failed: nothing to price
        row("b4", user="bob", ts=at(3, 10)),
        done(status=502, error="upstream went away"),
    ),
    (row("b5", user="bob", ts=at(3, 11)), None),  # still in flight
    (
        row("b2", user="bob", ts=at(3, 9), refused_by="budget"),
        done(status=403),
    ),
    (
        row("c1", user="carol", groups=None, model="gpt-4o-mini", ts=at(3, 12)),
        done(status=200, input_tokens=10, output_tokens=1, cost_usd=0.125),
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
                report_row("bob", 5, 1, 50, 5, 0, 0, 0.0, 1),
            ],
        ),
        (
            "group",
            [
                report_row("eng", 7, 1, 350, 35, 5, 7, 0.75, 1),
                report_row("ml", 2, 0, 300, 30, 5, 7, 0.75, 0),
                report_row(None, 1, 0, 10, 1, 0, 0, 0.125, 0),
            ],
        ),
        (
            "provider",
            [
                report_row("anthropic", 1, 0, 200, 20, 0, 7, 0.5, 0),
                report_row("openai", 7, 1, 160, 16, 5, 0, 0.375, 1),
            ],
        ),
        (
            "model",
            [
                report_row("claude-sonnet-4", 1, 0, 200, 20, 0, 7, 0.5, 0),
                report_row("gpt-4o", 5, 1, 150, 15, 5, 0, 0.25, 1),
                report_row("gpt-4o-mini", 1, 0, 10, 1, 0, 0, 0.125, 0),
                report_row(None, 1, 0, 0, 0, 0, 0, 0.0, 0),
            ],
        ),
        (
            "day",
            [
                report_row("2025-01-01", 1, 0, 100, 10, 5, 0, 0.25, 0),
                report_row("2025-01-02", 3, 0, 250, 25, 0, 7, 0.5, 1),
                report_row("2025-01-03", 4, 1, 10, 1, 0, 0, 0.125, 0),
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
        report_row("bob", 5, 1, 50, 5, 0, 0, 0.0, 1),
    ]
    assert usage_report(usage_db, since=datetime(2030, 1, 1, tzinfo=UTC), by="day") == []
    with pytest.raises(ValueError, match="cannot group by"):
        usage_report(usage_db, since=None, by="colour")


def test_usage_report_reads_while_the_writer_runs(writer: AuditWriter, db_path: Path) -> None:
    write_sealed(writer, "r1")
    writer.begin(row("r2")).result(5)
    assert usage_report(db_path, since=None, by="user") == [
        report_row("alice", 2, 0, 10, 2, 0, 0, 0.01, 0)  # one in flight: not unpriced
    ]


def test_format_report_round_trips(usage_db: Path) -> None:
    rows = usage_report(usage_db, since=None, by="group")

    assert json.loads(format_report(rows, "json")) == rows

    parsed = list(csv.DictReader(io.StringIO(format_report(rows, "csv"))))
    assert [float(p["cost_usd"]) for p in parsed] == [r["cost_usd"] for r in rows]
    assert [p["key"] for p in parsed] == ["" if r["key"] is None else r["key"] for r in rows]
    assert [int(p["input_tokens"]) for p in parsed] == [r["input_tokens"] for r in rows]

    table = format_report(rows, "table").splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].split() == list(REPORT_COLUMNS)
    assert len({len(line) for line in table}) == 1  # right-aligned last column lines up
    assert table[-1].startswith("(none)")
    assert "0.750000" in table[2]

    assert format_report([], "csv") == ",".join(REPORT_COLUMNS) + "\n"
    with pytest.raises(ValueError, match="unknown format"):
        format_report(rows, "xml")


@pytest.mark.parametrize("by", ["user", "group", "provider", "model", "day"])
@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_the_first_column_is_headed_by_what_was_grouped_by(
    usage_db: Path, by: str, fmt: str
) -> None:
    rows = usage_report(usage_db, since=None, by=by)
    text = format_report(rows, fmt, by=by)
    if fmt == "json":
        first = next(iter(json.loads(text)[0]))
    elif fmt == "csv":
        first = text.split(",", 1)[0]
    else:
        first = text.split()[0]
    assert first == by
    assert "key" not in text.splitlines()[0 if fmt != "json" else 2]
    # With no rows at all, the heading still says it.
    assert format_report([], "csv", by=by).startswith(f"{by},requests,")


def test_costs_have_a_fixed_precision_and_tokens_are_integers(db_path: Path) -> None:
    # Sums of float costs come out as 0.00038877000000000003 and the like.
    w = AuditWriter(db_path)
    w.start()
    for n, cost in enumerate((0.00012959, 0.00012959, 0.00012959)):
        w.begin(row(f"r{n}")).result(5)
        w.finish(f"r{n}", done(status=200, input_tokens=7, output_tokens=3, cost_usd=cost))
    w.close()
    rows = usage_report(db_path, since=None, by="user")
    assert rows[0]["cost_usd"] != 0.00038877  # what SQLite's sum gives: not a clean number
    table = format_report(rows, "table", by="user")
    assert table.splitlines()[2].split() == [
        "alice",
        "3",
        "0",
        "21",
        "9",
        "0",
        "0",
        "0.000389",
        "0",
    ]
    (parsed,) = csv.DictReader(io.StringIO(format_report(rows, "csv", by="user")))
    assert parsed["cost_usd"] == "0.000389"
    assert parsed["input_tokens"] == "21"
    (data,) = json.loads(format_report(rows, "json", by="user"))
    assert data["cost_usd"] == 0.000389
    assert data["input_tokens"] == 21 and isinstance(data["input_tokens"], int)
    assert "0.0003887700" not in format_report(rows, "json", by="user")


def test_tiny_costs_are_written_in_fixed_notation(db_path: Path) -> None:
    w = AuditWriter(db_path)
    w.start()
    w.begin(row("r1")).result(5)
    w.finish("r1", done(status=200, input_tokens=1, output_tokens=1, cost_usd=0.00001))
    w.close()
    rows = usage_report(db_path, since=None, by="user")
    assert "e-05" not in format_report(rows, "csv") + format_report(rows, "table")
    assert "0.000010" in format_report(rows, "csv")


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
