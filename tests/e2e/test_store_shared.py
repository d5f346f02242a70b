"""Shared counter stores under real concurrency and real failures.

Three store objects, each in its own process with its own event loop (as three proxies, or
three workers, would hold them), on one real redis-server or one SQLite file; a redis-server
killed and restarted under a live store; a SQLite file locked by another writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llamakey.store import ClosableCounterStore, SQLiteCounterStore, StoreUnavailable, Window
from llamakey.store.redis_store import RedisCounterStore
from tests import store_worker
from tests.redis_server import REDIS_SERVER, RedisServer

PROCESSES = 3
PER_PROCESS = 50
LIMIT = 60

WORKER = Path(store_worker.__file__)


def _run_proxies(backend: str, target: str, workdir: Path, now: float) -> list[int]:
    """How many admissions each of the PROCESSES workers got."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), backend, target, str(now), str(PER_PROCESS), str(LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs)
    return [int(json.loads(out.strip().splitlines()[-1])["admitted"]) for out in outputs]


async def _total(store: ClosableCounterStore) -> float:
    try:
        return await store.total(store_worker.KEY, store_worker.WINDOW)
    finally:
        await store.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH (.ci/run installs it)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_three_proxies_on_one_redis_admit_exactly_the_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    now = time.time()
    counts = _run_proxies("redis", redis_server.url, tmp_path, now)
    print(f"redis: {PROCESSES} proxies x {PER_PROCESS} against {LIMIT}: admitted {counts}")
    assert sum(counts) == LIMIT
    total = asyncio.run(_total(RedisCounterStore(redis_server.url, clock=lambda: now)))
    assert total == LIMIT  # refusals added nothing


def test_three_processes_on_one_sqlite_file_admit_exactly_the_limit(tmp_path: Path) -> None:
    now = time.time()
    path = tmp_path / "counters.db"
    counts = _run_proxies("sqlite", str(path), tmp_path, now)
    print(f"sqlite: {PROCESSES} processes x {PER_PROCESS} against {LIMIT}: admitted {counts}")
    assert sum(counts) == LIMIT
    total = asyncio.run(_total(SQLiteCounterStore(path, clock=lambda: now)))
    assert total == LIMIT  # refusals added nothing


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisCounterStore]:
    store = RedisCounterStore(redis_server.url, timeout=1.0)
    yield store
    await store.aclose()


async def _recovered(store: RedisCounterStore, key: str, window: Window) -> bool:
    try:
        return (await store.add_within(key, 1, 100, window)).admitted
    except StoreUnavailable:
        return False


async def test_redis_killed_mid_run_raises_store_unavailable_and_recovers(
    redis_server: RedisServer, redis_store: RedisCounterStore
) -> None:
    hour = Window(3600)
    for _ in range(3):
        assert (await redis_store.add_within("alice", 1, 100, hour)).admitted
    redis_server.kill()  # as a crash: no persistence (--save ""), the counters are gone
    with pytest.raises(StoreUnavailable, match=f"Redis at redis://127.0.0.1:{redis_server.port}"):
        await redis_store.add_within("alice", 1, 100, hour)
    with pytest.raises(StoreUnavailable):
        await redis_store.add("alice", -1, hour)
    with pytest.raises(StoreUnavailable):
        await redis_store.total("alice", hour)

    redis_server.start()  # same port; its script cache is empty (NOSCRIPT, loaded again)
    deadline = time.monotonic() + 10
    while not await _recovered(redis_store, "alice", hour):
        assert time.monotonic() < deadline, "the store did not recover after redis came back"
    assert await redis_store.total("alice", hour) >= 1
    assert (await redis_store.add_within("bob", 2, 2, hour)).admitted
    assert not (await redis_store.add_within("bob", 1, 2, hour)).admitted


async def _admit_all(store: RedisCounterStore, key: str, n: int) -> list[bool | str]:
    """`n` admissions at once (so the pool holds `n` connections): True each, or the error."""

    async def one() -> bool | str:
        try:
            return (await store.add_within(key, 1, 1000, Window(3600))).admitted
        except StoreUnavailable as error:
            return str(error)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_connections_pooled_before_a_redis_restart_fail_no_admission_after_it(
    redis_server: RedisServer, redis_store: RedisCounterStore
) -> None:
    assert await _admit_all(redis_store, "alice", 8) == [True] * 8
    # Nothing asked in between: eight pooled connections to a server that is gone. (In a
    # thread, as for a proxy: its event loop runs on while Redis restarts.)
    await asyncio.to_thread(redis_server.kill)
    await asyncio.to_thread(redis_server.start)
    assert await _admit_all(redis_store, "alice", 8) == [True] * 8
    await asyncio.to_thread(redis_server.kill)
    assert not any(ok is True for ok in await _admit_all(redis_store, "alice", 3))
    await asyncio.to_thread(redis_server.start)
    assert await _admit_all(redis_store, "alice", 8) == [True] * 8


async def test_a_redis_that_hangs_is_unavailable_within_the_timeout_then_recovers(
    redis_server: RedisServer, redis_store: RedisCounterStore
) -> None:
    hour = Window(3600)
    assert (await redis_store.add_within("alice", 1, 100, hour)).admitted
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await redis_store.add_within("alice", 1, 100, hour)
        waited = time.monotonic() - started
        assert waited < 1.5  # the fixture's store: timeout=1.0
    finally:
        redis_server.resume()
    admission = await redis_store.add_within("alice", 1, 100, hour)
    # The timed-out script may have run once the server woke (counted, never admitted: the
    # safe side); the connection it was sent on is not reused.
    assert admission.admitted and admission.total in (2, 3)
    print(f"\na frozen Redis: StoreUnavailable after {waited * 1000:.0f} ms")


async def test_redis_never_reached_raises_store_unavailable(tmp_path: Path) -> None:
    from tests.harness import free_port

    store = RedisCounterStore(f"redis://:s3cret@127.0.0.1:{free_port()}/0", timeout=1.0)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.add_within("alice", 1, 1, Window(60))
        assert "s3cret" not in str(raised.value)  # the URL's password is not in the message
    finally:
        await store.aclose()


async def test_sqlite_locked_beyond_its_timeout_raises_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "counters.db"
    store = SQLiteCounterStore(path, busy_timeout=0.2)
    try:
        assert (await store.add_within("alice", 1, 5, Window(60))).admitted
        other = sqlite3.connect(path, isolation_level=None)  # another process's writer
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.add_within("alice", 1, 5, Window(60))
        assert await store.total("alice", Window(60)) == 1  # WAL: readers do not wait
        other.execute("ROLLBACK")
        other.close()
        admission = await store.add_within("alice", 1, 5, Window(60))
        assert admission.admitted and admission.total == 2
    finally:
        await store.aclose()


async def test_sqlite_prunes_ended_windows(tmp_path: Path) -> None:
    path = tmp_path / "counters.db"
    clock_now = [1_000_000.0]
    store = SQLiteCounterStore(path, clock=lambda: clock_now[0])
    try:
        await store.add("old", 1, Window(60))
        await store.add("day", 1, Window(86400))
        clock_now[0] += 3600  # an hour on: the minute has ended, the day has not
        await store.add("new", 1, Window(60))
        with sqlite3.connect(path) as db:
            keys = sorted(row[0] for row in db.execute("SELECT key FROM counters"))
        assert keys == ["day", "new"]
    finally:
        await store.aclose()
