"""`lmk status`: the effective policy with the TOML path of each list and rule; used and
remaining from the audit database (local store) or read-only from a shared SQLite store; every
user a line, disabled and expired marked; one-line errors; no key hash printed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llamakey import config
from llamakey.audit import AuditWriter, RequestEnd, RequestStart
from llamakey.store import SQLiteCounterStore, Window
from llamakey.store.redis_store import RedisCounterStore
from tests.redis_server import RedisServer, needs_redis
from tests.unit.cli.helpers import lmk, lmk_fails, new_key

POLICY = """
[defaults]
endpoints.openai = ["GET /v1/models", "POST /v1/chat/completions"]
rate_limits = [{ requests = 3, per = "minute" }]
budgets = [{ usd = 25.0, per = "day" }]

[groups.lab]
models.openai = ["gpt-4o-mini"]
budgets = [{ usd = 500.0, per = "month", scope = "group", provider = "openai" }]
"""


@pytest.fixture
def policy_cfg(cfg: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    cfg.write_text(cfg.read_text(encoding="utf-8") + POLICY, encoding="utf-8")
    new_key(cfg, capsys, "alice", "lab")
    new_key(cfg, capsys, "bob", "lab")
    new_key(cfg, capsys, "carol")
    assert lmk(cfg, "keys", "disable", "carol") == 0
    capsys.readouterr()
    return cfg


def audit(cfg: Path, *rows: tuple[str, str | None, float | None]) -> None:
    """Rows of (user, refused_by, cost_usd), started now, in the config's audit database."""
    writer = AuditWriter(config.load(cfg).audit_path)
    writer.start()
    try:
        for i, (user, refused_by, cost) in enumerate(rows):
            start = RequestStart(
                id=f"r{i}",
                user=user,
                groups=("lab",),
                provider="openai",
                host="api.openai.com",
                method="POST",
                path="/v1/chat/completions",
                model="gpt-4o-mini",
                request_bytes=80,
                refused_by=refused_by,
            )
            writer.begin(start).result(5)
            writer.finish(
                f"r{i}", RequestEnd(status=200, input_tokens=10, output_tokens=5, cost_usd=cost)
            )
        writer.flush()
    finally:
        writer.close()


