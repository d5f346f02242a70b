"""Steps: write the audit row ahead, and complete it, with an in-memory sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy import http

from llamakey import flowstate as keys
from llamakey.audit import AuditSink, MemorySink
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.audit import AuditLog, CompleteAudit, WriteAhead
from llamakey.steps.identify import IdentifyProvider
from llamakey.usage import Usage
from tests.unit.builders import ALICE_KEY, authenticate, mitm_context, provider_flow


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink(log_bodies=True)


type Steps = tuple[AuditLog, WriteAhead, CompleteAudit]


@pytest.fixture
async def steps(state: GatewayState, sink: MemorySink) -> AsyncIterator[Steps]:
    def open_sink(path: Path, log_bodies: bool) -> AuditSink:
        return sink

    audit_log = AuditLog(state, open_sink)
    write_ahead, complete = WriteAhead(state, audit_log), CompleteAudit(state, audit_log)
    with mitm_context(audit_log, write_ahead, complete):
        audit_log.running()
        yield audit_log, write_ahead, complete
        audit_log.done()


def chat_flow(state: GatewayState) -> http.HTTPFlow:
    f = provider_flow(
        "https://api.openai.com/v1/chat/completions?key=AIzaTOPSECRET",
        {"authorization": f"Bearer {ALICE_KEY}"},
        content=json.dumps({"model": "gpt-4o-mini"}).encode(),
    )
    authenticate(state, f)
    IdentifyProvider(state).request(f)
    state.flows(f).authorized = True
    return f


async def test_writes_ahead_and_completes_typed_rows(
    state: GatewayState, sink: MemorySink, steps: Steps
) -> None:
    _, write_ahead, complete = steps
    f = chat_flow(state)
    await write_ahead.request(f)
    assert f.response is None and state.flows(f).audited  # may go on upstream
    start = sink.begun[f.id]
    assert (start.user, start.groups, start.provider) == ("alice", ("research",), "openai")
    assert (start.model, start.stream, start.path) == ("gpt-4o-mini", False, "/v1/chat/completions")
    f.response = http.Response.make(200, b'{"ok": true}', {"content-type": "application/json"})
    fs = state.flows(f)
    fs.usage = Usage(input_tokens=11, output_tokens=5, model="gpt-4o-mini")
    fs.cost_usd = 0.0125
    complete.response(f)
    end = sink.finished[f.id]
    assert (end.status, end.input_tokens, end.output_tokens) == (200, 11, 5)
    assert (end.cost_usd, end.response_model, end.client_disconnected) == (
        0.0125,
        "gpt-4o-mini",
        False,
    )
    assert end.latency_ms is not None and end.latency_ms >= 0
    assert sink.stored_bodies[f.id][1] == '{"ok": true}'


async def test_answers_503_when_the_audit_log_is_down(
    state: GatewayState, sink: MemorySink, steps: Steps
) -> None:
    _, write_ahead, _ = steps
    sink.fail("audit database is locked")
    f = chat_flow(state)
    await write_ahead.request(f)
    assert f.response is not None and f.response.status_code == 503
    assert f.metadata[keys.REFUSED] == Refusal.AUDIT_UNAVAILABLE.value
    assert not state.flows(f).audited  # the key swap will not touch it
    assert f.id not in sink.begun
    sink.recover()
    again = chat_flow(state)
    await write_ahead.request(again)
    assert again.response is None and again.id in sink.begun


async def test_records_a_refusal_with_its_status(
    state: GatewayState, sink: MemorySink, steps: Steps
) -> None:
    _, write_ahead, _ = steps
    f = provider_flow("https://api.openai.com/v1/models", {"authorization": "Bearer lmk_wrong"})
    authenticate(state, f)  # refused: unknown key
    await write_ahead.request(f)
    assert sink.begun[f.id].refused_by == "unknown_master_key"
    sink.flush()
    assert sink.finished[f.id].status == 401
    assert sink.finished[f.id].latency_ms == 0.0


async def test_a_refusal_after_the_row_was_begun_completes_it(
    state: GatewayState, sink: MemorySink, steps: Steps
) -> None:
    _, write_ahead, complete = steps
    f = chat_flow(state)
    await write_ahead.request(f)
    state.flows(f).refuse(f, ErrorShape.OPENAI, Refusal.NO_PROVIDER_KEY, "no key")
    complete.response(f)
    assert (sink.finished[f.id].status, sink.finished[f.id].refused_by) == (500, "no_provider_key")


async def test_auditing_off_clears_the_flow_without_a_row(sink: MemorySink) -> None:
    from tests.unit.builders import config_data, make_state

    data = config_data()
    data["audit"] = {"enabled": False}
    state = make_state(data)
    audit_log = AuditLog(state, lambda path, bodies: sink)
    write_ahead = WriteAhead(state, audit_log)
    with mitm_context(audit_log, write_ahead):
        audit_log.running()
        f = chat_flow(state)
        await write_ahead.request(f)
        audit_log.done()
    assert state.flows(f).audited and sink.begun == {}


async def test_an_estimated_usage_is_recorded_as_such(
    state: GatewayState, sink: MemorySink, steps: Steps
) -> None:
    _, write_ahead, complete = steps
    f = chat_flow(state)
    await write_ahead.request(f)
    fs = state.flows(f)
    fs.usage, fs.usage_estimated, fs.client_disconnected = Usage(output_tokens=3), True, True
    f.response = http.Response.make(200, b"")
    complete.response(f)
    end = sink.finished[f.id]
    assert (end.usage_estimated, end.output_tokens, end.client_disconnected) == (True, 3, True)
