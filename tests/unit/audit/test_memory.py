"""The in-memory sink keeps the writer's promises, and lets the audit step be tested without a
thread or a file: the rows it builds, and the 503 when the audit log is down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llamakey.audit import AuditSink, AuditUnavailable, MemorySink
from tests.unit.audit.helpers import done, row


@pytest.fixture
def sink() -> MemorySink:
    s = MemorySink(log_bodies=True)
    s.start()
    return s


def test_it_is_an_audit_sink() -> None:
    implementation: AuditSink = MemorySink()  # checked by mypy
    assert implementation.log_bodies is False


def test_records_begun_and_finished_rows(sink: MemorySink) -> None:
    assert sink.begin(row("r1", model="gpt-4o")).done()  # settled at once
    sink.finish("r1", done(status=200, cost_usd=0.5))
    sink.finish("r1", done(status=500))  # already complete: ignored
    sink.finish("unknown", done(status=200))  # never begun: ignored
    sink.bodies("r1", "q", "a")
    assert list(sink.begun) == ["r1"]
    assert sink.finished["r1"].status == 200
    assert sink.stored_bodies == {"r1": ("q", "a")}
    stored = sink.row("r1")
    assert (stored["model"], stored["status"], stored["cost_usd"], stored["stream"]) == (
        "gpt-4o",
        200,
        0.5,
        1,
    )


def test_refuses_what_the_writer_refuses(sink: MemorySink) -> None:
    sink.begin(row("dup")).result(0)
    with pytest.raises(AuditUnavailable, match="duplicate"):
        sink.begin(row("dup")).result(0)
    stopped = MemorySink()
    with pytest.raises(AuditUnavailable, match="not running"):
        stopped.begin(row("r1")).result(0)
    sink.close()
    with pytest.raises(AuditUnavailable, match="not running"):
        sink.begin(row("r2")).result(0)


def test_can_be_told_to_fail(sink: MemorySink) -> None:
    sink.begin(row("r1")).result(0)
    sink.fail("disk full")
    with pytest.raises(AuditUnavailable, match="disk full"):
        sink.begin(row("r2")).result(0)
    with pytest.raises(AuditUnavailable, match="disk full"):
        sink.prune(30).result(0)
    broken = MemorySink()
    broken.fail("disk full")
    with pytest.raises(AuditUnavailable, match="disk full"):
        broken.start()
    sink.finish("r1", done(status=200))  # held back, like the writer's retry
    assert "r1" not in sink.finished
    sink.recover()
    assert sink.finished["r1"].status == 200
    sink.begin(row("r2")).result(0)


def test_prune_drops_old_rows(sink: MemorySink) -> None:
    sink.begin(row("old", ts=datetime.now(UTC) - timedelta(days=40))).result(0)
    sink.begin(row("new")).result(0)
    sink.finish("old", done(status=200))
    assert sink.prune(30).result(0) == 1
    assert (list(sink.begun), list(sink.finished), sink.prunes) == (["new"], [], [30])
