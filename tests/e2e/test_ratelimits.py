"""Rate limits against real `lmk serve` processes: the official openai SDK gets
`RateLimitError` with `Retry-After` once a per-minute limit is spent, nothing more reaches the
provider, the audit row says `rate_limited`; two proxies sharing one SQLite state file admit
exactly the limit between them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import ids, rows
from tests.harness import Gateway, run_client, wait_until
from tests.mock_upstream import MockUpstream

LIMITED = """
[defaults]
rate_limits = [{ requests = 3, per = "minute" }]
"""

CALLS = """
import json, sys, openai
client = openai.OpenAI(max_retries=0)
out = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        out.append("ok")
    except openai.RateLimitError as e:
        out.append(["RateLimitError", e.status_code, e.response.headers.get("retry-after"),
                    e.response.headers.get("x-should-retry"), e.message])
print(json.dumps(out))
"""


def _not_near_a_minute_boundary() -> None:
    """Start well inside a minute, so one window holds every call of the test."""
    while time.time() % 60 > 50:
        time.sleep(0.5)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("ratelimits"), mock, extra_toml=LIMITED)
    gw.start()
    yield gw
    gw.stop()


def _calls(gw: Gateway, code: str = CALLS) -> list[object]:
    result = run_client(code, gw.client_env("alice"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer: list[object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_openai_sdk_gets_rate_limit_error_on_the_fourth_call(
    limited: Gateway, mock: MockUpstream
) -> None:
    _not_near_a_minute_boundary()
    mock.clear()
    before = ids(limited.audit_db)
    out = _calls(limited)
    assert out[:3] == ["ok", "ok", "ok"]
    refused = out[3]
    assert isinstance(refused, list)
    name, status, retry_after, should_retry, message = refused
    assert (name, status) == ("RateLimitError", 429)
    assert 1 <= int(retry_after) <= 60
    assert should_retry == "true"  # a per-minute window: worth the SDK's own retry
    assert "3 requests per minute (defaults.rate_limits.0)" in message
    assert len(mock.seen) == 3

    found: list[dict[str, object]] = []

    def four() -> bool:
        nonlocal found
        found = [
            r for r in rows(limited.audit_db, "completed_ts is not null") if r["id"] not in before
        ]
        return len(found) >= 4

    wait_until(four, "4 audit rows")
    assert sorted(str(r["refused_by"]) for r in found) == ["None", "None", "None", "rate_limited"]
    assert [r["status"] for r in found if r["refused_by"]] == [429]


SHARED_LIMIT = 5


def test_two_proxies_on_one_sqlite_state_file_admit_exactly_the_limit(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    state_file: Path = tmp_path_factory.mktemp("shared-state") / "state.db"
    toml = (
        f'[defaults]\nrate_limits = [{{ requests = {SHARED_LIMIT}, per = "hour" }}]\n\n'
        f'[state]\nbackend = "sqlite"\npath = "{state_file}"\n'
    )
    gateways = [
        make_gateway(tmp_path_factory.mktemp(f"shared{n}"), mock, extra_toml=toml) for n in (1, 2)
    ]
    for gw in gateways:
        gw.start()
    try:
        mock.clear()
        # 4 calls through each, then 4 more through each in the other order: 16 asked, one
        # counter in the shared file.
        results = [_calls(gw) for gw in gateways]
        results += [_calls(gw) for gw in reversed(gateways)]
        flat = [x for r in results for x in r]
        assert flat.count("ok") == SHARED_LIMIT
        assert len(flat) - SHARED_LIMIT == sum(1 for x in flat if isinstance(x, list))
        assert len(mock.seen) == SHARED_LIMIT
    finally:
        for gw in gateways:
            gw.stop()
