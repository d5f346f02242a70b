"""One proxy's share of a concurrency test: its own process, event loop and store object.

    python tests/store_worker.py redis|sqlite URL-OR-PATH NOW COUNT LIMIT

Connects, prints ``ready``, waits for a line on stdin (so that every worker starts together),
sends COUNT admissions of 1 against LIMIT at once, and prints ``{"admitted": N}``.
All workers pass the same NOW, so they count in one window whatever the wall clock does.
"""

from __future__ import annotations

import asyncio
import json
import sys

from llamakey.store import ClosableCounterStore, SQLiteCounterStore, Window
from llamakey.store.redis_store import RedisCounterStore

KEY = "rpm"
WINDOW = Window(3600)


async def main(backend: str, target: str, now: float, count: int, limit: int) -> None:
    store: ClosableCounterStore
    if backend == "redis":
        store = RedisCounterStore(target, clock=lambda: now)
    else:
        store = SQLiteCounterStore(target, clock=lambda: now, busy_timeout=30)
    await store.total("warm-up", WINDOW)  # connected (and the schema made) before the start
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    results = await asyncio.gather(*(store.add_within(KEY, 1, limit, WINDOW) for _ in range(count)))
    await store.aclose()
    print(json.dumps({"admitted": sum(r.admitted for r in results)}), flush=True)


if __name__ == "__main__":
    backend, target, now, count, limit = sys.argv[1:6]
    asyncio.run(main(backend, target, float(now), int(count), int(limit)))
