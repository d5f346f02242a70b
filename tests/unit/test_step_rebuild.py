"""Counters rebuilt from the audit database in `RateLimits`: admissions wait for the rebuild and
count on top of it; the database is read on a worker thread; a counter the store already holds
is left alone; a reload rebuilds only the counters it adds; an unreadable database refuses
(503) until it can be read; with the audit log off nothing is read."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llamakey import config
from llamakey.refusals import Refusal
from llamakey.rules.usage_now import Spent
from llamakey.state import GatewayState
from llamakey.steps.authorize import Authorize
from llamakey.steps.ratelimit import RateLimits
from llamakey.steps.rebuild import CounterRebuild, read_spent
from llamakey.store import MemoryCounterStore, Window
from tests.unit.builders import config_data
from tests.unit.test_step_budgets import NOW, body, call

DAY_START = int(NOW) - int(NOW) % 86400
HOUR_START = int(NOW) - int(NOW) % 3600
REQUESTS = "rl:user:alice:*:*:requests"


class Audit:
    """A stand-in for `audit.spent_since`: alice's requests, each at NOW, and every call
    (since when, on which thread)."""

    def __init__(self, requests: int = 2, fail: int = 0) -> None:
        self.requests = requests
        self.fail = fail
        self.calls: list[tuple[int, str]] = []
        self.gate: threading.Event | None = None  # when set: reads wait for it

    def __call__(self, path: Path, since: datetime, users: Collection[str]) -> list[Spent]:
        self.calls.append((int(since.timestamp()), threading.current_thread().name))
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("disk I/O error")
        one = Spent("alice", "openai", "gpt-4o-mini", NOW, 15, 40, 0.001)
        return [one] * self.requests


def data(rate_limits: list[dict[str, Any]], audit: bool = True) -> dict[str, Any]:
    d = copy.deepcopy(config_data())
    d["defaults"] = {"rate_limits": rate_limits}
    d["audit"] = {"enabled": audit}
    return d


def setup(
    d: dict[str, Any], audit: Audit, store: MemoryCounterStore | None = None
) -> tuple[GatewayState, Authorize, MemoryCounterStore]:
    state = GatewayState()
    state.install(config.resolve(config.parse(d), None))
    store = store if store is not None else MemoryCounterStore(lambda: NOW)
    rate = RateLimits(state, store, clock=lambda: NOW)
    rate.rebuild = CounterRebuild(state, lambda: NOW, read=audit)
    return state, Authorize(state, rate), store


async def refused_by(state: GatewayState, authorize: Authorize) -> Refusal | None:
    f = await call(state, authorize, body())
    return state.flows(f).refusal


async def test_admissions_count_on_top_of_what_the_audit_database_recorded() -> None:
    audit = Audit(requests=2)
    state, authorize, store = setup(data([{"requests": 3, "per": "day"}]), audit)
    assert await refused_by(state, authorize) is None
    assert await refused_by(state, authorize) is Refusal.RATE_LIMITED
    assert await store.total(REQUESTS, Window(86400)) == 3
    ((since, thread),) = audit.calls  # read once, off the event loop
    assert since == DAY_START and thread != threading.current_thread().name


async def test_a_counter_the_store_already_holds_is_left_alone() -> None:
    store = MemoryCounterStore(lambda: NOW)
    await store.add(REQUESTS, 1, Window(86400))  # a shared store that kept its counters
    state, authorize, _ = setup(data([{"requests": 3, "per": "day"}]), Audit(2), store)
    assert await refused_by(state, authorize) is None
    assert await refused_by(state, authorize) is None
    assert await refused_by(state, authorize) is Refusal.RATE_LIMITED


async def test_a_reload_rebuilds_only_the_counters_it_adds() -> None:
    audit = Audit(requests=2)
    state, authorize, store = setup(data([{"requests": 3, "per": "day"}]), audit)
    assert await refused_by(state, authorize) is None  # 3 of 3 today
    state.install(
        config.resolve(
            config.parse(data([{"requests": 3, "per": "day"}, {"requests": 10, "per": "hour"}])),
            None,
        )
    )
    assert await refused_by(state, authorize) is Refusal.RATE_LIMITED
    assert [since for since, _ in audit.calls] == [DAY_START, HOUR_START]
    assert await store.total(REQUESTS, Window(86400)) == 3  # not rebuilt twice
    assert await store.total(REQUESTS, Window(3600)) == 2  # rebuilt: this hour's 2


async def test_an_unreadable_database_refuses_until_it_can_be_read() -> None:
    audit = Audit(requests=0, fail=1)
    state, authorize, _ = setup(data([{"requests": 3, "per": "day"}]), audit)
    f = await call(state, authorize, body())
    assert state.flows(f).refusal is Refusal.STORE_UNAVAILABLE
    assert f.response is not None and f.response.status_code == 503
    assert await refused_by(state, authorize) is None  # read again, and admitted
    assert len(audit.calls) == 2


async def test_with_the_audit_log_off_nothing_is_read() -> None:
    audit = Audit(requests=5)
    state, authorize, _ = setup(data([{"requests": 3, "per": "day"}], audit=False), audit)
    assert await refused_by(state, authorize) is None
    assert audit.calls == []


async def test_while_a_reload_rebuilds_a_request_on_rebuilt_counters_does_not_wait() -> None:
    audit = Audit(requests=0)
    day = {"requests": 3, "per": "day"}
    state, authorize, _ = setup(data([day]), audit)
    assert await refused_by(state, authorize) is None
    audit.gate = threading.Event()
    added = {"requests": 1, "per": "hour", "model": "gpt-4o"}  # not the model called below
    state.install(config.resolve(config.parse(data([day, added])), None))
    try:
        assert await refused_by(state, authorize) is None  # starts the rebuild, does not wait
        deadline = time.monotonic() + 5
        while len(audit.calls) < 2:  # the rebuild's read, blocked at the gate
            assert time.monotonic() < deadline, "the reload's rebuild did not start"
            await asyncio.sleep(0.01)
        assert await refused_by(state, authorize) is None  # admitted while it is blocked
    finally:
        audit.gate.set()


def test_no_audit_database_or_no_tables_yet_is_nothing_spent(tmp_path: Path) -> None:
    since = datetime.fromtimestamp(DAY_START, UTC)
    assert read_spent(tmp_path / "none.db", since, ["alice"]) == []
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert read_spent(empty, since, ["alice"]) == []
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database, " * 100)
    with pytest.raises(sqlite3.DatabaseError):  # the rebuild's wait raises StoreUnavailable
        read_spent(bad, since, ["alice"])
