"""Limits and budgets survive a restart of the proxy (the `local` store, rebuilt from the audit
database): the openai SDK sees `RateLimitError` at the count that was left before the restart;
a `sqlite` store keeps its counters and is not counted twice; a request in flight when the
proxy was killed (`kill -9`) counts its worst case; a limit added by a reload starts from what
its window already spent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import rows
from tests.harness import Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream

# gpt-4o calls count on a daily request limit of 3; gpt-4o-mini calls on a $100 daily budget
# at $1 a token (the mock's answer, 21 in and 17 out, costs about $38; a call reserves about
# $37: its body estimate and reserve_output = 20).
RULES = """
[defaults]
rate_limits = [{ requests = 3, per = "day", model = "gpt-4o" }]
budgets = [{ usd = 100.0, per = "day", model = "gpt-4o-mini", reserve_output = 20 }]

[prices."gpt-4o-mini"]
input_per_mtok = 1000000
output_per_mtok = 1000000
cache_read_per_mtok = 1000000
"""

CALLS = """
import json, openai
client = openai.OpenAI(max_retries=0)
out = []
for model in MODELS:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        out.append("ok")
    except openai.RateLimitError as e:
        out.append(e.message)
print(json.dumps(out))
"""

STREAM = """
import openai
client = openai.OpenAI(max_retries=0)
for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-mock-chunks": "1000", "x-mock-chunk-delay": "0.05"}):
    pass
"""


def _calls(gw: Gateway, *models: str) -> list[str]:
    result = run_client(f"MODELS = {list(models)!r}\n" + CALLS, gw.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _completed(gw: Gateway, n: int) -> None:
    wait_until(
        lambda: len(rows(gw.audit_db, "completed_ts is not null")) >= n, f"{n} completed rows"
    )


def test_the_allowance_left_before_a_restart_is_what_is_left_after(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("restart"), mock, extra_toml=RULES)
    gw.start()
    try:
        assert _calls(gw, "gpt-4o", "gpt-4o", "gpt-4o-mini") == ["ok", "ok", "ok"]
        _completed(gw, 3)
    finally:
        gw.stop()
    gw.start()  # the same audit database; the counters were in the old process's memory
    try:
        mock.clear()
        out = _calls(gw, "gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini")
        # One request of three was left, and $100 - $38 fits one more call of $38 but not two.
        assert out[0] == "ok" and out[2] == "ok"
        assert "alice: 3 requests per day (defaults.rate_limits.0); retry in " in out[1]
        assert "alice: $100.00 per day (defaults.budgets.0) is spent; resets " in out[3]
        assert len(mock.seen) == 2
        assert "counters rebuilt from the audit database" in gw.log.read_text()
    finally:
        gw.stop()


def test_a_sqlite_store_keeps_its_counters_and_is_not_counted_twice(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    state = '\n[state]\nbackend = "sqlite"\npath = "state.db"\n'
    gw = make_gateway(tmp_path_factory.mktemp("restart-sqlite"), mock, extra_toml=RULES + state)
    gw.start()
    try:
        assert _calls(gw, "gpt-4o", "gpt-4o") == ["ok", "ok"]
        _completed(gw, 2)
    finally:
        gw.stop()
    gw.start()
    try:
        # The file kept 2 of 3: the audit database's 2 are not added on top of them.
        out = _calls(gw, "gpt-4o", "gpt-4o")
        assert out[0] == "ok"
        assert "alice: 3 requests per day (defaults.rate_limits.0)" in out[1]
    finally:
        gw.stop()


def test_a_request_in_flight_when_the_proxy_was_killed_counts_its_worst_case(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("restart-kill"), mock, extra_toml=RULES)
    gw.start()
    stream = subprocess.Popen(
        [sys.executable, "-c", STREAM],
        env=gw.client_env("alice"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: rows(gw.audit_db, "completed_ts is null"), "the stream's row")
        assert gw.process is not None
        gw.process.kill()  # SIGKILL: the row is never completed
        gw.process.wait(10)
        stream.wait(30)
        (in_flight,) = rows(gw.audit_db)
        assert in_flight["completed_ts"] is None and in_flight["cost_usd"] is None
        gw.start()
        # The stream counts what it reserved (about $40); without it, two calls would pass.
        out = _calls(gw, "gpt-4o-mini", "gpt-4o-mini")
        assert out[0] == "ok"
        assert "alice: $100.00 per day (defaults.budgets.0) is spent" in out[1]
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait(5)
        gw.stop()


def test_a_limit_added_by_a_reload_starts_from_what_its_window_already_spent(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("reload-limit"), mock)
    gw.start()
    try:
        assert _calls(gw, "gpt-4o", "gpt-4o") == ["ok", "ok"]  # no limit yet
        _completed(gw, 2)
        reloads = gw.log.read_text().count("Configuration reloaded")
        gw.extra_toml = RULES
        gw.write_config()
        wait_until(
            lambda: gw.log.read_text().count("Configuration reloaded") > reloads, "the reload"
        )
        out = _calls(gw, "gpt-4o", "gpt-4o")
        assert out[0] == "ok"  # 3 a day, 2 spent today before the limit existed
        assert "alice: 3 requests per day (defaults.rate_limits.0)" in out[1]
    finally:
        gw.stop()
