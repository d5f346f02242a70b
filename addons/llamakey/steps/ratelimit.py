"""Rate limits and budgets (README "Rules"): admission before a request goes upstream,
settlement after.

`RateLimits` owns the counter store that `[state]` names (opened on first use, which connects
nothing and blocks nothing; reopened when a reload changes `[state]`; closed on `done`) and
every admitted flow's reservations. The authorize step calls `admit`: each applicable limit,
one after the other, adds its amount with the store's atomic `add_within` (1 for a request
limit, an estimate for a token limit: `rules.limits.estimate_tokens`); when one refuses,
those already admitted are given back (`add` of minus the amount) and the flow is refused with
429 `rate_limited`. A store that cannot be reached refuses with 503 `rules_store_unavailable`
unless `[state] on_store_error = "allow"` (then logged, and admitted).

After the answer (`response` / `error`, registered after Settle, before the audit row is
completed) a token limit settles to the real usage (`add` of real minus reserved); a flow
whose usage is unknown keeps its reservation (the safe side). A flow refused after admission
by a later step (the write-ahead row failed) never went upstream: all is given back.

Budgets follow the same path, after the rate limits: each applicable budget reserves the
request's worst-case cost (`worst_cost`: the input estimate and its ``max_tokens``, else the
budget's ``reserve_output``, at the model's price with ``[prices]`` overrides) with
`add_within` on its calendar window; a model with no known price is refused (403
`budget_unpriced_model`), a spent budget with 429 `budget_exceeded` (`x-should-retry: false`,
`Retry-After` until the window resets). After the answer the reservation settles to
`state.cost_usd` (Settle ran before; an estimated usage counts too); an answer that could not
be priced keeps its reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import http

from llamakey.config.schema import StateTable
from llamakey.flowstate import FlowState
from llamakey.pricing import PriceOverride, cost_usd
from llamakey.refusals import Refusal
from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit, estimate_tokens
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed
from llamakey.store import ClosableCounterStore, StoreUnavailable, Window, open_store
from llamakey.usage import Usage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reservation:
    """What one admitted flow added to one counter: `unit` is ``requests``, ``tokens`` or
    ``usd`` (a budget)."""

    key: str
    window: Window
    unit: str
    amount: float


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    refusal: Refusal
    message: str
    retry_after: float | None = None
    retry: bool | None = None
    """Whether retrying after `retry_after` can help (None: decided by the wait; a budget: no)."""


class RateLimits:
    """The counter store and the reservations of flows in flight."""

    def __init__(
        self,
        state: GatewayState,
        store: ClosableCounterStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self._clock = clock  # the reset time a budget refusal names (the store's clock)
        self._store = store
        self._given = store is not None  # a test's store is never replaced
        self._state_table: StateTable | None = None
        self._base: Path | None = None
        self.reservations: weakref.WeakKeyDictionary[http.HTTPFlow, list[Reservation]] = (
            weakref.WeakKeyDictionary()
        )
        self._closing: set[object] = set()
        self._overrides: dict[str, PriceOverride] = {}
        self._overrides_from: object = None

    def store(self) -> ClosableCounterStore:
        settings = self.state.settings
        table = settings.file.state if settings is not None else StateTable()
        if self._store is not None and (self._given or table is self._state_table):
            return self._store  # the common case: the configuration did not change
        base = settings.path.parent if settings is not None and settings.path else Path.cwd()
        if self._store is None or table != self._state_table or base != self._base:
            old = self._store
            self._store = open_store(table, base)
            if old is not None:
                self._close_later(old)
        self._state_table, self._base = table, base  # an equal table reloaded: same store
        return self._store

    def _close_later(self, store: ClosableCounterStore) -> None:
        task = asyncio.get_running_loop().create_task(store.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _allow_on_error(self) -> bool:
        settings = self.state.settings
        return settings is not None and settings.file.state.on_store_error == "allow"

    def overrides(self) -> dict[str, PriceOverride]:
        """``[prices]`` as `pricing.cost_usd` takes them, rebuilt only after a reload."""
        settings = self.state.settings
        prices = settings.file.prices if settings else {}
        if prices is not self._overrides_from:
            self._overrides = {
                model: PriceOverride(
                    p.input_per_mtok,
                    p.output_per_mtok,
                    p.cache_read_per_mtok,
                    p.cache_write_per_mtok,
                )
                for model, p in prices.items()
            }
            self._overrides_from = prices
        return self._overrides

    def worst_cost(self, state: FlowState, body: bytes, reserve_output: int) -> float | None:
        """The most a request may cost: its input estimate (body bytes / 4) and the output it
        asks for at most (else `reserve_output`), at the model's price; None when unpriced.
        A catalogued model is priced at its dearest deployment, since any may serve it."""
        if state.model is None:
            return 0.0  # no model (a listing, a file): nothing to price before; settled after
        total = estimate_tokens(body, reserve_output)
        given = (len(body) + 3) // 4
        worst = 0.0
        for provider, model in self.state.price_targets(state):
            probe = Usage(input_tokens=given, output_tokens=total - given, model=model)
            cost = cost_usd(provider, model, probe, overrides=self.overrides())
            if cost is None:
                return None
            worst = max(worst, float(cost))
        return worst

    async def admit(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        limits: Sequence[RateLimit],
        budgets: Sequence[Budget] = (),
    ) -> LimitRefusal | None:
        """Admit `flow` against every limit in `limits` and every budget in `budgets` (all
        apply to it), or say why not."""
        store = self.store()
        body: bytes | None = None
        taken: list[Reservation] = []
        try:
            for limit in limits:
                if limit.unit == "tokens":
                    if body is None:
                        body = flow.request.raw_content or b""
                    amount = float(estimate_tokens(body, limit.reserve_output))
                else:
                    amount = 1.0
                window = Window(limit.seconds)
                admission = await store.add_within(limit.key, amount, limit.limit, window)
                if not admission.admitted:
                    await self._give_back(store, taken)
                    asked = f" (this request: about {amount:.0f})" if limit.unit == "tokens" else ""
                    return LimitRefusal(
                        Refusal.RATE_LIMITED,
                        f"{state.user}: {limit.describe()}{asked}; retry in "
                        f"{max(1, round(admission.retry_after))} s",
                        admission.retry_after,
                    )
                taken.append(Reservation(limit.key, window, limit.unit, amount))
            costs: dict[int, float | None] = {}
            for budget in budgets:
                if body is None:
                    body = flow.request.raw_content or b""
                if budget.reserve_output not in costs:
                    costs[budget.reserve_output] = self.worst_cost(
                        state, body, budget.reserve_output
                    )
                cost = costs[budget.reserve_output]
                if cost is None:
                    await self._give_back(store, taken)
                    return LimitRefusal(
                        Refusal.BUDGET_UNPRICED,
                        f'no price known for {state.model}: set [prices."{state.model}"] to '
                        f"use it under a budget ({budget.source})",
                    )
                admission = await store.add_within(budget.key, cost, budget.usd, budget.window)
                if not admission.admitted:
                    await self._give_back(store, taken)
                    now = self._clock()
                    return LimitRefusal(
                        Refusal.BUDGET_EXCEEDED,
                        f"{state.user}: {budget.describe()} is spent; resets "
                        f"{budget.resets_at(now)}",
                        admission.retry_after,
                        retry=False,
                    )
                taken.append(Reservation(budget.key, budget.window, "usd", cost))
        except StoreUnavailable as error:
            if self._allow_on_error():
                log.warning(
                    "LlaMaKey: the rate-limit store is unavailable (%s); admitting %s's request "
                    '(on_store_error = "allow")',
                    error,
                    state.user,
                )
                self.reservations[flow] = taken
                return None
            with contextlib.suppress(StoreUnavailable):
                await self._give_back(store, taken)
            log.error("LlaMaKey: the rate-limit store is unavailable: %s", error)
            return LimitRefusal(
                Refusal.STORE_UNAVAILABLE,
                "the store of rate-limit counters cannot be reached; the request was not sent",
            )
        self.reservations[flow] = taken
        return None

    @staticmethod
    async def _give_back(store: ClosableCounterStore, taken: list[Reservation]) -> None:
        for reservation in taken:
            await store.add(reservation.key, -reservation.amount, reservation.window)

    async def settle(self, flow: http.HTTPFlow) -> None:
        taken = self.reservations.pop(flow, None)
        if not taken:
            return
        state = self.state.flows.get(flow)
        store = self.store()
        try:
            if state is None or (state.refusal is not None and not state.audited):
                await self._give_back(store, taken)  # refused after admission: not sent
                return
            usage = state.usage
            if usage is None:
                return  # unknown: the reservation stays
            real = float(
                (usage.input_tokens or 0)
                + (usage.output_tokens or 0)
                + (usage.cache_read_tokens or 0)
                + (usage.cache_write_tokens or 0)
            )
            cost = state.cost_usd  # Settle ran before: the real cost (estimated usage too)
            for reservation in taken:
                if reservation.unit == "tokens":
                    spent: float | None = real
                elif reservation.unit == "usd":
                    spent = cost  # unpriced after all: the reservation stays
                else:
                    continue
                if spent is not None and spent != reservation.amount:
                    await store.add(reservation.key, spent - reservation.amount, reservation.window)
        except StoreUnavailable as error:
            log.error("LlaMaKey: rate-limit usage not settled (store unavailable): %s", error)

    # Synchronous hooks: a flow with no reservation costs a dictionary lookup, no coroutine.
    @fail_closed
    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self.settle(flow) if flow in self.reservations else None

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self.settle(flow) if flow in self.reservations else None

    async def done(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None
