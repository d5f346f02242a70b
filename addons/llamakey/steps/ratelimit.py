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

A streamed answer reserves at most its budget's ``reserve_output`` of output, whatever
``max_tokens`` it asks for, and is watched while it flows (`StreamBudget`, the flow's
`FlowState.allowance`): the meter's tap tells it the output so far on every chunk; before the
running cost reaches what the stream holds, it asks the store for more (`add_within` of
another ``reserve_output`` worth, else whatever room is left), in a task, so the tap never
waits; once the store refuses and the running cost passes what the stream holds, the tap cuts
the answer off with a final error event. Settlement waits for an extension in flight, then
replaces everything the stream held with its real cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import http

from llamakey.config.schema import StateTable
from llamakey.flowstate import FlowState
from llamakey.pricing import cost_usd
from llamakey.refusals import Refusal
from llamakey.rules.budgets import Budget
from llamakey.rules.limits import CountedRule, RateLimit, estimate_tokens, requested_output
from llamakey.state import GatewayState
from llamakey.steps.alerts import SoftLimits
from llamakey.steps.guard import fail_closed
from llamakey.steps.rebuild import CounterRebuild
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
    rule: CountedRule | None = None  # whose soft limit (`steps.alerts`) a settlement may reach


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    refusal: Refusal
    message: str
    retry_after: float | None = None
    retry: bool | None = None
    """Whether retrying after `retry_after` can help (None: decided by the wait; a budget: no)."""


@dataclass(slots=True)
class _Held:
    """What one watched stream holds on one budget."""

    budget: Budget
    reservation: Reservation  # its amount grows with every extension granted
    step: float  # USD asked for each time: the budget's reserve_output at the model's price
    spent: bool = False  # the store refused more: past what it holds, the stream is cut
    pending: bool = False  # an extension is in flight
    unwatched: bool = False  # the store was down and `on_store_error = "allow"`: let it run


