"""Tolerant readers of JSON answers: a wrong type reads as "not reported", never as an error."""

from __future__ import annotations

import json

from llamakey.usage.record import JSONObject

__all__ = [
    "as_int",
    "as_num",
    "as_obj",
    "as_str",
    "first_int",
    "parse_object",
    "provider_cost",
    "without_cache",
]


def parse_object(body: bytes) -> JSONObject | None:
    """The body as a JSON object, or None for anything else (empty, form data, binary, arrays)."""
    head = body[:64].lstrip()
    if not head.startswith(b"{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def as_int(value: object) -> int | None:
    """A token count, or None for absent / null / non-numeric (JSON booleans are not counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def first_int(*values: object) -> int | None:
    """The first value that is a token count."""
    for value in values:
        found = as_int(value)
        if found is not None:
            return found
    return None


def as_num(value: object) -> float | None:
    """A number (cost), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def as_obj(value: object) -> JSONObject:
    """The value if it is a JSON object, else an empty one (so lookups can chain)."""
    return value if isinstance(value, dict) else {}


def as_str(value: object) -> str | None:
    """The value if it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def provider_cost(usage: JSONObject) -> float | None:
    """USD cost inside a usage object: xAI ticks, OpenRouter `cost`, Perplexity `cost{}`."""
    ticks = as_int(usage.get("cost_in_usd_ticks"))
    if ticks is not None:
        return ticks / 1e10  # 1 USD = 10^10 ticks
    cost = usage.get("cost")
    if isinstance(cost, dict):
        return as_num(cost.get("total_cost"))
    return as_num(cost)


def without_cache(total: int | None, *cached: int | None) -> int | None:
    """An input total minus its cached parts, never below zero."""
    if total is None:
        return None
    return max(0, total - sum(c for c in cached if c is not None))
