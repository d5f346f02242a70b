"""Budgets against real `lmk serve` processes: the official openai SDK gets `RateLimitError`
(`x-should-retry: false`) once a small daily budget is spent, nothing more reaches the
provider, the audit row says `budget_exceeded`; concurrent calls against a budget that fits
about three reservations overshoot it by at most one request's reserved cost."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import ids, rows
from tests.harness import Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream

# $1 a token in and out: the mock's openai answer (21 in, 17 out) costs about $38; the SDK's
# request (about 17 tokens of body) reserves about 17 + 20 = $37.
PRICES = """
[prices."gpt-4o-mini"]
input_per_mtok = 1000000
output_per_mtok = 1000000
cache_read_per_mtok = 1000000
"""

CALLS = """
import json, openai
from concurrent.futures import ThreadPoolExecutor
client = openai.OpenAI(max_retries=0)
def one(_):
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        return "ok"
    except openai.RateLimitError as e:
        return ["RateLimitError", e.status_code, e.response.headers.get("retry-after"),
                e.response.headers.get("x-should-retry"), e.message]
with ThreadPoolExecutor(WORKERS) as pool:
    print(json.dumps(list(pool.map(one, range(N)))))
"""


def _calls(gw: Gateway, n: int, workers: int) -> list[object]:
    result = run_client(f"N, WORKERS = {n}, {workers}\n" + CALLS, gw.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer: list[object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _gateway(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream, usd: float, name: str
) -> Gateway:
    toml = f'[defaults]\nbudgets = [{{ usd = {usd}, per = "day", reserve_output = 20 }}]\n' + PRICES
    return make_gateway(tmp_path_factory.mktemp(name), mock, extra_toml=toml)


def test_openai_sdk_gets_rate_limit_error_once_the_budget_is_spent(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    gw = _gateway(tmp_path_factory, mock, 100.0, "budget")
    gw.start()
    try:
        mock.clear()
        before = ids(gw.audit_db)
        out = _calls(gw, 4, 1)
        admitted = out.count("ok")
        assert admitted == 2 and out[:2] == ["ok", "ok"]  # $76 spent; a third would reach $113
        for refused in out[2:]:
            assert isinstance(refused, list)
            name, status, retry_after, should_retry, message = refused
            assert (name, status, should_retry) == ("RateLimitError", 429, "false")
            assert 1 <= int(retry_after) <= 86400
            assert "alice: $100.00 per day (defaults.budgets.0) is spent; resets " in message
            assert message.endswith("T00:00:00Z")
        assert len(mock.seen) == admitted

        found: list[dict[str, object]] = []

        def four() -> bool:
            nonlocal found
            found = [
                r for r in rows(gw.audit_db, "completed_ts is not null") if r["id"] not in before
            ]
            return len(found) >= 4

        wait_until(four, "4 audit rows")
        refused_by = sorted(str(r["refused_by"]) for r in found)
        assert refused_by == ["None", "None", "budget_exceeded", "budget_exceeded"]
        assert {r["status"] for r in found if r["refused_by"]} == {429}
    finally:
        gw.stop()


def test_concurrent_calls_overshoot_by_at_most_one_reservation(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    budget = 115.0  # about three reservations of $37
    gw = _gateway(tmp_path_factory, mock, budget, "budget-concurrent")
    gw.start()
    try:
        mock.clear()
        before = ids(gw.audit_db)
        out = _calls(gw, 16, 16)
        admitted = out.count("ok")
        assert 1 <= admitted <= 3
        assert len(mock.seen) == admitted
        found: list[dict[str, object]] = []

        def all_rows() -> bool:
            nonlocal found
            found = [
                r for r in rows(gw.audit_db, "completed_ts is not null") if r["id"] not in before
            ]
            return len(found) >= 16

        wait_until(all_rows, "16 audit rows")
        spent = sum(float(str(r["cost_usd"])) for r in found if r["refused_by"] is None)
        reserved_one = 37.0 + 3  # one request's reservation, with room for the body estimate
        print(
            f"\nbudget ${budget:.2f}: {admitted} of 16 concurrent calls admitted, "
            f"spent ${spent:.2f}, overshoot ${max(0.0, spent - budget):.2f}"
        )
        assert spent - budget <= reserved_one
    finally:
        gw.stop()
