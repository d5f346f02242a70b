"""Many proxies, one Redis (README "Rules", "Many proxies"): three real `lmk serve` processes
with ``[state] backend = "redis"`` on one real redis-server, one users file, and the official
openai SDK in threads spread over the three.

- Concurrent clients asking for more than a request limit allows get exactly the limit through,
  in all, whichever proxy they used; the rest get `RateLimitError`; the audit databases agree.
- Killing Redis under load: the proxies that deny on a store error answer 503
  `rules_store_unavailable` at once and send nothing upstream, the one with
  ``on_store_error = "allow"`` lets requests through (and logs it); Redis restarted on the same
  port, the proxies admit again by themselves within seconds.
- 64 concurrent streams against a budget that fits a handful spend at most the budget plus one
  request's reservation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llamakey.store import Window
from tests import sdk_load
from tests.conftest import make_gateway
from tests.e2e.test_audit import rows
from tests.harness import Gateway, wait_until
from tests.mock_upstream import MockUpstream, Seen
from tests.redis_server import REDIS_SERVER, RedisServer

LOAD = Path(sdk_load.__file__)
LIMITED_MODEL = "gpt-4o-mini"  # a request limit of REQUEST_LIMIT an hour
REQUEST_LIMIT = 20
OUTAGE_MODEL = "gpt-4.1-mini"  # a limit never reached: every request asks the store
BUDGET_MODEL = "gpt-4o"  # a daily budget of BUDGET_USD
BUDGET_USD = 188.0
RESERVE_OUTPUT = RO = 8

# $1 a token in, out and cached: the mock's openai answer (21 in, 8 of them cached, 17 out)
# costs $38; a streamed request of the SDK (116 bytes of body: 29 tokens) reserves
# 29 + RESERVE_OUTPUT = $37, a dollar less than it costs. Five reservations fit in the budget
# ($185) and the five answers cost $190: an overshoot, bounded by one reservation.
RULES = f"""
[defaults]
rate_limits = [
  {{ requests = {REQUEST_LIMIT}, per = "hour", model = "{LIMITED_MODEL}" }},
  {{ requests = 1000000, per = "hour", model = "{OUTAGE_MODEL}" }},
]
budgets = [{{ usd = {BUDGET_USD}, per = "day", model = "{BUDGET_MODEL}", reserve_output = {RO} }}]

