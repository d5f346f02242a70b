"""Cohere's native usage (v1 `meta`, v2 `usage`), billed on `billed_units`."""

from __future__ import annotations

from collections.abc import Mapping

from llamakey.providers import Provider
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.readers import as_int, as_obj, as_str, without_cache
from llamakey.usage.record import JSONObject, Parser, Usage

__all__ = ["PARSERS", "cohere_usage", "from_cohere_v1", "from_cohere_v2"]


def cohere_usage(container: JSONObject) -> Usage:
    """Cohere `usage`/`meta`: bill on `billed_units`; `cached_tokens` is reported beside it.

    The cached count is moved out of input so that `input_tokens` keeps its meaning; genai-prices
    adds it back, and with no Cohere cache price the cost equals billing on `billed_units`.
    """
    billed = as_obj(container.get("billed_units"))
    cached = as_int(container.get("cached_tokens"))
    return Usage(
        input_tokens=without_cache(as_int(billed.get("input_tokens")), cached),
        output_tokens=as_int(billed.get("output_tokens")),
        cache_read_tokens=cached,
    )


def from_cohere_v1(provider: Provider, obj: JSONObject) -> Usage:
    """v1 body (`meta`), or the NDJSON `stream-end` line (`response.meta`)."""
    source = obj
    if obj.get("event_type") == "stream-end" and isinstance(obj.get("response"), dict):
        source = obj["response"]
    usage = cohere_usage(as_obj(source.get("meta")))
    usage.finish_reason = as_str(obj.get("finish_reason")) or as_str(source.get("finish_reason"))
    return usage


def from_cohere_v2(provider: Provider, obj: JSONObject) -> Usage:
    """v2 body (`usage`; embed/rerank: `meta`), or the SSE `message-end` event (`delta.usage`)."""
    if obj.get("type") == "message-end":
        delta = as_obj(obj.get("delta"))
        usage = cohere_usage(as_obj(delta.get("usage")))
        usage.finish_reason = as_str(delta.get("finish_reason"))
        return usage
    usage = cohere_usage(as_obj(obj.get("usage")) or as_obj(obj.get("meta")))
    usage.finish_reason = as_str(obj.get("finish_reason"))
    return usage


PARSERS: Mapping[ApiFlavor, Parser] = {
    ApiFlavor.COHERE_V1: from_cohere_v1,
    ApiFlavor.COHERE_V2: from_cohere_v2,
}
