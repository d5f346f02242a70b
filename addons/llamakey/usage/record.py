"""`Usage`: the normalised usage of one call, whichever provider reported it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamakey.providers import Provider

__all__ = ["USAGE_FIELDS", "JSONObject", "Parser", "Usage", "overlay"]

JSONObject = dict[str, Any]


@dataclass(slots=True)
class Usage:
    """Normalised usage of one call; None means "not reported", never "zero"."""

    input_tokens: int | None = None
    """Billed input excluding cache reads and writes."""
    output_tokens: int | None = None
    """Billed output, including reasoning tokens billed as output."""
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    """Informational: already counted inside `output_tokens`."""
    provider_cost_usd: float | None = None
    """Cost the provider itself reports (xAI, OpenRouter, Perplexity), recorded beside ours."""
    model: str | None = None
    """Model the provider reports (response `model`, Gemini `modelVersion`)."""
    finish_reason: str | None = None

    def is_empty(self) -> bool:
        """True when no token count and no provider cost was seen (a model alone is not usage)."""
        return (
            self.input_tokens is None
            and self.output_tokens is None
            and self.cache_read_tokens is None
            and self.cache_write_tokens is None
            and self.reasoning_tokens is None
            and self.provider_cost_usd is None
        )

    def as_dict(self) -> dict[str, object]:
        """All fields by name, for metadata and the audit log."""
        return {name: getattr(self, name) for name in USAGE_FIELDS}


USAGE_FIELDS = tuple(f.name for f in fields(Usage))  # dataclasses.fields() is slow per chunk


def overlay(target: Usage, newer: Usage) -> None:
    """Copy every field `newer` reports onto `target`: providers repeat cumulative totals."""
    for name in USAGE_FIELDS:
        value = getattr(newer, name)
        if value is not None:
            setattr(target, name, value)


type Parser = Callable[[Provider, JSONObject], Usage]
"""Reads what one answer object (a whole body or one stream event) of a flavor reports."""
