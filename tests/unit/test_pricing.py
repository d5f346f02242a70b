"""Cost of one call: genai-prices figures, overrides, unknown models; never the provider's."""

# ruff: noqa: E501  (parametrize rows with long model ids read best one per line)

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from llamakey import pricing
from llamakey.pricing import PriceOverride, cost_usd
from llamakey.providers import BUILTIN_PROVIDERS, Provider
from llamakey.usage import ApiFlavor, Usage, usage_from_body

WHEN = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def provider(name: str) -> Provider:
    """The catalogue entry of `name`, or what a provider added in the config gets."""
    return BUILTIN_PROVIDERS.get(name) or Provider(name, (f"llm.{name}.example",))


def reference_price(
    gp_provider: str, model: str, *, inp: int, out: int, cache_read: int = 0, cache_write: int = 0
) -> Decimal:
    """genai-prices' own figure; its input_tokens include cache reads and writes."""
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=inp + cache_read + cache_write,
            output_tokens=out,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        ),
        model,
        provider_id=gp_provider,
        genai_request_timestamp=WHEN,
    )
    return calc.total_price


@pytest.mark.parametrize(
    ("name", "gp_provider", "model", "model_ref", "tokens"),
    [
        ("openai", "openai", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06", (600, 100, 400, 0)),
        ("azure", "azure", "gpt-4o-2024-11-20", "gpt-4o-2024-11-20", (145, 7, 1920, 0)),
        ("anthropic", "anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514", (12, 6, 3000, 1500)),
        ("gemini", "google", "gemini-2.5-flash", "gemini-2.5-flash", (200, 250, 1000, 0)),
        # Gemini 2.5 Pro is tiered above 200k input tokens: the tier must see the cache too.
        ("gemini", "google", "gemini-2.5-pro", "gemini-2.5-pro", (150_000, 1000, 60_000, 0)),
        ("cohere", "cohere", "command-a-03-2025", "command-a-03-2025", (500, 50, 1500, 0)),
        ("mistral", "mistral", "mistral-small-latest", "mistral-small-latest", (24, 27, 0, 0)),
        ("groq", "groq", "llama-3.3-70b-versatile", "llama-3.3-70b-versatile", (18, 556, 0, 0)),
        ("together", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "meta-llama/Llama-3.3-70B-Instruct-Turbo", (20, 50, 0, 0)),
        ("deepseek", "deepseek", "deepseek-chat", "deepseek-chat", (476, 200, 1024, 0)),
        ("openrouter", "openrouter", "openai/gpt-4o-mini", "openai/gpt-4o-mini", (194, 2, 0, 0)),
        ("xai", "x-ai", "grok-3-mini", "grok-3-mini", (26, 103, 6, 0)),
        ("fireworks", "fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/llama-v3p1-8b-instruct", (19, 20, 0, 0)),
        ("perplexity", "perplexity", "sonar", "sonar", (8, 170, 0, 0)),
        # HF router: the ":provider" suffix picks the huggingface_{provider} table.
        ("huggingface", "huggingface_groq", "meta-llama/Llama-3.3-70B-Instruct:groq", "meta-llama/Llama-3.3-70B-Instruct", (42, 3, 0, 0)),
    ],
)  # fmt: skip
def test_cost_matches_genai_prices(
    name: str, gp_provider: str, model: str, model_ref: str, tokens: tuple[int, int, int, int]
) -> None:
    inp, out, cache_read, cache_write = tokens
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cache_read or None,
        cache_write_tokens=cache_write or None,
    )
    expected = reference_price(
        gp_provider, model_ref, inp=inp, out=out, cache_read=cache_read, cache_write=cache_write
    )
    got = cost_usd(provider(name), model, usage, when=WHEN)
    assert got == expected
    assert got is not None and got > 0


