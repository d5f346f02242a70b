"""What the rate limits and budgets count in their current windows, worked out from admitted
requests (the audit database's rows) instead of read from a counter store.

The proxy's counters of ``[state] backend = "local"`` live in its memory, where nothing else
can read them, and are lost on restart; the audit database holds every request they counted.
`window_usage` counts those requests again as `steps.ratelimit` did, under the current
configuration: each request of a user whose policy has a limit or budget that applies to it
(provider, model) adds to that limit's counter (key and window, as the stores key them) when
it started in the window holding `now`:

- a request limit: 1;
- a token limit: the request's real tokens (input + output + cache reads and writes), else
  (usage unknown) the reservation the proxy kept, estimated as body bytes / 4 plus the
  limit's ``reserve_output`` (the request's own ``max_tokens`` is not in the audit row);
- a budget: the request's ``cost_usd``; with no cost, the reservation the proxy kept
  (`worst_cost`, if given, else nothing); a request that names no model reserved nothing.

Refused requests are not `Spent` (their reservations were given back). Sums are kept in
millionths, as the stores keep them (`store.MICRO`), so equal inputs give equal totals.

Shared by ``lmk status`` and by the rebuild of the counters after a restart or a reload
(`steps.rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit
from llamakey.rules.policy import UserPolicy
from llamakey.store.counters import Window, from_micros, to_micros

Counter = tuple[str, int]
"""A counter as the stores key it: (counter key, window seconds)."""


@dataclass(frozen=True, slots=True)
class Spent:
    """One admitted request, as the audit database records it."""

    user: str
    provider: str
    model: str | None
    started: float
    """Epoch seconds: when the request started (the row's ``ts``)."""
    tokens: int | None
    """Input + output + cache reads and writes; None when the usage is not known."""
    request_bytes: int
    cost_usd: float | None


WorstCost = Callable[[Spent, int], float | None]
"""The most `Spent` could have cost with `reserve_output` output tokens (what a budget
reserved), None when it cannot be priced."""


def limit_window(limit: RateLimit) -> Window:
    """The window of a rate limit (a budget has its own: `Budget.window`)."""
    return Window(limit.seconds)


def counter_of(rule: RateLimit | Budget) -> Counter:
    """The counter `rule` counts on."""
    window = limit_window(rule) if isinstance(rule, RateLimit) else rule.window
    return (rule.key, window.seconds)


def counters_of(policy: UserPolicy) -> dict[Counter, Window]:
    """Every counter the rate limits and budgets of `policy` count on, with its window."""
    found: dict[Counter, Window] = {counter_of(r): limit_window(r) for r in policy.rate_limits}
    found |= {counter_of(b): b.window for b in policy.budgets}
    return found


def sharing(policies: Mapping[str, UserPolicy], wanted: Collection[Counter]) -> list[str]:
    """The users whose requests count on any of the `wanted` counters (a group's or the
    gateway's counter is counted by everyone who has a limit on it)."""
    wanted_set = set(wanted)
    return sorted(name for name, p in policies.items() if wanted_set.intersection(counters_of(p)))


def earliest_start(windows: Iterable[Window], now: float) -> float | None:
    """Where the longest of the current `windows` began: the oldest request that can still
    count on them; None for no window."""
    return min((window.start(now) for window in windows), default=None)


def window_usage(
    spent: Iterable[Spent],
    policies: Mapping[str, UserPolicy],
    now: float,
    *,
    worst_cost: WorstCost | None = None,
    wanted: Collection[Counter] | None = None,
) -> dict[Counter, float]:
    """The total of every counter (or only of those `wanted`) in the window holding `now`,
    from the admitted requests `spent` (module docstring). A user with no policy (no longer
    in the configuration) counts nothing; a counter nothing was added to is left out."""
    wanted_set = set(wanted) if wanted is not None else None
    totals: dict[Counter, int] = {}

    def count(counter: Counter, window: Window, request: Spent, amount: float) -> None:
        if wanted_set is not None and counter not in wanted_set:
            return
        if not window.start(now) <= request.started < window.end(now):
            return
        totals[counter] = totals.get(counter, 0) + to_micros(amount)

    for request in spent:
        policy = policies.get(request.user)
        if policy is None:
            continue
        for limit in policy.rate_limits:
            if limit.applies(request.provider, request.model):
                count(counter_of(limit), limit_window(limit), request, _tokens(limit, request))
        for budget in policy.budgets:
            if budget.applies(request.provider, request.model):
                cost = _cost(budget, request, worst_cost)
                count(counter_of(budget), budget.window, request, cost)
    return {counter: from_micros(total) for counter, total in totals.items()}


def _tokens(limit: RateLimit, request: Spent) -> float:
    if limit.unit != "tokens":
        return 1.0
    if request.tokens is not None:
        return float(request.tokens)
    return float((request.request_bytes + 3) // 4 + limit.reserve_output)


def _cost(budget: Budget, request: Spent, worst_cost: WorstCost | None) -> float:
    if request.cost_usd is not None:
        return request.cost_usd
    if request.model is None or worst_cost is None:
        return 0.0
    return worst_cost(request, budget.reserve_output) or 0.0
