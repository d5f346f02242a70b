"""Gemini's `usageMetadata` (generateContent, streamGenerateContent, embedContent)."""

from __future__ import annotations

from collections.abc import Mapping

from llamakey.providers import Provider
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.readers import as_int, as_obj, as_str, without_cache
from llamakey.usage.record import JSONObject, Parser, Usage

__all__ = ["PARSERS", "from_gemini", "gemini_usage"]


def gemini_usage(meta: JSONObject) -> Usage:
    """Gemini `usageMetadata`: prompt includes cached content; thoughts are billed as output."""
    prompt = as_int(meta.get("promptTokenCount"))
    cached = as_int(meta.get("cachedContentTokenCount"))
    tool_prompt = as_int(meta.get("toolUsePromptTokenCount"))
    candidates = as_int(meta.get("candidatesTokenCount"))
    thoughts = as_int(meta.get("thoughtsTokenCount"))
    input_tokens = None
    if prompt is not None or tool_prompt is not None:
        input_tokens = (without_cache(prompt, cached) or 0) + (tool_prompt or 0)
    output_tokens = None
    if candidates is not None or thoughts is not None:
        output_tokens = (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


def from_gemini(provider: Provider, obj: JSONObject) -> Usage:
    """generateContent body or one streamed chunk (each carries the running totals)."""
    usage = gemini_usage(as_obj(obj.get("usageMetadata")))
    usage.model = as_str(obj.get("modelVersion"))
    candidates = obj.get("candidates")
    if isinstance(candidates, list) and candidates:
        usage.finish_reason = as_str(as_obj(candidates[0]).get("finishReason"))
    return usage


PARSERS: Mapping[ApiFlavor, Parser] = {ApiFlavor.GEMINI: from_gemini}