def test_cache_tokens_are_cheaper_than_plain_input() -> None:
    """Moving tokens from plain input into cache reads lowers the cost: caches are not lost."""
    plain = cost_usd(
        provider("openai"), "gpt-4o", Usage(input_tokens=1000, output_tokens=0), when=WHEN
    )
    cached = cost_usd(
        provider("openai"),
        "gpt-4o",
        Usage(input_tokens=200, output_tokens=0, cache_read_tokens=800),
        when=WHEN,
    )
    assert plain is not None and cached is not None
    # gpt-4o: $2.50 input, $1.25 cached input per MTok.
    assert plain == Decimal("0.0025")
    assert cached == Decimal("0.0015")


def test_cost_from_a_parsed_answer_end_to_end() -> None:
    body = (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",'
        b'"content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,'
        b'"usage":{"input_tokens":12,"cache_creation_input_tokens":1500,"cache_read_input_tokens":3000,"output_tokens":6}}'
    )
    usage = usage_from_body(provider("anthropic"), ApiFlavor.ANTHROPIC_MESSAGES, body)
    assert usage is not None
    # Same figure genai-prices gets from the raw answer with its own Anthropic extractor.
    extracted = genai_prices.extract_usage(
        {
            "model": "claude-sonnet-4-20250514",
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 1500,
                "cache_read_input_tokens": 3000,
                "output_tokens": 6,
            },
        },
        provider_id="anthropic",
    )
    expected = extracted.calc_price(genai_request_timestamp=WHEN).total_price
    assert cost_usd(provider("anthropic"), usage.model, usage, when=WHEN) == expected


def test_naive_when_is_utc() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    naive = datetime(2025, 9, 1, 12, 0)
    assert cost_usd(provider("openai"), "gpt-4o", usage, when=naive) == cost_usd(
        provider("openai"), "gpt-4o", usage, when=WHEN
    )


def test_override_wins() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=2_000_000)
    by_model = {
        "gpt-4o": PriceOverride(Decimal("1"), Decimal("2"), cache_read_per_mtok=Decimal("0.1"))
    }
    assert cost_usd(provider("openai"), "gpt-4o", usage, overrides=by_model) == Decimal("2.2")
    # "provider/model" beats the bare model name.
    both = {
        **by_model,
        "azure/gpt-4o": PriceOverride(Decimal("10"), Decimal("20")),
    }
    # No cache price: cache reads bill as input.
    assert cost_usd(provider("azure"), "gpt-4o", usage, overrides=both) == Decimal("40")
    assert cost_usd(provider("openai"), "gpt-4o", usage, overrides=both) == Decimal("2.2")
    # Overrides price models genai-prices does not know; a provider-reported cost is not used.
    private = {
        "my-finetune": PriceOverride(Decimal("3"), Decimal("6"), cache_write_per_mtok=Decimal("4"))
    }
    reported = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_write_tokens=1_000_000,
        provider_cost_usd=99.0,
    )
    assert cost_usd(provider("vectara"), "my-finetune", reported, overrides=private) == Decimal(
        "13"
    )


def test_provider_reported_cost_is_not_ours() -> None:
    """Ours comes from token counts; the provider's (xAI, OpenRouter, Perplexity) is recorded
    beside it by the audit log, never taken in its place."""
    tokens = Usage(input_tokens=26, output_tokens=103, cache_read_tokens=6)
    reported = Usage(
        input_tokens=26, output_tokens=103, cache_read_tokens=6, provider_cost_usd=0.00012345
    )
    ours = cost_usd(provider("xai"), "grok-3-mini", tokens, when=WHEN)
    assert ours is not None and ours != Decimal("0.00012345")
    assert cost_usd(provider("xai"), "grok-3-mini", reported, when=WHEN) == ours
    # A model the price tables do not know stays unpriced, and a cost alone is no usage.
    assert cost_usd(provider("openrouter"), "some/brand-new-model", reported) is None
    assert (
        cost_usd(provider("openrouter"), "openai/gpt-4o-mini", Usage(provider_cost_usd=0.1)) is None
    )


