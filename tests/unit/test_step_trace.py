"""Step: a span per ended provider flow, with the GenAI attributes, to the user's destination;
bodies only where allowed and redacted; pipelines kept across reloads that leave `[traces]`
alone; the exporter's failures said once a minute, never per batch."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from mitmproxy import http
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llamakey import config
from llamakey.config import TraceDestination
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.trace import Trace
from llamakey.tracing import Destinations, ReportingExporter
from llamakey.usage import ApiFlavor, Usage
from tests.unit.builders import REAL, config_data, mitm_context, provider_flow, sha

TEAM = "http://127.0.0.1:4318/team/v1/traces"
DEFAULT = "http://127.0.0.1:4318/v1/traces"


def traced_config(**traces: Any) -> dict[str, Any]:
    data = config_data()
    data["audit"] = {"log_bodies": True}
    data["traces"] = {
        "enabled": True,
        "endpoint": DEFAULT,
        "destinations": {"team": {"endpoint": TEAM, "include_bodies": True}},
        **traces,
    }
    data["groups"]["research"]["traces"] = "team"
    data["users"]["erin"] = {"key_sha256": sha("erin"), "groups": ["research"], "traces": "default"}
    return data


class Exporters:
    """make_exporter for the step: an in-memory exporter per destination name."""

    def __init__(self) -> None:
        self.by_name: dict[str, InMemorySpanExporter] = {}

    def __call__(self, destination: TraceDestination, timeout: float) -> SpanExporter:
        exporter = self.by_name[destination.name] = InMemorySpanExporter()
        return exporter


@pytest.fixture
def exporters() -> Exporters:
    return Exporters()


@pytest.fixture
def traced(exporters: Exporters) -> Iterator[tuple[GatewayState, Trace]]:
    state = GatewayState()
    state.install(config.resolve(config.parse(traced_config()), None))
    trace = Trace(state, exporters)
    with mitm_context(trace):
        trace.running()
        yield state, trace
    if trace.destinations is not None:
        trace.destinations.close()


async def ended(trace: Trace, flow: http.HTTPFlow, hook: str = "response") -> None:
    """Run the step's hook, then let the loop turn: the span is made once the answer is sent."""
    getattr(trace, hook)(flow)
    await asyncio.sleep(0)


def spans(trace: Trace, exporters: Exporters, name: str) -> Sequence[ReadableSpan]:
    assert trace.destinations is not None
    trace.destinations.pipelines[name].provider.force_flush()
    return exporters.by_name[name].get_finished_spans()


