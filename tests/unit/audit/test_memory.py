"""The in-memory sink keeps the writer's promises, and lets the audit step be tested without a
thread or a file: the rows it builds, and the 503 when the audit log is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mitmproxy import http

from llamakey import state as keys
from llamakey.audit import AuditSink, AuditUnavailable, MemorySink
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps import audit as audit_step
from llamakey.steps import meter, settle
from tests.unit.audit.helpers import done, row
from tests.unit.builders import mitm_context, provider_flow


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


# --------------------------------------------------------------------------- the audit step


@pytest.fixture
def step(
    state: GatewayState, sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[audit_step.Audit]:
    """The audit step with the sink in place of the SQLite writer it would open."""

    def factory(path: Any, **options: Any) -> MemorySink:
        return sink

    monkeypatch.setattr(audit_step, "AuditWriter", factory)
    addon = audit_step.Audit(state)
    with mitm_context(addon):
        yield addon


def chat_flow() -> http.HTTPFlow:
    f = provider_flow(
        "https://api.openai.com/v1/chat/completions?key=AIzaTOPSECRET",
        content=json.dumps({"model": "gpt-4o-mini"}).encode(),
    )
    f.metadata.update(
        {
            keys.PROVIDER: "openai",
            keys.USER: "alice",
            keys.GROUPS: ["research"],
            meter.MODEL: "gpt-4o-mini",
            meter.STREAM: False,
        }
    )
    return f


async def test_step_writes_ahead_and_completes_typed_rows(
    step: audit_step.Audit, sink: MemorySink
) -> None:
    step.running()
    try:
        f = chat_flow()
        await step.request(f)
        assert f.response is None  # went on upstream
        start = sink.begun[f.id]
        assert (start.user, start.groups, start.provider) == ("alice", ("research",), "openai")
        assert (start.model, start.stream, start.path) == (
            "gpt-4o-mini",
            False,
            "/v1/chat/completions",
        )
        f.response = http.Response.make(200, b'{"ok": true}', {"content-type": "application/json"})
        f.metadata[meter.USAGE] = {"input_tokens": 11, "output_tokens": 5, "model": "gpt-4o-mini"}
        f.metadata[settle.COST] = 0.0125
        step.response(f)
        end = sink.finished[f.id]
        assert (end.status, end.input_tokens, end.output_tokens) == (200, 11, 5)
        assert (end.cost_usd, end.response_model, end.client_disconnected) == (
            0.0125,
            "gpt-4o-mini",
            False,
        )
        assert end.latency_ms is not None and end.latency_ms >= 0
        assert sink.stored_bodies[f.id][1] == '{"ok": true}'
    finally:
        step.done()


async def test_step_answers_503_when_the_audit_log_is_down(
    step: audit_step.Audit, sink: MemorySink
) -> None:
    step.running()
    try:
        sink.fail("audit database is locked")
        f = chat_flow()
        await step.request(f)
        assert f.response is not None and f.response.status_code == 503
        assert f.metadata[keys.REFUSED] == Refusal.AUDIT_UNAVAILABLE.value
        assert f.id not in sink.begun
        sink.recover()
        again = chat_flow()
        await step.request(again)
        assert again.response is None and again.id in sink.begun
    finally:
        step.done()


async def test_step_records_a_refusal_with_its_status(
    step: audit_step.Audit, sink: MemorySink
) -> None:
    step.running()
    try:
        f = chat_flow()
        f.metadata[keys.REFUSED] = Refusal.UNKNOWN_KEY.value
        f.response = http.Response.make(401, b"{}")
        await step.request(f)
        assert sink.begun[f.id].refused_by == "unknown_master_key"
        assert sink.finished[f.id].status == 401
        assert sink.finished[f.id].latency_ms == 0.0
    finally:
        step.done()
