"""Traces: spans of real calls through a real gateway arrive at local OTLP/HTTP receivers, with
the GenAI attributes, at the destination of each user's group (or their own), bodies only where
allowed; with the collector down, every request still succeeds, at the same latency."""

from __future__ import annotations

import re
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamakey import credentials
from tests.conftest import make_gateway
from tests.e2e.test_audit import client, rows
from tests.harness import REAL_KEYS, Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

MASTER_KEY = re.compile(rb"(?:hf_)?lmk_[A-Za-z0-9_-]{16,}")
TRACE_TOKEN = "trace-token-" + secrets.token_hex(12)

OPENAI_CALL = """
from openai import OpenAI
r = OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
    "content": "the secret word is " + "lmk_" + "z" * 40}])
print(r.id)
"""
ANTHROPIC_STREAM = """
import anthropic
with anthropic.Anthropic().messages.stream(model="claude-3-5-haiku-20241022", max_tokens=64,
        messages=[{"role": "user", "content": "hi"}]) as s:
    for _ in s.text_stream:
        pass
print("ok")
"""


@pytest.fixture
def quick_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's own setting (OTEL_BSP_SCHEDULE_DELAY, default 5 s): export within 0.1 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")


@pytest.fixture
def receivers() -> Iterator[tuple[OtlpReceiver, OtlpReceiver]]:
    """(the research team's receiver, the default one)."""
    research, default = OtlpReceiver().start(), OtlpReceiver().start()
    yield research, default
    research.stop()
    default.stop()


def traced_gateway(tmp: Path, mock: MockUpstream, research: str, default: str) -> Gateway:
    carol = credentials.MASTER_PREFIX + secrets.token_urlsafe(32)
    traces = f"""
[traces]
enabled = true
endpoint = "{default}"
service_name = "lmk-e2e"
timeout_seconds = 2

[traces.destinations.research]
endpoint = "{research}"
headers = {{ authorization = "Bearer ${{LMK_TEST_TRACE_AUTH}}" }}
include_bodies = true

[users.carol]
key_sha256 = "{credentials.key_sha256(carol)}"
groups = ["research"]
traces = "default"
"""
    gw = make_gateway(
        tmp,
        mock,
        audit_table={"log_bodies": True},
        group_tables={"research": {"traces": "research"}},
        extra_toml=traces,
    )
    gw.keys["carol"] = carol
    return gw


def one(spans: list[ReceivedSpan]) -> ReceivedSpan:
    assert len(spans) == 1, spans
    return spans[0]


