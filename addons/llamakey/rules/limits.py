"""Rate limits: requests or tokens per minute, hour or day, per user, group or gateway.

Compiled once per configuration load into each user's `UserPolicy.rate_limits` with their
counter keys already resolved, so a request only filters the tuple by provider and model.

The merge rule: every limit that applies to a user applies, from ``[defaults]``, from each of
their groups and from their own table; a request must be admitted by all of them, so the
strictest wins by itself. Two limits of one user that would count on the same counter (same
scope, scope id, provider, model, unit and window) are folded into one: the smaller number.

Counter keys: ``rl:{scope}:{scope id}:{provider or *}:{model or *}:{requests|tokens}``, the
window kept by the store. The scope id is the user's name, the group's name (a ``scope =
"group"`` limit of ``[groups.G]`` counts for G; one of ``[defaults]`` or ``[users.U]`` counts
for each of the user's groups), or ``all`` for the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from llamakey.rules.models import ModelRules, compile_models
from llamakey.store import Window

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}
"""Seconds of each `per`."""


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One ``rate_limits`` entry as written, and its TOML path
    (``groups.research.rate_limits.0``)."""

    unit: str  # "requests" | "tokens"
    amount: int
    per: str
    scope: str
    provider: str | None
    model: str | None
    reserve_output: int
    source: str
    warn_at: float | None = None
    """The soft limit, a fraction of `amount` (``warn_at = 0.8``): a warning once per window."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One compiled limit of one user, its counter key resolved."""

    key: str
    unit: str
    limit: int
    seconds: int
    per: str
    provider: str | None
    model: ModelRules | None
    source: str
    reserve_output: int
    scope: str = "user"
    scope_id: str = ""
    """Whose counter it is: the user's or the group's name, ``all`` for the gateway."""
    warn_at: float | None = None

    @property
    def window(self) -> Window:
        return Window(self.seconds)

    @property
    def cap(self) -> float:
        """The hard limit, in `unit`s."""
        return float(self.limit)

    def applies(self, provider: str, model: str | None) -> bool:
        return targets(self.provider, self.model, provider, model)

    def describe(self) -> str:
        return f"{self.limit} {self.unit} per {self.per} ({self.source})"


def targets(
    provider_wanted: str | None, models: ModelRules | None, provider: str, model: str | None
) -> bool:
    """Whether a limit (or budget) on `provider_wanted` and `models` counts this request; a
    limit on models does not count a request whose model cannot be read."""
    if provider_wanted is not None and provider_wanted != provider:
        return False
    if models is not None:
        return model is not None and models.allows(model)
    return True


def scope_ids(
    scope: str, user: str, groups: Sequence[str], from_group: str | None
) -> Sequence[str]:
    """Whose counters a limit (or budget) of `scope` counts on: the user's; the gateway's
    (``all``); or the group whose table set it, else (set on ``[defaults]`` or the user's own
    table) each of the user's groups."""
    if scope == "user":
        return (user,)
    if scope == "gateway":
        return ("all",)
    return (from_group,) if from_group is not None else groups


class CountedRule(Protocol):
    """What a rate limit and a budget share: a counter (`key` in `window`), the hard limit
    `cap` in `unit`s (``requests``, ``tokens``, ``usd``), whose counter it is, and where it was
    written (the store, the rebuild from the audit database and the soft limits read these)."""

    @property
    def key(self) -> str: ...
    @property
    def window(self) -> Window: ...
    @property
    def unit(self) -> str: ...
    @property
    def cap(self) -> float: ...
    @property
    def per(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def scope_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def reserve_output(self) -> int: ...
    @property
    def warn_at(self) -> float | None: ...

    def applies(self, provider: str, model: str | None) -> bool: ...
    def describe(self) -> str: ...


def earlier(kept: CountedRule, other: CountedRule) -> float | None:
    """The soft limit of two rules folded on one counter (`kept` the stricter): the one that
    warns at the lower amount, as a fraction of `kept`'s cap (none if only one at or above
    that cap, which the hard limit reaches first)."""
    amounts = [r.warn_at * r.cap for r in (kept, other) if r.warn_at is not None]
    lowest = min(amounts, default=kept.cap)
    return lowest / kept.cap if lowest < kept.cap else None


def model_rules(pattern: str | None) -> ModelRules | None:
    return compile_models((pattern,)) if pattern is not None else None


def compile_limits(
    user: str, groups: Sequence[str], specs: Iterable[tuple[LimitSpec, str | None]]
) -> tuple[RateLimit, ...]:
    """The limits of `user` (in `groups`) from `specs`: each with the group whose table it
    came from (None for ``[defaults]`` and the user's own table)."""
    folded: dict[tuple[str, int], RateLimit] = {}
    for spec, from_group in specs:
        seconds = WINDOWS[spec.per]
        for scope_id in scope_ids(spec.scope, user, groups, from_group):
            key = (
                f"rl:{spec.scope}:{scope_id}:{spec.provider or '*'}:{spec.model or '*'}:{spec.unit}"
            )
            limit = RateLimit(
                key=key,
                unit=spec.unit,
                limit=spec.amount,
                seconds=seconds,
                per=spec.per,
                provider=spec.provider,
                model=model_rules(spec.model),
                source=spec.source,
                reserve_output=spec.reserve_output,
                scope=spec.scope,
                scope_id=scope_id,
                warn_at=spec.warn_at,
            )
            found = folded.get((key, seconds))
            kept = limit if found is None or limit.limit < found.limit else found
            if found is not None:  # the soft limit of either: the earlier warning
                kept = replace(kept, warn_at=earlier(kept, found if kept is limit else limit))
            folded[(key, seconds)] = kept
    return tuple(folded.values())


_MAX_KEYS = ("max_tokens", "max_output_tokens", "max_completion_tokens")


def requested_output(body: bytes) -> int | None:
    """The output a request asks for at most (``max_tokens``, ``max_output_tokens``,
    ``max_completion_tokens``, Gemini's ``generationConfig.maxOutputTokens``; the largest if
    several), None when it names none."""
    output: int | None = None
    if body[:1] in (b"{", b" ", b"\n", b"\r", b"\t"):
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if isinstance(value, dict):
            config = value.get("generationConfig")
            candidates = [value.get(k) for k in _MAX_KEYS]
            if isinstance(config, dict):
                candidates.append(config.get("maxOutputTokens"))
            for candidate in candidates:
                if isinstance(candidate, int) and not isinstance(candidate, bool):
                    output = max(output or 0, candidate)
    return output


def estimate_tokens(body: bytes, reserve_output: int) -> int:
    """What a request may take: its body's bytes / 4 for the input, plus the output it asks
    for at most (`requested_output`), else `reserve_output`."""
    output = requested_output(body)
    return (len(body) + 3) // 4 + (output if output is not None else reserve_output)
