"""`Usage`: emptiness and its dict form (what metadata and the audit log keep)."""

# ruff: noqa: E501

from __future__ import annotations

import json

from llamakey.usage import Usage


def test_usage_helpers() -> None:
    assert Usage().is_empty()
    assert Usage(model="gpt-4o", finish_reason="stop").is_empty()
    assert not Usage(output_tokens=0).is_empty()
    assert not Usage(provider_cost_usd=0.01).is_empty()
    d = Usage(input_tokens=1, model="m").as_dict()
    assert d == {
        "input_tokens": 1, "output_tokens": None, "cache_read_tokens": None, "cache_write_tokens": None,
        "reasoning_tokens": None, "provider_cost_usd": None, "model": "m", "finish_reason": None,
    }  # fmt: skip
    json.dumps(d)  # audit rows are JSON
