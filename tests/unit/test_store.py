"""The counter store: an atomic check-and-add per window, windows aligned to the epoch.

Every case runs against each implementation: memory, a real SQLite file, a real redis-server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from llamakey.store import (
    ClosableCounterStore,
    CounterStore,
    MemoryCounterStore,
    SQLiteCounterStore,
    Window,
)
from llamakey.store.redis_store import RedisCounterStore
from tests.redis_server import REDIS_SERVER, RedisServer


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeStore = Callable[[Clock], CounterStore]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH (.ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    made: list[ClosableCounterStore] = []

    def make(clock: Clock) -> CounterStore:
        store: ClosableCounterStore
        if request.param == "memory":
            store = MemoryCounterStore(clock)
        elif request.param == "sqlite":
            store = SQLiteCounterStore(tmp_path / f"counters-{len(made)}.db", clock=clock)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            # Each test its own key space on the module's server.
            store = RedisCounterStore(server.url, prefix=f"t{uuid.uuid4().hex}", clock=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_add_within_admits_up_to_the_limit_and_says_when_it_resets(
    make_store: MakeStore,
) -> None:
    clock = Clock(1_000_000.5)  # 40.5 s into a minute window
    store = make_store(clock)
    minute = Window(60)
    results = [await store.add_within("alice", 1, 3, minute) for _ in range(4)]
    assert [r.admitted for r in results] == [True, True, True, False]
    assert results[2].total == 3 and results[3].total == 3  # a refusal adds nothing
    assert results[3].retry_after == pytest.approx(60 - 40.5)
    assert await store.total("alice", minute) == 3


async def test_a_new_window_starts_from_zero_and_windows_are_separate(
    make_store: MakeStore,
) -> None:
    clock = Clock(120.0)
    store = make_store(clock)
    minute, hour = Window(60), Window(3600)
    assert (await store.add_within("k", 5, 5, minute)).admitted
    assert (await store.add_within("k", 5, 10, hour)).admitted
    assert not (await store.add_within("k", 1, 5, minute)).admitted
    clock.now = 180.0  # the next minute
    assert await store.total("k", minute) == 0
    assert await store.total("k", hour) == 5
    assert (await store.add_within("k", 5, 5, minute)).admitted


async def test_add_gives_back_a_reservation(make_store: MakeStore) -> None:
    store = make_store(Clock(0.0))
    day = Window(86400)
    await store.add_within("budget", 0.75, 1.0, day)  # reserve the worst case
    assert await store.add("budget", -0.5, day) == pytest.approx(0.25)  # settle to the real cost
    assert (await store.add_within("budget", 0.75, 1.0, day)).admitted


async def test_fractional_amounts_are_exact_to_a_millionth(make_store: MakeStore) -> None:
    store = make_store(Clock(1_700_000_000.0))
    day = Window(86400)
    admission = await store.add_within("usd", 0.3, 1.0, day)  # reserve 0.3 USD
    assert admission.admitted and admission.total == 0.3
    assert await store.add("usd", -0.2, day) == 0.1  # settled to 0.1: exactly, not 0.0999…
    assert await store.total("usd", day) == 0.1
    for _ in range(9):
        assert (await store.add_within("usd", 0.1, 1.0, day)).admitted
    assert await store.total("usd", day) == 1.0  # ten times 0.1 is 1.0 here
    refused = await store.add_within("usd", 0.000001, 1.0, day)
    assert not refused.admitted and refused.total == 1.0
    assert await store.add("usd", 0.0000004, day) == 1.0  # below a millionth: rounded away
    assert (await store.add_within("usd", 1e9, float("inf"), day)).admitted  # no limit


async def test_keys_with_colons_stay_apart(make_store: MakeStore) -> None:
    store = make_store(Clock(0.0))
    minute = Window(60)
    await store.add("user:alice:60", 1, minute)
    await store.add("user:alice", 2, minute)
    assert await store.total("user:alice:60", minute) == 1
    assert await store.total("user:alice", minute) == 2


async def test_concurrent_requests_never_overshoot(make_store: MakeStore) -> None:
    store = make_store(Clock(0.0))
    minute = Window(60)
    results = await asyncio.gather(*(store.add_within("u", 1, 10, minute) for _ in range(100)))
    assert sum(r.admitted for r in results) == 10
    assert await store.total("u", minute) == 10


def test_a_window_has_a_length() -> None:
    with pytest.raises(ValueError, match="at least one second"):
        Window(0)
