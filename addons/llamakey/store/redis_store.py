"""Counters in Redis (or Valkey), shared by every proxy that points at the same server.

Each admission is one Lua script run by the server (EVALSHA; redis-py loads the script once and
loads it again when the server answers NOSCRIPT, e.g. after a restart): it reads the window's
counter, compares it with the limit, adds only if within, and sets the key to expire when the
window ends, with nothing from another proxy in between. No decision is ever taken here from a
count read earlier.

Layout: one string key per counter and window, ``lmk:{key}:{window seconds}:{window start}``,
holding an integer in millionths (`MICRO`); Redis adds integers exactly (INCRBY). The two last
fields are integers, so a key with colons of its own still maps to one Redis key only. Keys
expire `GRACE_MS` after their window ends, so a proxy whose clock lags a little still finds the
counter.

Failures: a refused connection, a reset or a timeout raises `StoreUnavailable`; there are no
silent retries (an INCRBY sent twice would count twice). Connecting and each command wait at
most `timeout` (1 s): a Redis that is down refuses at once, one that hangs or is cut off holds
a request at most that long before the rules refuse it (503), where an admission normally takes
well under a millisecond. The connection pool reconnects on the next call (and checks that a
pooled connection is still open before lending it), so the store recovers by itself once the
server is back, with no 503 owed to connections opened before a restart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from llamakey.store.counters import (
    Admission,
    StoreUnavailable,
    Window,
    from_micros,
    to_micros,
)

GRACE_MS = 1000
"""How long a counter outlives its window (clock skew between proxies)."""

# KEYS[1]: the counter. ARGV[1]: amount (micros, an integer); ARGV[2]: limit (micros), or ""
# to add unconditionally; ARGV[3]: milliseconds until the key expires.
# Returns {admitted (1/0), total after the call (micros), the key's TTL in ms (-2: no key)}.
# Lua numbers are doubles: exact for the integers below 2**53 (MAX_MICROS) we pass.
ADMIT_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] ~= '' and current + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, total, redis.call('PTTL', KEYS[1])}
"""


class RedisCounterStore:
    """`CounterStore` on a Redis server, through redis-py's asyncio client."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lmk",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._prefix = prefix
        self._url_for_errors = _without_password(url)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # no resend: an INCRBY sent twice counts twice
            # With maintenance notifications on ("auto", redis-py 8's default), the pool skips
            # its check that an idle connection is still open before lending it: after a
            # Redis restart every connection pooled before it would fail one admission (a
            # 503) on its next use. Off, the pool reconnects a closed one first. (They are a
            # managed-Redis feature for failovers announced ahead; nothing here uses them.)
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._script = self._redis.register_script(ADMIT_LUA)

    def redis_key(self, key: str, window: Window, now: float) -> str:
        return f"{self._prefix}:{key}:{window.seconds}:{window.start(now)}"

    async def _run(
        self, key: str, amount: float, limit: float | None, window: Window, now: float
    ) -> Any:
        ttl_ms = math.ceil(window.resets_in(now) * 1000) + GRACE_MS
        args = [to_micros(amount), "" if limit is None else to_micros(limit), ttl_ms]
        try:
            return await self._script(keys=[self.redis_key(key, window, now)], args=args)
        except (RedisError, OSError) as error:  # down, timed out, LOADING, READONLY, OOM
            raise StoreUnavailable(f"Redis at {self._url_for_errors}: {error}") from error

    async def add_within(self, key: str, amount: float, limit: float, window: Window) -> Admission:
        now = self._clock()
        admitted, total, _ttl = await self._run(key, amount, limit, window, now)
        if admitted:
            return Admission(True, from_micros(int(total)), 0.0)
        # The window arithmetic, not the key's TTL: the same answer as every other store gives.
        return Admission(False, from_micros(int(total)), window.resets_in(now))

    async def add(self, key: str, amount: float, window: Window) -> float:
        _admitted, total, _ttl = await self._run(key, amount, None, window, self._clock())
        return from_micros(int(total))

    async def total(self, key: str, window: Window) -> float:
        try:
            value = await self._redis.get(self.redis_key(key, window, self._clock()))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis at {self._url_for_errors}: {error}") from error
        return from_micros(int(value)) if value is not None else 0.0

    async def aclose(self) -> None:
        await self._redis.aclose()


def _without_password(url: str) -> str:
    """`url` fit for an error message: any ``user:password@`` dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(unparsable URL)"
    return f"{scheme}://{rest.rpartition('@')[2]}"