[prices."{BUDGET_MODEL}"]
input_per_mtok = 1000000
output_per_mtok = 1000000
cache_read_per_mtok = 1000000
"""


@dataclass
class Proxies:
    redis: RedisServer
    gateways: list[Gateway]  # the first two deny on a store error, the third allows

    def tag(self, gw: Gateway) -> str:
        return f"proxy{self.gateways.index(gw) + 1}"


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Proxies]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH (.ci/run installs it)")
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    gateways: list[Gateway] = []
    try:
        for n, on_error in enumerate(("deny", "deny", "allow"), start=1):
            state = (
                f'\n[state]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
                f'on_store_error = "{on_error}"\n'
            )
            workdir = tmp_path_factory.mktemp(f"proxy{n}")
            if not gateways:
                gw = make_gateway(workdir, mock, extra_toml=RULES + state)
            else:  # one users file for all: the same master key works at every proxy
                first = gateways[0]
                gw = Gateway(workdir, mock.address, mock.ca_pem_path, extra_toml=RULES + state)
                gw.write_config()
                shutil.copy(first.workdir / "lmk_users.toml", workdir / "lmk_users.toml")
                gw.keys = dict(first.keys)
            gateways.append(gw)
        with ThreadPoolExecutor(len(gateways)) as pool:
            list(pool.map(Gateway.start, gateways))
        yield Proxies(redis, gateways)
    finally:
        for gw in gateways:
            gw.stop()
        redis.stop()


def _within_one_window(window: Window, needed: float = 40.0) -> None:
    """Wait (at most `needed` s) until the current `window` has `needed` seconds left, so the
    counts of the test all fall in one window."""
    wait_until(
        lambda: window.resets_in(time.time()) > needed,
        f"{needed:.0f} s left in the current window",
        timeout=needed + 5,
    )


def _burst(
    proxies: Proxies, model: str, calls: list[int], threads: int, stream: bool = False
) -> list[list[dict[str, Any]]]:
    """`calls[i]` calls through proxy i, at most `threads` at once per proxy, every proxy's
    clients released together; the outcomes per proxy."""
    command = [sys.executable, str(LOAD), "burst", "--model", model, "--threads", str(threads)]
    if stream:
        command.append("--stream")
    envs = [gw.client_env("alice") for gw in proxies.gateways]
    procs = [
        subprocess.Popen(
            [*command, "--calls", str(n), "--tag", proxies.tag(gw)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for gw, n, env in zip(proxies.gateways, calls, envs, strict=True)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in results]


def _reached(mock: MockUpstream, model: str, tag: str | None = None) -> list[Seen]:
    """What the provider received for `model` (from one proxy's clients, given `tag`)."""
    return [
        s
        for s in mock.requests(path_contains="/chat/completions")
        if s.json().get("model") == model and (tag is None or s.header("x-load-tag") == tag)
    ]


def _audit_rows(gateways: list[Gateway], model: str, count: int) -> list[dict[str, Any]]:
    """The completed audit rows of every proxy for `model` (each test has a model of its
    own), once there are `count` of them."""
    found: list[dict[str, Any]] = []

    def complete() -> bool:
        nonlocal found
        found = [
            r
            for gw in gateways
            for r in rows(gw.audit_db, "completed_ts is not null and model = ?", model)
        ]
        return len(found) >= count

    wait_until(complete, f"{count} completed audit rows for {model}", timeout=20)
    return found


def test_three_proxies_on_one_redis_admit_exactly_the_limit_under_concurrent_load(
    proxies: Proxies, mock: MockUpstream
) -> None:
    _within_one_window(Window(3600))
    mock.clear()
    per_proxy = 12  # 36 calls against a limit of 20, 8 at once at each proxy
    outcomes = _burst(proxies, LIMITED_MODEL, [per_proxy] * 3, 8)

    admitted = [sum(o["ok"] for o in out) for out in outcomes]
    print(f"\n{REQUEST_LIMIT} requests an hour, 3 proxies x {per_proxy}: admitted {admitted}")
    assert sum(admitted) == REQUEST_LIMIT
    refused = [o for out in outcomes for o in out if not o["ok"]]
    assert len(refused) == 3 * per_proxy - REQUEST_LIMIT
    for o in refused:
        assert (o["error"], o["status"], o["refused"]) == ("RateLimitError", 429, "rate_limited")
        assert f"{REQUEST_LIMIT} requests per hour (defaults.rate_limits.0)" in o["message"]
        assert 1 <= int(o["retry_after"]) <= 3600
        assert o["should_retry"] == "false"  # an hourly window: a retry loop cannot help
    assert len(_reached(mock, LIMITED_MODEL)) == REQUEST_LIMIT
    for gw, count in zip(proxies.gateways, admitted, strict=True):
        assert len(_reached(mock, LIMITED_MODEL, proxies.tag(gw))) == count

    found = _audit_rows(proxies.gateways, LIMITED_MODEL, 3 * per_proxy)
    assert len(found) == 3 * per_proxy
    assert sum(r["refused_by"] is None and r["status"] == 200 for r in found) == REQUEST_LIMIT
    assert sum(r["refused_by"] == "rate_limited" for r in found) == len(refused)


def _outcomes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_killing_redis_mid_run_fails_closed_and_recovers(
    proxies: Proxies, mock: MockUpstream, tmp_path: Path
) -> None:
    mock.clear()
    since = time.time()
    stop = tmp_path / "stop"
    outs = {proxies.tag(gw): tmp_path / f"{proxies.tag(gw)}.jsonl" for gw in proxies.gateways}
    envs = [gw.client_env("alice") for gw in proxies.gateways]
    command = [sys.executable, str(LOAD), "loop", "--model", OUTAGE_MODEL, "--threads", "2"]
    command += ["--stop", str(stop)]
    loaders = [
        subprocess.Popen(
            [*command, "--tag", proxies.tag(gw), "--out", str(outs[proxies.tag(gw)])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for gw, env in zip(proxies.gateways, envs, strict=True)
    ]
    deny, allow = ["proxy1", "proxy2"], "proxy3"

    def each_has(tag_list: list[str], after: float, what: str, n: int = 3) -> bool:
        def matches(o: dict[str, Any]) -> bool:
            if what == "ok":
                return bool(o["ok"])
            return o.get("refused") == what

        return all(
            sum(1 for o in _outcomes(outs[tag]) if o["t0"] > after and matches(o)) >= n
            for tag in tag_list
        )

    try:
        wait_until(lambda: each_has([*deny, allow], since, "ok"), "calls admitted at every proxy")
        proxies.redis.kill()
        killed = time.time()
        wait_until(
            lambda: (
                each_has(deny, killed, "rules_store_unavailable")
                and each_has([allow], killed, "ok")
            ),
            "503s from the denying proxies and admissions by the allowing one, Redis down",
        )
        proxies.redis.start()  # same port, empty (no persistence)
        restarted = time.time()
        wait_until(
            lambda: each_has(deny, restarted, "ok"),
            "the denying proxies admitting again after Redis came back",
            timeout=15,
        )
        recovered = time.time()
    finally:
        stop.touch()
        for proc in loaders:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for proc in loaders:
        assert proc.stderr is not None
        errors = proc.stderr.read()
        assert proc.returncode == 0 and not errors, errors[-3000:]

    results = {tag: _outcomes(path) for tag, path in outs.items()}
    for tag in deny:
        unavailable = [o for o in results[tag] if not o["ok"]]
        # Nothing else went wrong, and a refusal came at once: a dead Redis hangs no request.
        for o in unavailable:
            assert (o["status"], o["refused"]) == (503, "rules_store_unavailable"), o
            assert "cannot be reached; the request was not sent" in o["message"]
            assert (o["retry_after"], o["should_retry"]) == ("2", "true")  # worth a retry
            assert o["t1"] - o["t0"] < 2.0, o
        # Fail closed: what the provider received is exactly what was admitted.
        oks = sum(o["ok"] for o in results[tag])
        assert len(_reached(mock, OUTAGE_MODEL, tag)) == oks
        first_back = min(o["t1"] for o in results[tag] if o["ok"] and o["t0"] > restarted)
        print(
            f"\n{tag} (deny): {oks} admitted, {len(unavailable)} refused 503 while Redis was "
            f"down (slowest {max(o['t1'] - o['t0'] for o in unavailable) * 1000:.0f} ms); "
            f"admitting again {first_back - restarted:.2f} s after Redis restarted"
        )
    assert all(o["ok"] for o in results[allow])  # allow: admitted throughout, and logged
    during = [o for o in results[allow] if killed < o["t0"] and o["t1"] < restarted]
    assert len(_reached(mock, OUTAGE_MODEL, allow)) == len(results[allow])
    allowing = proxies.gateways[2]
    assert 'on_store_error = "allow"' in allowing.log.read_text(errors="replace")
    print(f"{allow} (allow): {len(results[allow])} admitted, {len(during)} while Redis was down")
    assert recovered - restarted < 15

    total = sum(len(r) for r in results.values())
    found = _audit_rows(proxies.gateways, OUTAGE_MODEL, total)
    refused_rows = sum(r["refused_by"] == "rules_store_unavailable" for r in found)
    assert refused_rows == sum(not o["ok"] for tag in deny for o in results[tag])
    assert {r["status"] for r in found if r["refused_by"]} == {503}


def test_64_concurrent_streams_overshoot_a_small_budget_by_at_most_one_reservation(
    proxies: Proxies, mock: MockUpstream
) -> None:
    _within_one_window(Window(86400))
    mock.clear()
    outcomes = _burst(proxies, BUDGET_MODEL, [22, 21, 21], 22, stream=True)  # 64 at once
    flat = [o for out in outcomes for o in out]
    # An admitted stream may still be cut off once the budget fills (README "Budgets"): the
    # SDK raises APIError from the final error event.
    cut = [o for o in flat if o.get("error") == "APIError"]
    for o in cut:
        assert "is spent; resets " in o["message"] and "the answer was cut off" in o["message"]
    admitted = sum(o["ok"] for o in flat) + len(cut)
    refused = [o for o in flat if not o["ok"] and o not in cut]
    for o in refused:
        assert (o["error"], o["status"], o["refused"]) == ("RateLimitError", 429, "budget_exceeded")
    reached = _reached(mock, BUDGET_MODEL)
    assert len(reached) == admitted >= 1

    found = _audit_rows(proxies.gateways, BUDGET_MODEL, len(flat))
    spent = sum(float(r["cost_usd"]) for r in found if r["refused_by"] is None)
    # One request's reservation, as the proxy reckons it: body bytes / 4, plus reserve_output,
    # at $1 a token (the body the provider received is the one the proxy measured).
    reservation = max((len(s.body) + 3) // 4 for s in reached) + RESERVE_OUTPUT
    overshoot = spent - BUDGET_USD
    print(
        f"\nbudget ${BUDGET_USD:.2f}, {len(flat)} concurrent streams over 3 proxies: "
        f"{admitted} admitted ({len(cut)} cut off), spent ${spent:.2f}, overshoot ${overshoot:.2f} "
        f"({overshoot / BUDGET_USD:+.1%} of the budget; one reservation ${reservation:.2f})"
    )
    assert spent <= BUDGET_USD + reservation