def test_unknown_model_is_none_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    usage = Usage(input_tokens=100, output_tokens=100)
    with caplog.at_level(logging.WARNING, logger="llamakey.pricing"):
        assert cost_usd(provider("openai"), "gpt-unknown-test-model", usage) is None
        assert cost_usd(provider("openai"), "gpt-unknown-test-model", usage) is None
        assert cost_usd(provider("mistral"), "gpt-unknown-test-model", usage) is None
    warnings = [r for r in caplog.records if "gpt-unknown-test-model" in r.getMessage()]
    assert len(warnings) == 2  # one per (provider, model)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("vectara", "mockingbird-2.0"),
        ("anyscale", "meta-llama/Llama-2-70b-chat-hf"),
        ("huggingface", "meta-llama/Llama-3.3-70B-Instruct"),  # auto-routed: provider unknown
        ("huggingface", "meta-llama/Llama-3.3-70B-Instruct:fastest"),
        ("huggingface", "meta-llama/Llama-3.3-70B-Instruct:no-such-provider"),
        ("openai", None),
        ("not-a-provider", "gpt-4o"),
    ],
)
def test_unpriced_is_none(name: str, model: str | None) -> None:
    assert cost_usd(provider(name), model, Usage(input_tokens=10, output_tokens=10)) is None


def test_no_usage_is_none_not_zero() -> None:
    assert cost_usd(provider("openai"), "gpt-4o", Usage()) is None
    assert (
        cost_usd(provider("openai"), "gpt-4o", Usage(model="gpt-4o", finish_reason="stop")) is None
    )
    # Zero tokens reported is a real (free) call.
    assert cost_usd(
        provider("openai"), "gpt-4o", Usage(input_tokens=0, output_tokens=0)
    ) == Decimal("0")


def test_never_raises() -> None:
    # Negative counts make genai-prices raise ValueError; a junk override raises AttributeError.
    broken = Usage(input_tokens=-5, output_tokens=10)
    assert cost_usd(provider("openai"), "gpt-4o", broken) is None
    junk: dict[str, Any] = {"gpt-4o": "not a PriceOverride"}
    assert cost_usd(provider("openai"), "gpt-4o", Usage(input_tokens=10), overrides=junk) is None


def test_model_lookup_is_cached() -> None:
    pricing._resolve.cache_clear()
    usage = Usage(input_tokens=10, output_tokens=10)
    for _ in range(5):
        cost_usd(provider("openai"), "gpt-4o-mini", usage)
        cost_usd(provider("openai"), "gpt-nonexistent-cache-test", usage)
    info = pricing._resolve.cache_info()
    assert info.misses == 2
    assert info.hits == 8


def test_flat_fast_path_agrees_with_genai_prices_over_the_whole_catalogue() -> None:
    """Every model priced by the fast path costs exactly what genai-prices' own calc says."""
    import random
    from datetime import UTC, datetime

    from genai_prices import Usage as PriceUsage
    from genai_prices.data_snapshot import get_snapshot

    from llamakey import pricing

    rng = random.Random(7)
    now = datetime.now(UTC)
    checked = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            rates = pricing._flat_token_rates(model.get_prices(now))
            if rates is None:
                continue
            read, write = rng.choice([0, 3, 1500]), rng.choice([0, 5, 700])
            inp, out = rng.randint(0, 50_000), rng.randint(0, 9_000)
            usage = Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=read,
                cache_write_tokens=write,
            )
            expected = model.calc_price(
                PriceUsage(
                    input_tokens=inp + read + write,
                    output_tokens=out,
                    cache_read_tokens=read,
                    cache_write_tokens=write,
                ),
                provider,
                genai_request_timestamp=now,
            ).total_price
            assert pricing._flat_cost(rates, usage) == expected, (provider.id, model.id)
            checked += 1
    assert checked > 1000
