"""Counters rebuilt from what the audit database recorded: what the rate limits and budgets of
the current configuration would hold now, had the proxy never stopped (README "Rules").

For each counter (a key in its window) the rows of the current window that went upstream
(`Spend`, from ``llamakey.audit.spend``) are counted as the live rules count them:
- a request limit counts each request;
- a token limit counts the real usage (input + output + cache tokens), and a request with no
  usage recorded (in flight when the proxy stopped, killed mid-answer, an answer without usage)
  its reservation: the input estimate (request bytes / 4) plus the rule's ``reserve_output``
  (the request's own ``max_tokens`` is not in the audit row);
- a budget counts the settled ``cost_usd``, and a request with a model but no cost its
  worst case at the model's price today, as a reservation that was never settled keeps it.
The rows counted on a counter are those of the users whose policy now has it; a user no longer
in the configuration (revoked) still counts on the group (by the groups in the row) and gateway
counters, so revoking someone does not give their group its allowance back.

Pure: no I/O, no clock (the caller passes where each window starts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from llamakey.rules.limits import CountedRule
from llamakey.rules.policy import UserPolicy
from llamakey.store import Window

type Counter = tuple[str, Window]
"""A counter of the store: its key and its window."""

type Price = Callable[[str, str, int, int], float | None]
"""USD of (provider, model, input tokens, output tokens); None when the model is unpriced."""


@dataclass(frozen=True, slots=True)
class Spend:
    """What one user (in `groups`) sent to one provider and model since a window began."""

    user: str
    groups: tuple[str, ...]
    provider: str
    model: str | None
    requests: int
    tokens: int
    """Usage of the requests whose usage is recorded."""
    unmetered: int
    """Requests with no usage recorded, and their input estimate (bytes / 4)."""
    unmetered_input: int
    usd: float
    """`cost_usd` of the requests that have one."""
    unpriced: int
    """Requests with no `cost_usd`, and their input estimate (bytes / 4)."""
    unpriced_input: int


def counters(policies: Mapping[str, UserPolicy]) -> dict[Counter, dict[str, CountedRule]]:
    """Every counter of the configuration, with each user whose policy counts on it and the
    rule they count with."""
    found: dict[Counter, dict[str, CountedRule]] = defaultdict(dict)
    for user, policy in policies.items():
        rules: tuple[CountedRule, ...] = (*policy.rate_limits, *policy.budgets)
        for rule in rules:
            found[(rule.key, rule.window)][user] = rule
    return dict(found)


def rebuilt_totals(
    policies: Mapping[str, UserPolicy],
    wanted: Iterable[Counter],
    spends: Mapping[int, Sequence[Spend]],
    start_of: Callable[[Window], int],
    price: Price,
) -> dict[Counter, float]:
    """The total of each counter in `wanted` from `spends` (by the epoch second they start
    from: each window's own start, `start_of`). A counter with nothing spent is 0."""
    holders = counters(policies)
    by_user: dict[int, dict[str, list[Spend]]] = {}
    strangers: dict[int, list[Spend]] = {}
    for start, rows in spends.items():
        index: dict[str, list[Spend]] = defaultdict(list)
        for spend in rows:
            if spend.user in policies:
                index[spend.user].append(spend)
            else:
                strangers.setdefault(start, []).append(spend)
        by_user[start] = index
    totals: dict[Counter, float] = {}
    for counter in wanted:
        rules = holders.get(counter, {})
        start = start_of(counter[1])
        total = 0.0
        for user, rule in rules.items():
            for spend in by_user.get(start, {}).get(user, ()):
                total += _counted(rule, spend, price)
        if rules:
            any_rule = next(iter(rules.values()))
            for spend in strangers.get(start, ()):
                if any_rule.scope == "gateway" or (
                    any_rule.scope == "group" and any_rule.scope_id in spend.groups
                ):
                    total += _counted(any_rule, spend, price)
        totals[counter] = total
    return totals


def _counted(rule: CountedRule, spend: Spend, price: Price) -> float:
    """What `rule` counts of `spend` (module docstring)."""
    if not rule.applies(spend.provider, spend.model):
        return 0.0
    if rule.unit == "requests":
        return float(spend.requests)
    if rule.unit == "tokens":
        return float(spend.tokens + spend.unmetered_input + spend.unmetered * rule.reserve_output)
    worst = 0.0
    if spend.unpriced and spend.model is not None:
        output = spend.unpriced * rule.reserve_output
        worst = price(spend.provider, spend.model, spend.unpriced_input, output) or 0.0
    return spend.usd + worst
