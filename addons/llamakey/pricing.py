"""USD cost of one call, offline, from genai-prices' bundled price tables.

Called once per metered request, so model resolution is cached per (price table, model).
Which table prices a provider is its catalogue entry's `pricing`. Unknown models cost None,
never 0: an unpriced call must show up as unpriced, not as free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

from genai_prices import Usage as PriceUsage
from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot

from llamakey.providers import Pricing, Provider
from llamakey.usage import Usage

if TYPE_CHECKING:  # types only: the config and the rules never need pricing
    from llamakey.config import Settings
    from llamakey.config.schema import PriceTable
    from llamakey.rules.usage_now import Spent, WorstCost

__all__ = ["PriceOverride", "cost_usd"]

log = logging.getLogger(__name__)

_MTOK = Decimal(1_000_000)

# (provider, model) pairs already warned about; capped so junk model names cannot grow it forever.
_warned: set[tuple[str, str | None]] = set()
_MAX_WARNED = 10_000


@dataclass(frozen=True)
class PriceOverride:
    """Operator-set USD prices per million tokens; cache prices default to the input price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


def price_overrides(prices: Mapping[str, PriceTable]) -> dict[str, PriceOverride]:
    """``[prices."MODEL"]`` as `cost_usd` takes them (built once per configuration load)."""
    return {
        model: PriceOverride(
            p.input_per_mtok, p.output_per_mtok, p.cache_read_per_mtok, p.cache_write_per_mtok
        )
        for model, p in prices.items()
    }


def _warn_once(provider: str, model: str | None, why: str) -> None:
    """Log one warning per (provider, model) per process."""
    key = (provider, model)
    if key in _warned or len(_warned) >= _MAX_WARNED:
        return
    _warned.add(key)
    log.warning("no price for %s model %r: %s", provider, model, why)


