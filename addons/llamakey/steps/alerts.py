"""Soft limits (README "Rules"): a rate limit or budget with ``warn_at = 0.8`` logs a warning
once per window when its counter reaches 80 % of the limit, and POSTs a JSON alert to the
``[alerts]`` webhook. The hard limit (the refusal at 100 %) is not touched.

`RateLimits` tells `SoftLimits.crossed` the counter's total after each admission and
settlement (what the store holds: settled spend plus the reservations in flight). Below the
threshold, or already warned in this window by this process, that is a comparison and a
dictionary lookup. The first time in a window, this process claims the warning in the counter
store: ``add_within("{key}:warned", 1, 1)`` admits once per window, so with a shared store
(``sqlite``, ``redis``) one proxy of many warns; with ``local`` one per process (a restart may
warn once more). A store that cannot be reached: the warning is given anyway.

The POST runs on one worker thread with a timeout and a few retries (network errors, timeouts,
HTTP 429 and 5xx), never on the event loop; a failure is logged (without the URL, which may
hold a token) and never affects a request. With ``secret`` set, the body is signed:
``X-LlaMaKey-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from llamakey.config import Webhook
from llamakey.rules.limits import CountedRule
from llamakey.state import GatewayState
from llamakey.store import CounterStore, StoreUnavailable, Window

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 0.5
"""The wait before the first retry of a POST, doubled for each further one."""

# Straight to the webhook: the proxy's own environment may point HTTPS_PROXY at itself.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def amount(value: float, unit: str) -> str:
    return f"${value:.2f}" if unit == "usd" else f"{value:.0f} {unit}"


def post(webhook: Webhook, body: bytes, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST `body` to the webhook, retrying a failure that may pass; whether it was taken.
    Blocking: runs on the alert thread."""
    headers = {"Content-Type": "application/json", "User-Agent": "LlaMaKey", **webhook.headers}
    if webhook.secret is not None:
        digest = hmac.new(webhook.secret, body, hashlib.sha256).hexdigest()
        headers["X-LlaMaKey-Signature"] = f"sha256={digest}"
    why = ""
    for attempt in range(webhook.retries + 1):
        if attempt:
            sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1))
        request = urllib.request.Request(webhook.url, body, headers, method="POST")
        try:
            with _OPENER.open(request, timeout=webhook.timeout_seconds) as answer:
                answer.read()
            return True
        except urllib.error.HTTPError as error:
            why = f"HTTP {error.code}"
            if error.code != 429 and error.code < 500:
                break  # the receiver refuses it: sending it again will not help
        except (OSError, ValueError) as error:  # refused, reset, timed out, bad TLS
            why = type(error).__name__ if isinstance(error, TimeoutError) else str(error)
    log.warning("LlaMaKey: the soft-limit alert was not delivered to [alerts] webhook: %s", why)
    return False


class SoftLimits:
    """Which counters warned in their current window, and the thread that POSTs alerts."""

    def __init__(
        self,
        state: GatewayState,
        clock: Callable[[], float] = time.time,
        send: Callable[[Webhook, bytes], bool] = post,
    ) -> None:
        self.state = state
        self._clock = clock
        self._send = send
        self._warned: dict[tuple[str, Window], int] = {}  # counter -> start of its warned window
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def crossed(
        self, store: CounterStore, rule: CountedRule | None, total: float, user: str | None
    ) -> None:
        """`rule`'s counter now holds `total`: warn if that reaches its soft limit for the
        first time in this window."""
        if rule is None or rule.warn_at is None or total < rule.warn_at * rule.cap:
            return
        now = self._clock()
        counter, start = (rule.key, rule.window), rule.window.start(now)
        if self._warned.get(counter) == start:
            return
        self._warned[counter] = start
        task = asyncio.get_running_loop().create_task(self._claim(store, rule, total, user, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(
        self, store: CounterStore, rule: CountedRule, total: float, user: str | None, now: float
    ) -> None:
        try:
            claim = await store.add_within(f"{rule.key}:warned", 1, 1, rule.window)
            if not claim.admitted:
                return  # another proxy warned in this window
        except (StoreUnavailable, RuntimeError) as error:  # down, or closed by a reload since
            log.warning("LlaMaKey: soft limit claimed locally (store unavailable: %s)", error)
        window = rule.window
        log.warning(
            "LlaMaKey: soft limit: %s of %s reached (%.0f %%, warn_at = %s) for %s; resets %s",
            amount(total, rule.unit),
            rule.describe(),
            100 * total / rule.cap,
            rule.warn_at,
            user or rule.scope_id,
            iso(window.end(now)),
        )
        settings = self.state.settings
        webhook = settings.webhook if settings is not None else None
        if webhook is None:
            return
        alert = {
            "event": "soft_limit",
            "rule": "budget" if rule.unit == "usd" else "rate_limit",
            "source": rule.source,
            "description": rule.describe(),
            "scope": rule.scope,
            "scope_id": rule.scope_id,
            "user": user,
            "counter": rule.key,
            "unit": rule.unit,
            "spent": round(total, 6),
            "limit": rule.cap,
            "warn_at": rule.warn_at,
            "window": rule.per,
            "window_start": iso(window.start(now)),
            "resets_at": iso(window.end(now)),
        }
        body = json.dumps(alert).encode()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmk-alerts")
        self._executor.submit(self._send, webhook, body)

    async def flush(self) -> None:
        """Wait until every warning claimed so far is logged and its POST handed over."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        """Let a POST under way finish on its thread; drop those not started (the proxy is
        stopping)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
