"""Typed rows: every column is a field of one of them, a wrong value is refused when the row is
built (naming the field, never the value), and the SQL values are what the database stores."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args, get_type_hints

import pytest

from llamakey.audit import (
    REQUEST_COLUMNS,
    AuditUnavailable,
    InvalidRow,
    RequestEnd,
    RequestStart,
    format_ts,
)
from llamakey.audit.chain import CHAIN_COLUMNS
from tests.unit.audit.helpers import TS_RE, done, row

_SQL_TYPE: dict[object, str] = {
    str: "TEXT",
    datetime: "TEXT",
    tuple[str, ...]: "TEXT",
    int: "INTEGER",
    bool: "INTEGER",
    float: "REAL",
}


def test_the_two_rows_cover_exactly_the_content_columns() -> None:
    start = {f.name for f in fields(RequestStart)}
    end = {f.name for f in fields(RequestEnd)}
    assert start | end == set(REQUEST_COLUMNS) - CHAIN_COLUMNS
    assert start & end == {"refused_by"}  # known before the request, or only at its end


@pytest.mark.parametrize("cls", [RequestStart, RequestEnd])
def test_field_types_match_the_column_types(cls: type) -> None:
    for name, hint in get_type_hints(cls).items():
        declared = set(get_args(hint)) - {type(None)} if get_args(hint) else {hint}
        (kind,) = declared
        assert _SQL_TYPE[kind] == REQUEST_COLUMNS[name], name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", 1),
        ("request_bytes", 1.5),
        ("request_bytes", True),
        ("user", 7),
        ("ts", "2025-01-01T00:00:00Z"),
        ("groups", ["eng"]),
        ("groups", ("eng", 3)),
    ],
)
def test_start_refuses_a_mistyped_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRow, match=f"^audit row rejected: {field} must be"):
        row("r1", **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cost_usd", "free"),
        ("cost_usd", float("nan")),
        ("latency_ms", math.inf),
        ("status", "200"),
        ("client_disconnected", 0),
        ("completed_ts", None),
    ],
)
def test_end_refuses_a_mistyped_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRow, match=f"^audit row rejected: {field} must be"):
        done(**{field: value})


def test_bad_rows_are_refused_without_leaking_values() -> None:
    bad: list[Callable[[], object]] = [
        lambda: row("x1", nonexistent="s3cr3t"),
        lambda: row("x2", stream="s3cr3t"),
        lambda: done(cost_usd=float("nan")),
        lambda: row("x4", seq=7),  # the chain columns belong to the writer
        lambda: done(row_hash="s3cr3t"),
        lambda: done(seq=99),
        lambda: done(nonexistent="s3cr3t"),
        lambda: done(id="s3cr3t"),  # a completion cannot move a row
        lambda: row("x5", completed_ts=datetime.now(UTC)),  # only a completion sets it
        lambda: row("x6", groups="s3cr3t"),
        lambda: RequestStart(user="no id"),  # type: ignore[call-arg]
        lambda: row(""),
    ]
    for build in bad:
        with pytest.raises(TypeError) as excinfo:
            build()
        assert "s3cr3t" not in str(excinfo.value)


def test_an_invalid_row_refuses_the_request_like_an_unavailable_database() -> None:
    with pytest.raises(AuditUnavailable):
        row("r1", model=42)


def test_start_values_are_what_sqlite_stores() -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    values = row(
        "t1",
        ts=moment,
        groups=("ml", "équipe"),
        stream=False,
        path="/v1beta/models/gemini:generateContent?key=AIzaTOPSECRET#frag",
    ).sql_values()
    assert list(values) == [f.name for f in fields(RequestStart)]
    assert values["ts"] == "2025-01-02T03:04:05.678Z"
    assert values["groups"] == '["ml", "équipe"]'  # order kept, UTF-8 as is
    assert values["stream"] == 0
    assert values["path"] == "/v1beta/models/gemini:generateContent"
    assert RequestStart(id="t2").sql_values()["groups"] is None
    assert row("t3", groups=()).sql_values()["groups"] == "[]"


def test_end_values_set_only_what_the_completion_knows() -> None:
    end = done(status=200, latency_ms=812, client_disconnected=False)
    values = end.sql_values()
    assert set(values) == {"status", "latency_ms", "client_disconnected", "completed_ts"}
    assert values["latency_ms"] == 812.0 and isinstance(values["latency_ms"], float)
    assert values["client_disconnected"] == 0
    assert TS_RE.match(str(values["completed_ts"]))


def test_timestamps_default_to_now_and_format_as_utc() -> None:
    before = datetime.now(UTC)
    assert before <= RequestStart(id="r1").ts <= datetime.now(UTC)
    assert before <= RequestEnd().completed_ts <= datetime.now(UTC)
    assert format_ts(datetime(2025, 1, 2)) == "2025-01-02T00:00:00.000Z"  # naive means UTC
    plus_one = timezone(timedelta(hours=1))
    assert format_ts(datetime(2025, 1, 2, 4, 4, 5, tzinfo=plus_one)) == "2025-01-02T03:04:05.000Z"


def test_rows_are_frozen() -> None:
    start = row("r1")
    with pytest.raises(AttributeError):
        start.user = "mallory"  # type: ignore[misc]
