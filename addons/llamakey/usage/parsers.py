"""The usage parser of every API flavor, registered by usage family; usage of a whole answer."""

from __future__ import annotations

from collections.abc import Mapping

from llamakey.providers import Provider, UsageFamily
from llamakey.usage import anthropic, cohere, gemini, openai
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.readers import parse_object
from llamakey.usage.record import Parser, Usage

__all__ = ["PARSERS", "PARSERS_BY_FAMILY", "parser_for", "usage_from_body"]

# UsageFamily.NONE has no parser of its own: its requests are all "other".
PARSERS_BY_FAMILY: Mapping[UsageFamily, Mapping[ApiFlavor, Parser]] = {
    UsageFamily.OPENAI: openai.PARSERS,
    UsageFamily.ANTHROPIC: anthropic.PARSERS,
    UsageFamily.GEMINI: gemini.PARSERS,
    UsageFamily.COHERE: cohere.PARSERS,
}

PARSERS: Mapping[ApiFlavor, Parser] = {
    flavor: parser for parsers in PARSERS_BY_FAMILY.values() for flavor, parser in parsers.items()
}


def parser_for(flavor: ApiFlavor) -> Parser:
    """The parser of `flavor`; a flavor this version does not know reads as "other"."""
    return PARSERS.get(flavor) or PARSERS[ApiFlavor.OTHER]


def usage_from_body(provider: Provider, flavor: ApiFlavor, body: bytes) -> Usage | None:
    """Usage from a complete (non-streamed) JSON answer; None when it says nothing about usage."""
    obj = parse_object(body)
    if obj is None:
        return None
    usage = parser_for(flavor)(provider, obj)
    if usage.is_empty() and usage.model is None:
        return None
    return usage
