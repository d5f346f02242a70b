"""OpenAI's usage formats (chat, completions, embeddings, Responses) and every provider that
copies them: Azure, DeepSeek, Groq, Mistral, Together, Fireworks, OpenRouter, Perplexity, xAI,
the Hugging Face router, and Gemini's and Cohere's OpenAI-compatible paths."""

from __future__ import annotations

from collections.abc import Mapping

from llamakey.providers import Provider
from llamakey.usage.anthropic import anthropic_usage
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.readers import (
    as_int,
    as_obj,
    as_str,
    first_int,
    provider_cost,
    without_cache,
)
from llamakey.usage.record import JSONObject, Parser, Usage

__all__ = ["PARSERS", "chat_usage", "from_openai", "from_responses", "responses_usage"]


def chat_usage(provider: Provider, u: JSONObject) -> Usage:
    """OpenAI chat/completions/embeddings `usage` and every provider that copies it."""
    prompt = as_int(u.get("prompt_tokens"))
    prompt_details = as_obj(u.get("prompt_tokens_details"))
    completion_details = as_obj(u.get("completion_tokens_details"))
    cached = first_int(
        prompt_details.get("cached_tokens"),
        u.get("prompt_cache_hit_tokens"),  # DeepSeek
        u.get("cached_tokens"),  # Groq (older)
        u.get("cached_prompt_text_tokens"),  # xAI
    )
    cache_write = as_int(prompt_details.get("cache_write_tokens"))  # OpenAI, OpenRouter
    miss = as_int(u.get("prompt_cache_miss_tokens"))  # DeepSeek: exactly the uncached input
    reasoning = first_int(completion_details.get("reasoning_tokens"), u.get("reasoning_tokens"))
    output = as_int(u.get("completion_tokens"))
    if provider.reasoning_beside_output:
        extra = (reasoning or 0) + (as_int(u.get("citation_tokens")) or 0)
        total = as_int(u.get("total_tokens"))
        # These providers have reported reasoning beside completion_tokens (total = prompt +
        # completion + reasoning); when the total says it is already inside, don't add it twice.
        already_inside = total is not None and total == (prompt or 0) + (output or 0)
        if extra and not already_inside:
            output = (output or 0) + extra
    return Usage(
        input_tokens=miss if miss is not None else without_cache(prompt, cached, cache_write),
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        provider_cost_usd=provider_cost(u),
    )


def responses_usage(u: JSONObject) -> Usage:
    """OpenAI Responses API `usage` (input includes cached; output includes reasoning)."""
    in_details = as_obj(u.get("input_tokens_details"))
    out_details = as_obj(u.get("output_tokens_details"))
    cached = first_int(
        in_details.get("cached_tokens"),
        in_details.get("cache_read_input_tokens"),  # Perplexity
    )
    cache_write = as_int(in_details.get("cache_write_tokens"))
    return Usage(
        input_tokens=without_cache(as_int(u.get("input_tokens")), cached, cache_write),
        output_tokens=as_int(u.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=as_int(out_details.get("reasoning_tokens")),
        provider_cost_usd=provider_cost(u),
    )


def _any_usage(provider: Provider, u: JSONObject) -> Usage:
    """A usage object of unknown family, told apart by its field names."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        return chat_usage(provider, u)
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:
        return anthropic_usage(u)
    return responses_usage(u)


def from_openai(provider: Provider, obj: JSONObject) -> Usage:
    """Chat/completions/embeddings body or chunk; Groq streams put usage under `x_groq`."""
    raw = obj.get("usage")
    if not isinstance(raw, dict):
        raw = as_obj(obj.get("x_groq")).get("usage")
    usage = _any_usage(provider, raw) if isinstance(raw, dict) else Usage()
    usage.model = as_str(obj.get("model"))
    choices = obj.get("choices")
    if isinstance(choices, list) and choices:
        usage.finish_reason = as_str(as_obj(choices[0]).get("finish_reason"))
    return usage


_RESPONSE_DONE = frozenset({"completed", "incomplete", "failed", "cancelled"})


def from_responses(provider: Provider, obj: JSONObject) -> Usage:
    """Responses API body, or a stream event wrapping it (`response.completed` and kin)."""
    response = obj.get("response")
    if not isinstance(response, dict):
        if "choices" in obj:  # a chat-shaped answer on a /responses path
            return from_openai(provider, obj)
        response = obj
    raw = response.get("usage")
    usage = _any_usage(provider, raw) if isinstance(raw, dict) else Usage()
    usage.model = as_str(response.get("model"))
    status = as_str(response.get("status"))
    if status in _RESPONSE_DONE:
        reason = as_str(as_obj(response.get("incomplete_details")).get("reason"))
        usage.finish_reason = reason if status == "incomplete" and reason else status
    return usage


PARSERS: Mapping[ApiFlavor, Parser] = {
    ApiFlavor.OPENAI_CHAT: from_openai,
    ApiFlavor.OPENAI_COMPLETIONS: from_openai,
    ApiFlavor.OPENAI_EMBEDDINGS: from_openai,
    ApiFlavor.OPENAI_RESPONSES: from_responses,
    # Anything else (audio transcriptions, HF task URLs, Vectara) is read as OpenAI-shaped:
    # whatever usage such an answer carries is in one of the shapes `_any_usage` knows.
    ApiFlavor.OTHER: from_openai,
}
