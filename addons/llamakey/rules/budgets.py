"""Budgets in USD: per user, group or gateway, over a UTC day, week (from Monday) or month.

The same design as the rate limits (`rules.limits`): compiled once per configuration load into
each user's `UserPolicy.budgets` with their counter keys resolved; every applicable budget
applies (so the strictest wins); two budgets of one user on the same counter fold into one,
the smaller amount. Counter keys: ``bg:{scope}:{scope id}:{provider or *}:{model or *}:usd``,
in the store of ``[state]`` (`steps.ratelimit` reserves and settles them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from llamakey.rules.limits import earlier, model_rules, scope_ids, targets
from llamakey.rules.models import ModelRules
from llamakey.store import Window

PERIODS: dict[str, Window] = {
    "day": Window(86400),
    "week": Window.week(),
    "month": Window.month(),
}
"""The window of each `per`."""


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One ``budgets`` entry as written, and its TOML path (``defaults.budgets.0``)."""

    usd: float
    per: str
    scope: str
    provider: str | None
    model: str | None
    reserve_output: int
    source: str
    warn_at: float | None = None
    """The soft limit, a fraction of `usd` (``warn_at = 0.8``): a warning once per window."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One compiled budget of one user, its counter key resolved."""

    key: str
    usd: float
    per: str
    window: Window
    provider: str | None
    model: ModelRules | None
    source: str
    reserve_output: int
    scope: str = "user"
    scope_id: str = ""
    """Whose counter it is: the user's or the group's name, ``all`` for the gateway."""
    warn_at: float | None = None

    @property
    def unit(self) -> str:
        return "usd"

    @property
    def cap(self) -> float:
        return self.usd

    def applies(self, provider: str, model: str | None) -> bool:
        return targets(self.provider, self.model, provider, model)

    def describe(self) -> str:
        return f"${self.usd:.2f} per {self.per} ({self.source})"

    def resets_at(self, now: float) -> str:
        """When the current window ends, ``2026-12-02T00:00:00Z``."""
        end = datetime.fromtimestamp(self.window.end(now), UTC)
        return end.strftime("%Y-%m-%dT%H:%M:%SZ")


def compile_budgets(
    user: str, groups: Sequence[str], specs: Iterable[tuple[BudgetSpec, str | None]]
) -> tuple[Budget, ...]:
    """The budgets of `user` (in `groups`) from `specs`: each with the group whose table it
    came from (None for ``[defaults]`` and the user's own table)."""
    folded: dict[tuple[str, str], Budget] = {}
    for spec, from_group in specs:
        for scope_id in scope_ids(spec.scope, user, groups, from_group):
            key = f"bg:{spec.scope}:{scope_id}:{spec.provider or '*'}:{spec.model or '*'}:usd"
            budget = Budget(
                key=key,
                usd=spec.usd,
                per=spec.per,
                window=PERIODS[spec.per],
                provider=spec.provider,
                model=model_rules(spec.model),
                source=spec.source,
                reserve_output=spec.reserve_output,
                scope=spec.scope,
                scope_id=scope_id,
                warn_at=spec.warn_at,
            )
            found = folded.get((key, spec.per))
            kept = budget if found is None or budget.usd < found.usd else found
            if found is not None:  # the soft limit of either: the earlier warning
                kept = replace(kept, warn_at=earlier(kept, found if kept is budget else budget))
            folded[(key, spec.per)] = kept
    return tuple(folded.values())
