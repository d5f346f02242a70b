"""Counters that rules (rate limits, budgets) keep, behind one interface.

`CounterStore` is what a rule may ask of a store: add to a counter for the current window only
if the sum stays within a limit, in one atomic step, and read it back. Deciding from a read
and then writing would let concurrent requests (or several proxies) all pass the check, so the
interface has no separate "check" call at all.

Implementations, chosen by `[state] backend` through `open_store`:
- `MemoryCounterStore` ("local"): one proxy process, and the unit tests;
- `SQLiteCounterStore` ("sqlite"): the proxy processes of one machine, sharing a file;
- `RedisCounterStore` ("redis", in `llamakey.store.redis_store`): several proxies, one Redis.

All keep integers in millionths (`MICRO`), so they return the same totals. A shared store that
cannot be reached raises `StoreUnavailable` and recovers by itself when the backend is back.
"""

from llamakey.store.counters import (
    MICRO,
    Admission,
    ClosableCounterStore,
    CounterStore,
    MemoryCounterStore,
    StoreUnavailable,
    Window,
)
from llamakey.store.factory import open_store
from llamakey.store.sqlite_store import SQLiteCounterStore

__all__ = [
    "MICRO",
    "Admission",
    "ClosableCounterStore",
    "CounterStore",
    "MemoryCounterStore",
    "SQLiteCounterStore",
    "StoreUnavailable",
    "Window",
    "open_store",
]
