"""`open_store`: the counter store that `[state]` names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llamakey.store.counters import ClosableCounterStore, MemoryCounterStore
from llamakey.store.sqlite_store import SQLiteCounterStore

if TYPE_CHECKING:
    # Only a type here: importing the config package would make `import llamakey.rules.budgets`
    # (rules -> store -> config -> rules) circular when it comes first.
    from llamakey.config.schema import StateTable


def open_store(
    state: StateTable, base_dir: Path, *, readonly: bool = False
) -> ClosableCounterStore:
    """The store for `state`; a relative SQLite `path` is taken from `base_dir` (the config's
    directory). Nothing is connected yet: a Redis or SQLite problem surfaces, as
    `StoreUnavailable`, on the first call, and again on each call until the backend is back.
    `readonly` (``lmk status``): a SQLite file is opened read-only and never created (a Redis
    store is only read by `total` anyway)."""
    if state.backend == "sqlite":
        return SQLiteCounterStore(base_dir / state.path, readonly=readonly)
    if state.backend == "redis":
        assert state.redis_url is not None  # StateTable requires it for this backend
        # Imported here: a proxy on the local store never loads the Redis client.
        from llamakey.store.redis_store import RedisCounterStore

        return RedisCounterStore(state.redis_url)
    return MemoryCounterStore()
