"""Anthropic's Messages usage, also spoken by DeepSeek, xAI and Fireworks on `/v1/messages`."""

from __future__ import annotations

from collections.abc import Mapping

from llamakey.providers import Provider
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.readers import as_int, as_obj, as_str, provider_cost
from llamakey.usage.record import JSONObject, Parser, Usage

__all__ = ["PARSERS", "anthropic_usage", "from_anthropic"]


def anthropic_usage(u: JSONObject) -> Usage:
    """Anthropic `usage`: `input_tokens` already excludes cache reads and writes."""
    return Usage(
        input_tokens=as_int(u.get("input_tokens")),
        output_tokens=as_int(u.get("output_tokens")),
        cache_read_tokens=as_int(u.get("cache_read_input_tokens")),
        cache_write_tokens=as_int(u.get("cache_creation_input_tokens")),
        provider_cost_usd=provider_cost(u),
    )


def from_anthropic(provider: Provider, obj: JSONObject) -> Usage:
    """Messages body, `message_start` (usage inside `message`) or `message_delta` event."""
    message = obj.get("message")
    source = message if isinstance(message, dict) else obj
    usage = anthropic_usage(as_obj(source.get("usage")))
    if obj.get("type") == "message_delta" and not usage.input_tokens:
        # Deltas are cumulative; a delta without (or with a zero) input count must not wipe
        # the one message_start gave.
        usage.input_tokens = None
    usage.model = as_str(source.get("model"))
    usage.finish_reason = as_str(as_obj(obj.get("delta")).get("stop_reason")) or as_str(
        source.get("stop_reason")
    )
    return usage


PARSERS: Mapping[ApiFlavor, Parser] = {ApiFlavor.ANTHROPIC_MESSAGES: from_anthropic}