def _has_tokens(usage: Usage) -> bool:
    """Whether the usage reports any billable token count."""
    return any(
        n is not None
        for n in (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
    )


def _override_cost(price: PriceOverride, usage: Usage) -> Decimal:
    """Cost at operator prices; a missing cache price bills cache tokens as plain input."""
    cache_read = price.cache_read_per_mtok
    cache_write = price.cache_write_per_mtok
    total = (
        (usage.input_tokens or 0) * price.input_per_mtok
        + (usage.output_tokens or 0) * price.output_per_mtok
        + (usage.cache_read_tokens or 0)
        * (price.input_per_mtok if cache_read is None else cache_read)
        + (usage.cache_write_tokens or 0)
        * (price.input_per_mtok if cache_write is None else cache_write)
    )
    return total / _MTOK


def _price_target(pricing: Pricing | None, model: str) -> tuple[str, str] | None:
    """(genai-prices provider id, model ref) for a provider's pricing and a model, or None.

    A routed provider's models name their serving provider after a colon (Hugging Face's
    `meta-llama/Llama-3.3-70B-Instruct:groq`), which selects that provider's table
    (`huggingface_groq`).
    """
    if pricing is None:
        return None
    if pricing.routed:
        base, sep, route = model.rpartition(":")
        if not sep or not base or not route or route in pricing.route_policies:
            return None
        return pricing.provider_id + route.lower(), base
    # Gemini resource names ("models/gemini-2.5-flash") are bare model ids in the tables.
    return pricing.provider_id, model.removeprefix("models/")


@lru_cache(maxsize=4096)
def _resolve(pricing: Pricing | None, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
    """The genai-prices provider and model entry for (pricing, model); None when unknown.

    Cached because the snapshot remembers hits but rescans every model table on each miss.
    """
    target = _price_target(pricing, model)
    if target is None:
        return None
    try:
        return get_snapshot().find_provider_model(target[1], None, target[0], None)
    except LookupError:
        return None


def cost_usd(
    provider: Provider,
    model: str | None,
    usage: Usage,
    *,
    when: datetime | None = None,
    overrides: Mapping[str, PriceOverride] | None = None,
) -> Decimal | None:
    """USD cost of one call, or None when it cannot be priced. Never raises.

    In order: no token counts -> None; an override keyed "provider/model" or "model" -> tokens
    at those prices; else genai-prices (the provider's `pricing` table) at the prices in force
    at `when` (default now; naive means UTC). genai-prices counts cache tokens inside input, so
    our cache-free input is added back up before pricing. A cost the provider reported itself
    (`usage.provider_cost_usd`) is not ours: the audit log records it beside this one.
    """
    try:
        return _cost(provider, model, usage, when, overrides)
    except Exception as exc:  # metering must never fail a request
        _warn_once(provider.name, model, f"pricing failed: {exc!r}")
        return None


def _cost(
    provider: Provider,
    model: str | None,
    usage: Usage,
    when: datetime | None,
    overrides: Mapping[str, PriceOverride] | None,
) -> Decimal | None:
    """`cost_usd` without the safety net."""
    if not _has_tokens(usage):
        return None
    if overrides and model:
        override = overrides.get(f"{provider.name}/{model}") or overrides.get(model)
        if override is not None:
            return _override_cost(override, usage)
    if not model:
        _warn_once(provider.name, model, "the call named no model")
        return None
    resolved = _resolve(provider.pricing, model)
    if resolved is None:
        _warn_once(provider.name, model, "not in genai-prices")
        return None
    gp_provider, gp_model = resolved
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if (rates := _flat_token_rates(gp_model.get_prices(when or datetime.now(UTC)))) is not None:
        return _flat_cost(rates, usage)
    cache_read = usage.cache_read_tokens or 0
    cache_write = usage.cache_write_tokens or 0
    price_usage = PriceUsage(
        input_tokens=(usage.input_tokens or 0) + cache_read + cache_write,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    calc = gp_model.calc_price(price_usage, gp_provider, genai_request_timestamp=when)
    return calc.total_price


# Token prices our Usage carries counts for; a price whose ones are plain numbers (not tiered)
# is linear in the tokens. Other units (searches, audio, images, ...) are counts we never
# report, which genai-prices prices at 0 too, except a per-request fee.
_TOKEN_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_PER_REQUEST_FIELDS = ("requests_kcount",)


def _flat_token_rates(price: gp.ModelPrice) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
    """(input, output, cache read, cache write) USD per MTok when `price` is flat, else None.

    genai-prices' general calculation takes about 200 µs a call, on the event loop after
    every answer; most models are priced flat, which takes a few µs. Tiered or per-request
    prices go the general way. A missing cache price means cache tokens are billed as input,
    as genai-prices does (checked against it over its whole catalogue in the tests).
    """
    if any(getattr(price, name, None) is not None for name in _PER_REQUEST_FIELDS):
        return None
    rates = [getattr(price, name, None) for name in _TOKEN_FIELDS]
    if not all(rate is None or isinstance(rate, Decimal) for rate in rates):
        return None  # tiered by prompt size
    zero = Decimal(0)
    input_rate = rates[0] if isinstance(rates[0], Decimal) else zero
    output_rate = rates[1] if isinstance(rates[1], Decimal) else zero
    read_rate = rates[2] if isinstance(rates[2], Decimal) else input_rate
    write_rate = rates[3] if isinstance(rates[3], Decimal) else input_rate
    return input_rate, output_rate, read_rate, write_rate


def _flat_cost(rates: tuple[Decimal, Decimal, Decimal, Decimal], usage: Usage) -> Decimal:
    counts = (
        usage.input_tokens or 0,
        usage.output_tokens or 0,
        usage.cache_read_tokens or 0,
        usage.cache_write_tokens or 0,
    )
    if min(counts) < 0:
        raise ValueError("negative token count")  # cost_usd turns this into None + a warning
    return (
        sum((rate * count for rate, count in zip(rates, counts, strict=True)), Decimal(0)) / _MTOK
    )


def reserved_cost(settings: Settings) -> WorstCost:
    """What a budget reserved for an audited request whose cost is unknown (in flight, or
    unpriced): its input estimate (bytes / 4) and `reserve_output` at the model's price then,
    `[prices]` first, as `steps.ratelimit` reserves it (`lmk status`, the counters' rebuild)."""
    overrides = price_overrides(settings.file.prices)

    def worst(request: Spent, reserve_output: int) -> float | None:
        resolved = settings.providers.get(request.provider)
        if resolved is None:
            return None
        probe = Usage(
            input_tokens=(request.request_bytes + 3) // 4,
            output_tokens=reserve_output,
            model=request.model,
        )
        when = datetime.fromtimestamp(request.started, UTC)
        cost = cost_usd(resolved.provider, request.model, probe, when=when, overrides=overrides)
        return float(cost) if cost is not None else None

    return worst
