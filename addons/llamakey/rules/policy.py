"""A user's effective policy: merged once per configuration load from ``[defaults]``, their
groups and their own ``[users.U]`` table, compiled, immutable.

The rule, for each list kind (``endpoints``, ``models``) and each provider on its own:
1. the user's own table, if it sets that provider's list, decides alone (it may widen or narrow
   what the groups allow);
2. else, if any of the user's groups sets it, the union of the lists of those groups that set
   it (a group that does not mention the provider adds nothing and takes nothing away);
3. else ``[defaults]``, if it sets it;
4. else that list does not restrict that provider.
Rate limits are not merged this way: every applicable one applies (`rules.limits`).
An empty list allows nothing. To lift a restriction at a higher level, list everything
(``"* /**"`` for endpoints, ``"*"`` for models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit
from llamakey.rules.models import ModelRules, compile_models
from llamakey.rules.paths import EndpointPattern, EndpointRules, compile_endpoint

ListsByProvider = Mapping[str, Sequence[str]] | None


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """What one user may do, per provider; a provider absent from a mapping is unrestricted by
    that list."""

    endpoints: Mapping[str, EndpointRules] = field(default_factory=lambda: MappingProxyType({}))
    models: Mapping[str, ModelRules] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Where each list came from, e.g. ``{"models.openai": "groups.research"}`` (messages)."""
    rate_limits: tuple[RateLimit, ...] = ()
    """Every rate limit that applies to the user, keys resolved (`rules.limits`)."""
    budgets: tuple[Budget, ...] = ()
    """Every budget that applies to the user, keys resolved (`rules.budgets`)."""

    @property
    def restricted(self) -> bool:
        return bool(self.endpoints or self.models)


UNRESTRICTED = UserPolicy()


def merge(
    own: ListsByProvider,
    groups: Iterable[tuple[str, ListsByProvider]],
    defaults: ListsByProvider,
    own_name: str = "user",
) -> dict[str, tuple[tuple[str, ...], str]]:
    """The effective list per provider (module docstring) and the TOML table it came from."""
    group_list = list(groups)
    providers = {*(own or {}), *(defaults or {})}
    for _, lists in group_list:
        providers |= set(lists or {})
    result: dict[str, tuple[tuple[str, ...], str]] = {}
    for provider in sorted(providers):
        if own is not None and provider in own:
            result[provider] = (tuple(dict.fromkeys(own[provider])), own_name)
            continue
        setting = [
            (name, lists[provider]) for name, lists in group_list if lists and provider in lists
        ]
        if setting:
            union = tuple(dict.fromkeys(p for _, patterns in setting for p in patterns))
            result[provider] = (union, ", ".join(name for name, _ in setting))
        elif defaults is not None and provider in defaults:
            result[provider] = (tuple(dict.fromkeys(defaults[provider])), "defaults")
    return result


@lru_cache(maxsize=4096)
def _endpoint(text: str) -> EndpointPattern:
    return compile_endpoint(text)


@lru_cache(maxsize=4096)
def _models(patterns: tuple[str, ...]) -> ModelRules:
    return compile_models(patterns)


def build(
    own: tuple[ListsByProvider, ListsByProvider],
    groups: Iterable[tuple[str, tuple[ListsByProvider, ListsByProvider]]],
    defaults: tuple[ListsByProvider, ListsByProvider],
    own_name: str = "user",
) -> UserPolicy:
    """The compiled policy from (endpoints, models) of the user, their groups (by TOML name,
    e.g. ``groups.research``) and ``[defaults]``."""
    group_list = list(groups)
    endpoint_lists = merge(own[0], ((n, g[0]) for n, g in group_list), defaults[0], own_name)
    model_lists = merge(own[1], ((n, g[1]) for n, g in group_list), defaults[1], own_name)
    sources = {f"endpoints.{p}": src for p, (_, src) in endpoint_lists.items()}
    sources |= {f"models.{p}": src for p, (_, src) in model_lists.items()}
    return UserPolicy(
        endpoints=MappingProxyType(
            {
                p: EndpointRules(tuple(_endpoint(t) for t in texts))
                for p, (texts, _) in endpoint_lists.items()
            }
        ),
        models=MappingProxyType({p: _models(texts) for p, (texts, _) in model_lists.items()}),
        sources=MappingProxyType(sources),
    )