class StreamBudget:
    """Keeps one streamed answer within its budgets while it flows (a `StreamAllowance`).

    The running cost is the input (the provider's count once the stream reports it, else the
    reservation's estimate) plus the output so far at the model's output price. `over` runs on
    every chunk, so it compares one integer until the output reaches the next point where
    something must happen (an extension to ask for, a cut). A budget that refused once stays
    refused for this stream."""

    __slots__ = (
        "_asked",
        "_input_seen",
        "_input_usd",
        "_limits",
        "_next",
        "_per_token",
        "_tasks",
        "_units",
        "held",
        "user",
    )

    def __init__(
        self,
        limits: RateLimits,
        state: FlowState,
        input_usd: float,
        units: tuple[float, float, float, float],
        held: list[_Held],
        asked: int | None = None,
    ) -> None:
        self._limits = limits
        # The request's own maximum output: the provider stops there, whatever we count.
        self._asked = asked
        self._input_seen: tuple[int, int, int] | None = None
        self.user = state.user or ""
        self._input_usd = input_usd
        self._units = units  # USD per token: input, output, cache read, cache write
        self._per_token = units[1]
        self.held = held
        self._tasks: set[asyncio.Task[None]] = set()
        self._next = 0

    def over(self, output_tokens: int, input_tokens: tuple[int, int, int] | None) -> str | None:
        if input_tokens is not None and input_tokens != self._input_seen:
            # The provider's own count of the input replaces our estimate of it.
            self._input_seen = input_tokens
            given, read, write = input_tokens
            units = self._units
            self._input_usd = given * units[0] + read * units[2] + write * units[3]
            self._next = 0
        if output_tokens < self._next:
            return None
        if self._asked is not None:
            output_tokens = min(output_tokens, self._asked)
        cost = self._input_usd + output_tokens * self._per_token
        for held in self.held:
            if held.unwatched or held.spent or held.pending:
                continue
            if cost >= self._ask_at(held):
                held.pending = True
                task = asyncio.get_running_loop().create_task(self._limits.extend(self, held))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for held in self.held:
            if held.spent and cost > held.reservation.amount:
                now = self._limits.clock()
                return (
                    f"LlaMaKey: {self.user}: {held.budget.describe()} is spent; resets "
                    f"{held.budget.resets_at(now)}; the answer was cut off"
                )
        self._next = self._next_point()
        return None

    def _ask_at(self, held: _Held) -> float:
        """The running cost at which to ask for more: half a step before it is all used."""
        return held.reservation.amount - held.step / 2

    def _next_point(self) -> int:
        """The output at which `over` must look again (0: at once, an extension is in flight)."""
        if any(held.pending for held in self.held):
            return 0
        points = [
            (held.reservation.amount if held.spent else self._ask_at(held)) - self._input_usd
            for held in self.held
            if not held.unwatched
        ]
        return max(0, math.floor(min(points) / self._per_token)) if points else 2**62

    async def settled(self) -> None:
        """Wait for the extensions in flight (settlement must see every amount held)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class RateLimits:
    """The counter store and the reservations of flows in flight."""

    def __init__(
        self,
        state: GatewayState,
        store: ClosableCounterStore | None = None,
        clock: Callable[[], float] = time.time,
        rebuild: CounterRebuild | None = None,
    ) -> None:
        self.state = state
        self.clock = clock  # the reset time a budget refusal names (the store's clock)
        self._store = store
        self._given = store is not None  # a test's store is never replaced
        self._state_table: StateTable | None = None
        self._base: Path | None = None
        self.reservations: weakref.WeakKeyDictionary[http.HTTPFlow, list[Reservation]] = (
            weakref.WeakKeyDictionary()
        )
        self._closing: set[object] = set()
        # Counters a store does not hold yet start from the audit database (a test's own store
        # starts empty unless the test passes a rebuild).
        self.rebuild = rebuild
        if rebuild is None and store is None:
            self.rebuild = CounterRebuild(state, clock)
        self.soft = SoftLimits(state, clock)
        self._units: dict[tuple[str, str], tuple[float, float, float, float] | None] = {}
        self._units_from: object = None

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

    def worst_cost(
        self, state: FlowState, body: bytes, reserve_output: int, asked: int | None = None
    ) -> float | None:
        """What a request reserves on a budget: its input estimate (body bytes / 4) and the
        output it asks for at most (`asked`, else `reserve_output`), at the model's price; a
        stream no more than `reserve_output` of it (it grows while it flows: `StreamBudget`).
        None when unpriced. A catalogued model is priced at its dearest deployment."""
        if state.model is None:
            return 0.0  # no model (a listing, a file): nothing to price before; settled after
        output = asked if asked is not None else reserve_output
        if state.stream:
            output = min(output, reserve_output)
        return self._price(state, (len(body) + 3) // 4, output)

    def _price(
        self,
        state: FlowState,
        input_tokens: int,
        output_tokens: int,
        cache_read: int | None = None,
        cache_write: int | None = None,
    ) -> float | None:
        # A catalogued model is priced at its dearest deployment: any of them may serve it.
        worst = 0.0
        for provider, model in self.state.price_targets(state):
            probe = Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                model=model,
            )
            cost = cost_usd(provider, model, probe, overrides=self.state.price_overrides)
            if cost is None:
                return None
            worst = max(worst, float(cost))
        return worst

    def _watch(
        self,
        state: FlowState,
        body: bytes,
        asked: int | None,
        budgets: Sequence[Budget],
        taken: list[Reservation],
    ) -> None:
        """Watch a streamed answer on its budgets while it flows (`StreamBudget`)."""
        if not state.stream or state.model is None:
            return
        units = self.unit_prices(state)
        if units is None or not units[1]:
            return  # a free model's answer costs nothing more as it grows
        per_token = units[1]
        usd = [r for r in taken if r.unit == "usd"]
        held = [
            _Held(budget, reservation, max(per_token, budget.reserve_output * per_token))
            for budget, reservation in zip(budgets, usd, strict=True)
        ]
        input_usd = (len(body) + 3) // 4 * units[0]
        state.allowance = StreamBudget(self, state, input_usd, units, held, asked)

    def unit_prices(self, state: FlowState) -> tuple[float, float, float, float] | None:
        """USD per token of input, output, cache reads and cache writes of `state`'s model
        (a cache price it lacks: the input's), None when unpriced. A stream's running cost is
        worked out from these on every chunk, so genai-prices is asked once per model and
        configuration (its tiers, where a model has them, are left to the settlement)."""
        overrides = self.state.price_overrides
        if overrides is not self._units_from:
            self._units.clear()
            self._units_from = overrides
        key = (state.provider or "", state.model or "")
        if key not in self._units:
            n = 1_000_000
            given = self._price(state, n, 0)
            output = self._price(state, 0, n)
            read = self._price(state, 0, 0, n, None)
            write = self._price(state, 0, 0, None, n)
            found = None
            if given is not None and output is not None:
                found = (
                    given / n,
                    output / n,
                    (read if read is not None else given) / n,
                    (write if write is not None else given) / n,
                )
            self._units[key] = found
        return self._units[key]

    async def extend(self, watch: StreamBudget, held: _Held) -> None:
        """Ask the store for another step on `held`'s budget, else for whatever room is left;
        refused, the stream is cut once it passes what it holds."""
        budget, reservation = held.budget, held.reservation
        try:
            store = self.store()
            granted = 0.0
            admission = await store.add_within(budget.key, held.step, budget.usd, budget.window)
            if admission.admitted:
                granted = held.step
            else:
                room = budget.usd - admission.total
                if room >= 1e-6:  # a millionth: the stores' unit
                    again = await store.add_within(budget.key, room, budget.usd, budget.window)
                    granted = room if again.admitted else 0.0
            if granted:
                reservation.amount += granted
            else:
                held.spent = True
        except StoreUnavailable as error:
            if self._allow_on_error():
                log.warning(
                    "LlaMaKey: the rate-limit store is unavailable (%s); %s's stream goes on "
                    '(on_store_error = "allow")',
                    error,
                    watch.user,
                )
                held.unwatched = True
            else:
                log.error("LlaMaKey: the rate-limit store is unavailable: %s", error)
                held.spent = True
        finally:
            held.pending = False

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
            if self.rebuild is not None and (
                rebuilding := self.rebuild.waiter(store, limits, budgets)
            ):
                await rebuilding
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
                taken.append(Reservation(limit.key, window, limit.unit, amount, limit))
                self.soft.crossed(store, limit, admission.total, state.user)
            costs: dict[int, float | None] = {}
            max_output: int | None = None
            if budgets:
                if body is None:
                    body = flow.request.raw_content or b""
                max_output = requested_output(body)
            for budget in budgets:
                assert body is not None
                if budget.reserve_output not in costs:
                    costs[budget.reserve_output] = self.worst_cost(
                        state, body, budget.reserve_output, max_output
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
                    now = self.clock()
                    return LimitRefusal(
                        Refusal.BUDGET_EXCEEDED,
                        f"{state.user}: {budget.describe()} is spent; resets "
                        f"{budget.resets_at(now)}",
                        admission.retry_after,
                        retry=False,
                    )
                taken.append(Reservation(budget.key, budget.window, "usd", cost, budget))
                self.soft.crossed(store, budget, admission.total, state.user)
            if budgets and body is not None:
                self._watch(state, body, max_output, budgets, taken)
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
        if state is not None and isinstance(state.allowance, StreamBudget):
            await state.allowance.settled()
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
                    delta = spent - reservation.amount
                    total = await store.add(reservation.key, delta, reservation.window)
                    self.soft.crossed(store, reservation.rule, total, state.user)
        except StoreUnavailable as error:
            log.error("LlaMaKey: rate-limit usage not settled (store unavailable): %s", error)

    # Synchronous hooks: a flow with no reservation costs a dictionary lookup, no coroutine.
    @fail_closed
    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self.settle(flow) if flow in self.reservations else None

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self.settle(flow) if flow in self.reservations else None

    def running(self) -> None:
        """Start rebuilding the counters now, so the first request seldom waits for it."""
        if self.rebuild is not None:
            self.rebuild.start(self.store())

    async def done(self) -> None:
        await self.soft.flush()  # warnings claimed in the store before it closes
        self.soft.close()
        if self._store is not None:
            await self._store.aclose()
            self._store = None
