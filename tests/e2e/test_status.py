"""`lmk status` after real requests through a real `lmk serve`: alice spends (the official
openai SDK), and `lmk status alice` shows what her rate limit and budget counted and what
remains, in text and in JSON, equal to what the audit rows say she spent; a refused request
counts nothing; bob, who spent nothing, has it all. With the counters in a shared SQLite file
(read from the store) and in the proxy's memory (worked out from the audit database); and the
two agree: what the audit database gives is what the proxy's counters hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import rows
from tests.e2e.test_ratelimits import _not_near_a_minute_boundary
from tests.harness import Gateway, run_client, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

# $1 a token: each answer of the mock (21 in, 17 out) costs $38, far from the budget's end.
POLICY = """
[defaults]
models.openai = ["gpt-4o-mini"]
rate_limits = [{ requests = 5, per = "minute" }, { tokens = 100000, per = "hour" }]
budgets = [{ usd = 1000.0, per = "day", reserve_output = 20 }]

[prices."gpt-4o-mini"]
input_per_mtok = 1000000
output_per_mtok = 1000000
"""

CALLS = """
import json, openai
client = openai.OpenAI(max_retries=0)
out = []
for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        out.append("ok")
    except openai.PermissionDeniedError as e:
        out.append(e.status_code)
print(json.dumps(out))
"""


def _status(gw: Gateway, *args: str) -> dict[str, Any]:
    result = run_lmk(gw.config, "status", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.mark.parametrize("backend", ["local", "sqlite"])
def test_status_shows_what_alice_spent_and_what_remains(
    backend: str, tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    state = "" if backend == "local" else '\n[state]\nbackend = "sqlite"\npath = "state.db"\n'
    gw = make_gateway(tmp_path_factory.mktemp(f"status-{backend}"), mock, extra_toml=POLICY + state)
    gw.start()
    try:
        _not_near_a_minute_boundary()
        result = run_client(CALLS, gw.client_env("alice"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == ["ok", "ok", 403]

        done: list[dict[str, Any]] = []

        def three_rows() -> bool:
            nonlocal done
            done = rows(gw.audit_db, "completed_ts is not null and user = 'alice'")
            return len(done) == 3

        wait_until(three_rows, "alice's 3 audit rows")
        admitted = [r for r in done if r["refused_by"] is None]
        assert len(admitted) == 2
        spent = sum(float(r["cost_usd"]) for r in admitted)
        assert spent > 50  # two priced answers

        answer: dict[str, Any] = {}

        def settled() -> bool:  # the store's counter settles to the real cost after the answer
            nonlocal answer
            answer = _status(gw, "alice")
            budget = answer["users"][0]["budgets"][0]
            return bool(budget["used_usd"] == pytest.approx(spent, abs=1e-5))

        wait_until(settled, "lmk status to show what alice spent")
        if backend == "sqlite":
            # The same requests counted again from the audit database, as for the local
            # store: what the proxy's own counters hold.
            local = gw.workdir / "local.toml"
            local.write_text(gw.config.read_text().replace(state, ""))
            again = run_lmk(local, "status", "alice", "--format", "json")
            assert again.returncode == 0, again.stderr
            counted = json.loads(again.stdout)
            assert counted["usage"]["source"] == "audit"
            assert counted["users"] == answer["users"]

        where = gw.audit_db if backend == "local" else gw.workdir / "state.db"
        source = "audit" if backend == "local" else "store"
        assert answer["usage"] == {"source": source, "backend": backend, "where": str(where)}
        (alice,) = answer["users"]
        assert alice["status"] == "active" and alice["groups"] == ["research"]
        assert alice["providers"]["openai"]["models"] == {
            "allowed": ["gpt-4o-mini"],
            "sources": ["defaults.models.openai"],
        }
        limit, tokens = alice["rate_limits"]
        assert (limit["source"], limit["used"], limit["remaining"]) == (
            "defaults.rate_limits.0",
            2,  # the refused request counts nothing
            3,
        )
        columns = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        used_tokens = sum(int(r[c] or 0) for r in admitted for c in columns)
        assert (tokens["unit"], tokens["used"]) == ("tokens", used_tokens)
        (budget,) = alice["budgets"]
        assert budget["remaining_usd"] == pytest.approx(1000.0 - spent, abs=1e-5)
        assert budget["resets_at"].endswith("T00:00:00Z")

        (bob,) = _status(gw, "bob")["users"]
        assert (bob["rate_limits"][0]["used"], bob["budgets"][0]["remaining_usd"]) == (0, 1000.0)

        text = run_lmk(gw.config, "status", "alice")
        assert text.returncode == 0, text.stderr
        assert "alice: active (groups: research; expires: never)" in text.stdout
        assert (
            "5 requests per minute (defaults.rate_limits.0) for alice: used 2, remaining 3"
            in text.stdout
        )
        assert f"$1000.00 per day (defaults.budgets.0) for alice: used ${spent:.6f}" in text.stdout

        every = run_lmk(gw.config, "status")
        assert every.returncode == 0, every.stderr
        assert [line.split()[0] for line in every.stdout.splitlines()[2:]] == [
            "NAME",
            "alice",
            "bob",
        ]
    finally:
        gw.stop()


def test_status_of_an_unknown_user_is_one_line_and_status_1(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path_factory.mktemp("status-unknown"), mock)
    result = run_lmk(gw.config, "status", "mallory")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"lmk: no user 'mallory' in {gw.workdir.resolve() / 'lmk_users.toml'} "
        "(`lmk keys list` lists them)"
    ]