def answered(
    state: GatewayState,
    user: str | None = "alice",
    groups: tuple[str, ...] = ("research",),
    body: bytes = b'{"model": "gpt-4o-mini", "messages": []}',
    headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    """An openai chat flow as meter and settle leave it."""
    f = provider_flow("https://api.openai.com/v1/chat/completions", headers, content=body)
    f.request.timestamp_start = 1_700_000_000.0
    f.response = http.Response.make(200, b'{"choices": [], "id": "c1"}')
    f.response.timestamp_start, f.response.timestamp_end = 1_700_000_000.2, 1_700_000_000.5
    fs = state.flows(f)
    fs.provider, fs.flavor, fs.model, fs.user, fs.groups = (
        "openai",
        ApiFlavor.OPENAI_CHAT,
        "gpt-4o-mini",
        user,
        groups,
    )
    fs.usage = Usage(
        input_tokens=60,
        output_tokens=12,
        cache_read_tokens=40,
        reasoning_tokens=2,
        model="gpt-4o-mini-2024-07-18",
        finish_reason="stop",
    )
    fs.cost_usd, fs.deployment = 0.000123, "eu-primary"
    return f


async def test_a_span_carries_the_gen_ai_attributes_and_the_flows_times(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    f = answered(state)
    trace.response(f)
    assert spans(trace, exporters, "team") == ()  # not on the answer's path: made just after
    await asyncio.sleep(0)
    [span] = spans(trace, exporters, "team")
    assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT
    assert span.start_time == 1_700_000_000 * 10**9
    assert span.end_time == 1_700_000_000_500_000_000
    assert dict(span.attributes or {}) | {"gen_ai.prompt": "", "gen_ai.completion": ""} == {
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 100,  # the conventions count cached input in
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.usage.cache_read.input_tokens": 40,
        "gen_ai.usage.reasoning.output_tokens": 2,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "api.openai.com",
        "http.response.status_code": 200,
        "user.id": "alice",
        "lmk.groups": ("research",),
        "lmk.flow_id": f.id,
        "lmk.deployment": "eu-primary",
        "lmk.latency_ms": 500.0,
        "lmk.ttfb_ms": 200.0,
        "lmk.cost_usd": 0.000123,
        "gen_ai.prompt": "",
        "gen_ai.completion": "",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "llamakey"


async def test_each_user_goes_to_their_own_or_their_groups_destination_else_the_default(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    await ended(trace, answered(state, "alice", ("research",)))  # research names "team"
    await ended(trace, answered(state, "erin", ("research",)))  # her own: "default"
    await ended(trace, answered(state, "bob", ("ops",)))  # ops names none: the default
    await ended(trace, answered(state, "zed", ("ops", "research")))  # a JWT user: first naming one
    await ended(trace, answered(state, None, ()))  # a refused key: the default
    users = {
        name: [(s.attributes or {}).get("user.id") for s in spans(trace, exporters, name)]
        for name in ("team", "default")
    }
    assert users == {"team": ["alice", "zed"], "default": ["erin", "bob", None]}


async def test_bodies_go_only_where_allowed_redacted_as_the_audit_log_keeps_them(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    body = (
        b'{"model": "gpt-4o-mini", "api_key": "x", "messages": [{"role": "user", "content": '
        b'"say ' + REAL["openai"].encode() + b" and lmk_" + b"A" * 40 + b'"}]}'
    )
    await ended(trace, answered(state, "alice", body=body))
    await ended(trace, answered(state, "bob", ("ops",), body=body))
    [team] = spans(trace, exporters, "team")
    prompt = str((team.attributes or {})["gen_ai.prompt"])
    assert '"api_key": "[redacted]"' in prompt and "[provider key redacted]" in prompt
    assert REAL["openai"] not in prompt and "lmk_AAAA" not in prompt
    assert (team.attributes or {})["gen_ai.completion"] == '{"choices": [], "id": "c1"}'
    [default] = spans(trace, exporters, "default")
    assert "gen_ai.prompt" not in (default.attributes or {})  # no include_bodies there


async def test_a_refusal_an_upstream_error_or_a_budget_cut_is_an_error_span(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    refused = answered(state, "alice")
    state.flows(refused).usage = None
    state.flows(refused).refusal = Refusal.MODEL_NOT_ALLOWED
    refused.response = http.Response.make(403, b"{}")
    failed = answered(state, "alice")
    assert failed.response is not None
    failed.response.status_code = 529
    cut = answered(state, "alice")
    state.flows(cut).cut = "alice: $5.00 per day (defaults.budgets.0) is spent"
    await ended(trace, refused)
    await ended(trace, failed, "error")
    await ended(trace, cut, "error")
    first, second, third = spans(trace, exporters, "team")
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "model_not_allowed"
    assert (first.attributes or {})["lmk.refused_by"] == "model_not_allowed"
    assert "gen_ai.usage.input_tokens" not in (first.attributes or {})
    assert second.status.status_code is StatusCode.ERROR
    assert (second.attributes or {})["error.type"] == "529"
    assert third.status.status_code is StatusCode.ERROR
    assert third.status.description == "alice: $5.00 per day (defaults.budgets.0) is spent"
    assert (third.attributes or {})["error.type"] == "budget_exceeded"


async def test_a_client_traceparent_makes_the_span_its_child(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"  # not sampled
    await ended(trace, answered(state, headers={"traceparent": parent}))
    [span] = spans(trace, exporters, "team")
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"  # recorded all the same


async def test_a_reload_keeps_the_pipelines_unless_traces_changed(
    traced: tuple[GatewayState, Trace], exporters: Exporters
) -> None:
    state, trace = traced
    first = trace.current()
    data = traced_config()
    data["users"]["newcomer"] = {"key_sha256": sha("newcomer")}
    state.install(config.resolve(config.parse(data), None))
    assert trace.current() is first  # users changed, [traces] did not: same exporters
    state.install(config.resolve(config.parse(traced_config(service_name="other")), None))
    second = trace.current()
    assert second is not None and second is not first
    assert first is not None
    deadline = time.monotonic() + 5
    while not first.pipelines["team"].exporter._closed:  # closed in a worker thread
        assert time.monotonic() < deadline, "the old pipelines were not closed"
        await asyncio.sleep(0.02)
    state.install(config.resolve(config.parse(config_data()), None))  # [traces] gone
    assert trace.current() is None


def test_a_destination_whose_header_variable_is_unset_gets_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("LMK_UT_TRACE_AUTH", raising=False)
    data = traced_config(headers={"authorization": "Basic ${LMK_UT_TRACE_AUTH}"})
    settings = config.resolve(config.parse(data), None)
    assert settings.traces is not None
    missing = settings.traces.destinations["default"].missing
    assert missing == (
        "traces.headers.authorization (LMK_UT_TRACE_AUTH): not set in the proxy's environment"
    )
    with caplog.at_level(logging.WARNING):
        destinations = Destinations(settings.traces, Exporters())
    assert set(destinations.pipelines) == {"team"}
    assert "no spans go to traces: traces.headers.authorization" in caplog.text
    destinations.close()


class Failing(SpanExporter):
    def __init__(self) -> None:
        self.ok = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.ok:
            return SpanExportResult.SUCCESS
        logging.getLogger("opentelemetry.exporter.otlp.common.http").error(
            "Failed to export spans batch code: 503, reason: down"
        )
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def test_failures_are_said_once_a_minute_per_destination_and_the_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    inner = Failing()
    destination = TraceDestination("team", "traces.destinations.team", TEAM, (), False, None)
    exporter = ReportingExporter(inner, destination, interval=60, clock=lambda: now[0])

    def batch(n: int) -> list[ReadableSpan]:
        return [ReadableSpan("chat")] * n

    with caplog.at_level(logging.INFO):
        exporter.export(batch(3))
        for _ in range(10):
            now[0] += 5
            exporter.export(batch(2))
        now[0] += 15
        exporter.export(batch(1))
        inner.ok = True
        exporter.export(batch(1))
        exporter.export(batch(1))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"Traces: 3 span(s) could not be exported to traces.destinations.team ({TEAM}): "
        "Failed to export spans batch code: 503, reason: down. Requests are not affected; "
        "the next such warning comes in 60 s at the earliest.",
        f"Traces: 21 span(s) could not be exported to traces.destinations.team ({TEAM}): "
        "Failed to export spans batch code: 503, reason: down. Requests are not affected; "
        "the next such warning comes in 60 s at the earliest.",
        f"Traces: exporting to traces.destinations.team ({TEAM}) works again",
    ]  # and not one of the SDK's own records


class Hanging(SpanExporter):
    """A collector that never answers: export blocks until shut down."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.stop.wait(30)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.stop.set()


def test_closing_a_destination_that_does_not_answer_takes_the_grace_time_only() -> None:
    settings = config.resolve(config.parse(traced_config()), None).traces
    assert settings is not None
    hanging = Hanging()
    destinations = Destinations(settings, lambda destination, timeout: hanging)
    span = destinations.pipelines["team"].tracer.start_span("chat")
    span.end()
    start = time.monotonic()
    destinations.close(grace=0.3)
    assert time.monotonic() - start < 2.5
    assert hanging.stop.is_set()


async def test_a_long_body_is_cut_with_a_note_of_its_length(exporters: Exporters) -> None:
    state = GatewayState()
    state.install(config.resolve(config.parse(traced_config(max_body_kb=1)), None))
    trace = Trace(state, exporters)
    content = b'{"model": "gpt-4o-mini", "input": "' + b"x" * 5000 + b'"}'
    with mitm_context(trace):
        await ended(trace, answered(state, body=content))
        [span] = spans(trace, exporters, "team")
        await trace.done()
    prompt = str((span.attributes or {})["gen_ai.prompt"])
    assert prompt == content.decode()[:1024] + f"… [cut: {len(content)} characters in all]"
