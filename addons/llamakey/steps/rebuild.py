"""Counters that a store does not hold yet start from the audit database (README "Rules").

The ``local`` store lives in the proxy's memory, so a restart would give every user, group and
the gateway a fresh allowance for the rest of the window; a reload that adds a limit or budget
would do the same for it, whatever the store. So whenever `RateLimits` opens a store (the
proxy's start, a change of ``[state]``) and whenever a reload brings counters it has not seen,
`CounterRebuild` reads the requests of the current windows from the audit database
(`audit.spent_since`) and counts them again as the rules counted them
(`rules.usage_now.window_usage`, which `lmk status` uses too), both on a worker thread (the
event loop never waits on SQLite), and adds each new counter's total to the store, only into a
counter that is still empty: `add_within(key, total, total)` admits exactly when the store
holds nothing for it, atomically. So a ``sqlite`` or ``redis`` store that kept its counters (a
restart, another proxy counting) is never counted twice, and one that lost them (a state file
deleted, a Redis without persistence restarted) gets them back on the next start or reload.

Admissions wait for it: `RateLimits.admit` awaits `waiter` before it counts anything, so no
request is admitted against a counter still being rebuilt (a request whose counters are all
rebuilt goes on meanwhile). A database that cannot be read
makes the wait raise `StoreUnavailable` (503 ``rules_store_unavailable``, or admitted under
``on_store_error = "allow"``), and the next admission tries again: fail closed, recover by
itself. With ``[audit] enabled = false`` there is nothing to read: counters start at 0.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from llamakey.audit import spent_since
from llamakey.pricing import reserved_cost
from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit
from llamakey.rules.policy import UserPolicy
from llamakey.rules.usage_now import (
    Counter,
    Spent,
    counter_of,
    counters_of,
    earliest_start,
    sharing,
    window_usage,
)
from llamakey.state import GatewayState
from llamakey.store import CounterStore, StoreUnavailable, Window

log = logging.getLogger(__name__)

type ReadSpent = Callable[[Path, datetime, Collection[str]], Sequence[Spent]]


def read_spent(path: Path, since: datetime, users: Collection[str]) -> Sequence[Spent]:
    """`audit.spent_since`, where no database or no table yet is nothing spent."""
    try:
        return spent_since(path, since, users)
    except FileNotFoundError:
        return []
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # a database the writer has not built yet
            return []
        raise


def all_counters(policies: Mapping[str, UserPolicy]) -> dict[Counter, Window]:
    """Every counter of every policy, with its window."""
    found: dict[Counter, Window] = {}
    for policy in policies.values():
        found |= counters_of(policy)
    return found


class CounterRebuild:
    """Which counters of the current store are rebuilt, and the rebuild under way."""

    def __init__(
        self,
        state: GatewayState,
        clock: Callable[[], float] = time.time,
        read: ReadSpent = read_spent,
    ) -> None:
        self.state = state
        self._clock = clock
        self._read = read
        self._store: CounterStore | None = None
        self._seen: object = None  # the policies whose counters are rebuilt (or under way)
        self._done: set[Counter] = set()
        self._task: asyncio.Task[None] | None = None

    def waiter(
        self, store: CounterStore, *rules: Sequence[RateLimit | Budget]
    ) -> asyncio.Future[None] | None:
        """What an admission counting on `rules` in `store` must await first, or None: the
        common case (two identity checks), and while a reload's rebuild runs, a request whose
        own counters are rebuilt already. Shielded: a flow that goes away while waiting does
        not cancel the rebuild."""
        task = self.start(store)
        if task is None:
            return None
        if all(counter_of(rule) in self._done for group in rules for rule in group):
            return None
        return asyncio.shield(task)

    def start(self, store: CounterStore) -> asyncio.Task[None] | None:
        """Start rebuilding the counters of the live configuration that `store` has not been
        given yet; the rebuild under way (which covers them), or None when there is none."""
        settings = self.state.settings
        if settings is None or (store is self._store and settings.policies is self._seen):
            return self._task
        if store is not self._store:
            self._store, self._done = store, set()
        self._seen = settings.policies
        if self._task is None and self._done.issuperset(all_counters(settings.policies)):
            return None
        task = asyncio.get_running_loop().create_task(self._rebuild(store, self._done, self._task))
        task.add_done_callback(self._finished)
        self._task = task
        return task

    async def _rebuild(
        self, store: CounterStore, done: set[Counter], previous: asyncio.Task[None] | None
    ) -> None:
        """Rebuild into `store` the live configuration's counters not in `done` (the set of
        that store: a store replaced meanwhile keeps its own)."""
        if previous is not None:  # one rebuild at a time; its counters are then done
            await asyncio.wait([previous])
        settings = self.state.settings
        if settings is None:
            return
        policies = settings.policies
        wanted = {c: w for c, w in all_counters(policies).items() if c not in done}
        if not wanted:
            return
        now = self._clock()
        since = earliest_start(wanted.values(), now)
        if not settings.file.audit.enabled or since is None:
            done.update(wanted)
            return

        def read_and_count() -> dict[Counter, float]:
            users = sharing(policies, wanted)
            spent = self._read(settings.audit_path, datetime.fromtimestamp(since, UTC), users)
            worst = reserved_cost(settings)
            return window_usage(spent, policies, now, worst_cost=worst, wanted=wanted)

        try:  # the SQL and the counting on a worker thread, never on the event loop
            totals = await asyncio.to_thread(read_and_count)
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(
                f"the audit database {settings.audit_path} cannot be read to rebuild the rate "
                f"limit and budget counters: {error}"
            ) from error
        seeded = 0
        for (key, seconds), window in wanted.items():
            total = totals.get((key, seconds), 0.0)
            # A window that ended while reading starts empty, as it should.
            if total > 0 and window.start(self._clock()) == window.start(now):
                admission = await store.add_within(key, total, total, window)
                seeded += admission.admitted
            done.add((key, seconds))
        if seeded:
            log.info(
                "LlaMaKey: %d rate-limit and budget counters rebuilt from the audit database",
                seeded,
            )

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if task.cancelled():
            self._seen = None
            return
        if (error := task.exception()) is not None:
            self._seen = None  # the next admission tries again
            log.error("LlaMaKey: counters not rebuilt (admissions wait and retry): %s", error)