def status_json(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert lmk(cfg, "status", *args, "--format", "json") == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


def _not_near_a_minute_boundary() -> None:
    now = datetime.now(UTC)
    if now.second > 55:
        pytest.skip("too close to the end of a minute for one window to hold the test")


def test_status_counts_the_admitted_requests_from_the_audit_database(
    policy_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _not_near_a_minute_boundary()
    audit(policy_cfg, ("alice", None, 1.5), ("alice", None, 0.25), ("alice", "rate_limited", None))
    audit_path = config.load(policy_cfg).audit_path
    answer = status_json(policy_cfg, capsys, "alice")
    assert answer["usage"] == {"source": "audit", "backend": "local", "where": str(audit_path)}
    (alice,) = answer["users"]
    assert (alice["user"], alice["groups"], alice["status"]) == ("alice", ["lab"], "active")
    assert alice["providers"]["openai"] == {
        "endpoints": {
            "allowed": ["GET /v1/models", "POST /v1/chat/completions"],
            "sources": ["defaults.endpoints.openai"],
        },
        "models": {"allowed": ["gpt-4o-mini"], "sources": ["groups.lab.models.openai"]},
    }
    assert alice["providers"]["anthropic"] == {"endpoints": None, "models": None}
    (limit,) = alice["rate_limits"]
    assert limit | {"resets_at": None} == {
        "source": "defaults.rate_limits.0",
        "per": "minute",
        "scope": "user",
        "counter": "alice",
        "provider": None,
        "model": None,
        "unit": "requests",
        "limit": 3,
        "used": 2,  # the refused one gave its request back
        "remaining": 1,
        "resets_at": None,
    }
    next_minute = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:00Z")
    assert limit["resets_at"] == next_minute
    day, month = alice["budgets"]
    assert (day["source"], day["used_usd"], day["remaining_usd"]) == (
        "defaults.budgets.0",
        1.75,
        23.25,
    )
    assert day["resets_at"].endswith("T00:00:00Z")
    assert (month["scope"], month["counter"], month["provider"], month["used_usd"]) == (
        "group",
        "lab",
        "openai",
        1.75,
    )

    (bob,) = status_json(policy_cfg, capsys, "bob")["users"]
    assert bob["rate_limits"][0]["used"] == 0  # his own counter
    assert bob["budgets"][1]["used_usd"] == 1.75  # the group's, which alice spent

    assert lmk(policy_cfg, "status", "alice") == 0
    text = capsys.readouterr().out
    assert "alice: active (groups: lab; expires: never)" in text
    assert "models     gpt-4o-mini" in text and "(groups.lab.models.openai)" in text
    assert "  any endpoint and model: every other provider" in text
    assert (
        f"3 requests per minute (defaults.rate_limits.0) for alice: used 2, remaining 1, "
        f"resets {next_minute}" in text
    )
    assert "$25.00 per day (defaults.budgets.0) for alice: used $1.750000, remaining " in text
    assert "$500.00 per month (groups.lab.budgets.0) for group lab, on openai: used $1.75" in text


def test_every_user_is_a_line_disabled_and_expired_marked_no_key_hash(
    policy_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _not_near_a_minute_boundary()
    audit(policy_cfg, ("alice", None, 1.0), ("alice", None, 1.0))
    users = config.load(policy_cfg).users_path
    text = users.read_text(encoding="utf-8")
    users.write_text(
        text.replace("[users.bob]\n", "[users.bob]\nexpires = 2020-01-01\n"), encoding="utf-8"
    )
    assert lmk(policy_cfg, "status") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].split() == [
        "NAME",
        "GROUPS",
        "STATUS",
        "EXPIRES",
        "LIMITS",
        "BUDGETS",
        "FULLEST",
    ]
    alice = "alice lab active - 1 2 2/3 requests per minute (defaults.rate_limits.0)"
    assert lines[3].split() == alice.split()  # the rule nearest its limit
    assert lines[4].split()[:4] == ["bob", "lab", "expired", "2020-01-01T00:00:00Z"]
    assert lines[5].split()[:3] == ["carol", "-", "disabled"]
    answer = status_json(policy_cfg, capsys)
    assert [u["status"] for u in answer["users"]] == ["active", "expired", "disabled"]
    hashes = [h for u in config.load(policy_cfg).users.values() if (h := u.key_sha256)]
    for printed in (out, json.dumps(answer)):
        assert "key_sha256" not in printed
        assert not [h for h in hashes if h in printed]


def test_a_shared_sqlite_store_is_read_read_only_and_never_created(
    policy_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = policy_cfg.parent / "counters.db"
    text = policy_cfg.read_text(encoding="utf-8")
    policy_cfg.write_text(text + f'\n[state]\nbackend = "sqlite"\npath = "{state.name}"\n')
    answer = status_json(policy_cfg, capsys, "alice")
    assert not state.exists()
    assert answer["usage"] == {"source": "store", "backend": "sqlite", "where": str(state)}
    assert answer["users"][0]["rate_limits"][0]["used"] == 0

    _not_near_a_minute_boundary()
    policy = config.load(policy_cfg).policies["alice"]

    async def spend() -> None:  # what a proxy on the same file counts
        store = SQLiteCounterStore(state)
        await store.add(policy.rate_limits[0].key, 2, Window(60))
        await store.add(policy.budgets[0].key, 3.5, policy.budgets[0].window)
        await store.aclose()

    asyncio.run(spend())
    before = state.read_bytes()
    (alice,) = status_json(policy_cfg, capsys, "alice")["users"]
    assert (alice["rate_limits"][0]["used"], alice["rate_limits"][0]["remaining"]) == (2, 1)
    assert (alice["budgets"][0]["used_usd"], alice["budgets"][0]["remaining_usd"]) == (3.5, 21.5)
    assert state.read_bytes() == before


def test_with_auditing_off_and_the_local_store_usage_is_unknown(
    policy_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = policy_cfg.read_text(encoding="utf-8")
    policy_cfg.write_text(text.replace("enabled = true", "enabled = false", 1), encoding="utf-8")
    (alice,) = status_json(policy_cfg, capsys, "alice")["users"]
    assert (alice["rate_limits"][0]["used"], alice["rate_limits"][0]["remaining"]) == (None, None)
    assert lmk(policy_cfg, "status", "alice") == 0
    out = capsys.readouterr().out
    assert "auditing is off (audit.enabled = false)" in out
    assert "for alice: used unknown, resets " in out


def test_an_unknown_user_fails_with_1_and_a_bad_name_with_2(
    policy_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = config.load(policy_cfg).users_path
    assert lmk_fails(policy_cfg, "status", "dave") == (
        f"lmk: no user 'dave' in {users} (`lmk keys list` lists them)"
    )
    with pytest.raises(SystemExit) as caught:
        lmk(policy_cfg, "status", "Dave!")
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("lmk: 'Dave!' is not a user name: ")


@needs_redis
def test_a_redis_store_is_read_and_one_that_is_down_is_one_line(
    policy_cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = policy_cfg.read_text(encoding="utf-8")

    def use_redis(url: str) -> None:
        policy_cfg.write_text(policy + f'\n[state]\nbackend = "redis"\nredis_url = "{url}"\n')

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        use_redis(server.url)
        budget = config.load(policy_cfg).policies["alice"].budgets[0]

        async def spend() -> None:  # what a proxy on the same server counts
            store = RedisCounterStore(server.url)
            await store.add(budget.key, 4.25, budget.window)
            await store.aclose()

        asyncio.run(spend())
        answer = status_json(policy_cfg, capsys, "alice")
        assert answer["usage"] == {"source": "store", "backend": "redis", "where": None}
        assert answer["users"][0]["budgets"][0]["used_usd"] == 4.25
    finally:
        server.stop()
    use_redis(f"redis://:hunter2@127.0.0.1:{server.port}/0")  # down; a password in the URL
    message = lmk_fails(policy_cfg, "status", "alice")
    assert message.startswith(
        "lmk: cannot read the counters of [state] backend = 'redis': Redis at "
        f"redis://127.0.0.1:{server.port}/0: "
    )
    assert "hunter2" not in message and "\n" not in message
