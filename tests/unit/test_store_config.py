"""`[state]`: which counter store, validated; `open_store` builds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamakey import config
from llamakey.config.schema import StateTable
from llamakey.store import MemoryCounterStore, SQLiteCounterStore, Window, open_store
from llamakey.store.redis_store import RedisCounterStore
from tests.unit.config.helpers import config_error


def test_the_default_is_the_local_store_failing_closed() -> None:
    state = config.parse({}, "lmk_config.toml").state
    assert state == StateTable()
    assert (state.backend, state.on_store_error) == ("local", "deny")


def test_a_redis_backend_needs_a_url() -> None:
    message = config_error({"state": {"backend": "redis"}})
    assert 'backend = "redis" needs redis_url' in message


def test_a_bad_redis_url_is_named_without_echoing_it() -> None:
    message = config_error({"state": {"backend": "redis", "redis_url": "http://:pw123@host"}})
    assert "state.redis_url" in message and "redis://host:6379/0" in message
    assert "pw123" not in message


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"backend": "memcached"}, "state.backend"),
        ({"on_store_error": "maybe"}, "state.on_store_error"),
        ({"path": ""}, "state.path"),
        ({"bakend": "redis"}, "state.bakend"),
    ],
)
def test_bad_values_name_their_toml_path(table: dict[str, str], path: str) -> None:
    assert f"  {path}: " in config_error({"state": table})


async def test_open_store_builds_the_named_backend(tmp_path: Path) -> None:
    local = open_store(StateTable(), tmp_path)
    assert isinstance(local, MemoryCounterStore)

    sqlite = open_store(StateTable(backend="sqlite", path="state/counters.db"), tmp_path)
    assert isinstance(sqlite, SQLiteCounterStore)
    (tmp_path / "state").mkdir()
    await sqlite.add("k", 1, Window(60))
    assert (tmp_path / "state" / "counters.db").exists()  # relative to the config's directory

    redis = open_store(StateTable(backend="redis", redis_url="redis://127.0.0.1:1/0"), tmp_path)
    assert isinstance(redis, RedisCounterStore)  # not connected until its first call
    for store in (local, sqlite, redis):
        await store.aclose()