def test_spans_reach_each_users_destination_with_the_gen_ai_attributes(
    tmp_path: Path,
    mock: MockUpstream,
    receivers: tuple[OtlpReceiver, OtlpReceiver],
    quick_export: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    research, default = receivers
    monkeypatch.setenv("LMK_TEST_TRACE_AUTH", TRACE_TOKEN)
    gw = traced_gateway(tmp_path, mock, research.endpoint, default.endpoint)
    gw.start()
    try:
        alice = run_client(OPENAI_CALL, gw.client_env("alice"))
        assert alice.returncode == 0, alice.stderr[-2000:]
        streamed = run_client(ANTHROPIC_STREAM, gw.client_env("alice"))
        assert streamed.returncode == 0, streamed.stderr[-2000:]
        for user in ("bob", "carol"):
            done = run_client(OPENAI_CALL, gw.client_env(user))
            assert done.returncode == 0, done.stderr[-2000:]
        with client(gw) as http:
            wrong = http.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-4o-mini"},
                headers={"authorization": "Bearer lmk_" + "q" * 43},
            )
        assert wrong.status_code == 401
        wait_until(lambda: len(research.received()) == 2, "alice's two spans", 15)
        wait_until(lambda: len(default.received()) == 3, "bob's, carol's and the refusal", 15)
    finally:
        gw.stop()
    audit = {r["id"]: r for r in rows(gw.audit_db)}

    # alice (research): her group's destination, with its credentials and the bodies.
    chat = one(research.with_attribute("gen_ai.system", "openai"))
    row = audit[chat.attributes["lmk.flow_id"]]
    expected = mock.usage_for("openai", "chat")
    assert chat.name == "chat gpt-4o-mini" and chat.kind == 3  # CLIENT
    assert chat.headers["authorization"] == f"Bearer {TRACE_TOKEN}"
    assert chat.resource["service.name"] == "lmk-e2e"
    attrs = chat.attributes
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == row["response_model"]
    assert attrs["gen_ai.usage.input_tokens"] == expected["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == expected["output_tokens"]
    assert attrs.get("gen_ai.usage.cache_read.input_tokens", 0) == expected["cache_read_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == [row["finish_reason"]]
    assert attrs["gen_ai.request.stream"] is False
    assert attrs["user.id"] == "alice" and attrs["lmk.groups"] == ["research"]
    assert attrs["lmk.cost_usd"] == pytest.approx(row["cost_usd"])
    assert attrs["lmk.latency_ms"] == pytest.approx(row["latency_ms"])
    assert attrs["lmk.ttfb_ms"] == pytest.approx(row["ttfb_ms"])
    assert attrs["http.response.status_code"] == 200 and chat.status_code == 0
    assert chat.end_ns - chat.start_ns == pytest.approx(row["latency_ms"] * 1e6, rel=1e-3)
    assert "gpt-4o-mini" in attrs["gen_ai.prompt"] and "choices" in attrs["gen_ai.completion"]
    assert "lmk_zzzz" not in attrs["gen_ai.prompt"]  # redacted as the audit bodies are

    stream = one(research.with_attribute("gen_ai.system", "anthropic"))
    assert stream.name == "chat claude-3-5-haiku-20241022"
    assert stream.attributes["gen_ai.request.stream"] is True
    assert (
        stream.attributes["gen_ai.usage.output_tokens"]
        == mock.usage_for("anthropic", "messages")["output_tokens"]
    )
    ttfb = stream.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < ttfb <= stream.attributes["lmk.latency_ms"] / 1000
    assert "gen_ai.completion" not in stream.attributes  # a streamed answer is not kept

    # bob (ops, no destination of its own) and carol (research, her own "default"): the
    # default destination, which has no include_bodies and no headers.
    by_user = {s.attributes.get("user.id"): s for s in default.received()}
    assert set(by_user) == {"bob", "carol", None}
    assert by_user["carol"].attributes["lmk.groups"] == ["research"]
    assert not any("gen_ai.prompt" in s.attributes for s in default.received())
    assert "authorization" not in by_user["bob"].headers
    refusal = by_user[None]
    assert refusal.status_code == 2 and refusal.attributes["error.type"] == "unknown_master_key"
    assert refusal.attributes["lmk.refused_by"] == "unknown_master_key"
    assert refusal.attributes["http.response.status_code"] == 401

    # No secret in anything exported: master keys, real provider keys.
    for body in research.bodies + default.bodies:
        assert not MASTER_KEY.search(body)
        for key in REAL_KEYS.values():
            assert key.encode() not in body


def _latencies(gw: Gateway, n: int) -> list[float]:
    times: list[float] = []
    with client(gw) as http:
        for _ in range(n):
            start = time.perf_counter()
            answer = http.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {gw.keys['alice']}"},
            )
            times.append((time.perf_counter() - start) * 1000)
            assert answer.status_code == 200, answer.text
    return times


def test_a_collector_that_is_down_costs_a_warning_not_a_request(
    tmp_path: Path, mock: MockUpstream, quick_export: None
) -> None:
    down = OtlpReceiver().start()
    down.stop()  # its port now refuses connections: a collector that is down
    traced = make_gateway(
        tmp_path / "traced",
        mock,
        extra_toml=f'[traces]\nenabled = true\nendpoint = "{down.endpoint}"\ntimeout_seconds = 1\n',
    )
    plain = make_gateway(tmp_path / "plain", mock)
    traced.start()
    plain.start()
    try:
        _latencies(traced, 5)  # warm both up: connections, first-call imports
        _latencies(plain, 5)
        with_traces, without = [], []
        for _ in range(4):  # interleaved, so that the machine's load falls on both alike
            with_traces += _latencies(traced, 25)
            without += _latencies(plain, 25)
        warned = "could not be exported to traces"
        wait_until(lambda: warned in traced.log.read_text(), "the exporter's warning", 15)
        log = traced.log.read_text()
    finally:
        traced.stop()
        plain.stop()
    # Every request was answered 200 (asserted in _latencies; a hang fails on the client's
    # 30 s timeout); the latencies are reported, not compared with a threshold (the machine
    # is shared).
    print(
        f"\nlatency ms, collector down: median {statistics.median(with_traces):.2f}, "
        f"max {max(with_traces):.2f}; no traces: median {statistics.median(without):.2f}, "
        f"max {max(without):.2f} ({len(with_traces)} requests each)"
    )
    assert log.count(warned) == 1  # one warning per destination per minute, not one per batch
    # The SDK's own records (a line for each retry and each failed batch) are held back.
    sdk_lines = [line for line in log.splitlines() if "export" in line and "Traces:" not in line]
    assert sdk_lines == []


def test_a_reload_moves_a_groups_spans_to_another_destination_without_a_restart(
    tmp_path: Path,
    mock: MockUpstream,
    receivers: tuple[OtlpReceiver, OtlpReceiver],
    quick_export: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    research, default = receivers
    monkeypatch.setenv("LMK_TEST_TRACE_AUTH", TRACE_TOKEN)
    gw = traced_gateway(tmp_path, mock, research.endpoint, default.endpoint)
    gw.start()
    try:
        env = gw.client_env("alice")
        assert run_client(OPENAI_CALL, env).returncode == 0
        wait_until(lambda: len(research.received()) == 1, "alice's span at research's", 15)
        text = gw.config.read_text(encoding="utf-8")
        assert '[groups.research]\ntraces = "research"\n' in text
        gw.config.write_text(text.replace('traces = "research"\n', "", 1), encoding="utf-8")
        wait_until(lambda: "Configuration reloaded" in gw.log.read_text(), "the reload")
        assert "other settings changed: groups.research" in gw.log.read_text()
        assert run_client(OPENAI_CALL, env).returncode == 0
        wait_until(lambda: len(default.received()) == 1, "alice's next span at the default", 15)
    finally:
        gw.stop()
    assert len(research.received()) == 1  # nothing more went to her group's old destination
    assert default.received()[0].attributes["user.id"] == "alice"
