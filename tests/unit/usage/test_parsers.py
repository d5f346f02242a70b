"""The parser registry: every flavor has one, every usage family registers its own."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

from typing import cast

from llamakey.providers import UsageFamily
from llamakey.usage import PARSERS, PARSERS_BY_FAMILY, ApiFlavor, usage_from_body
from llamakey.usage.openai import from_openai
from llamakey.usage.parsers import parser_for
from tests.unit.usage.helpers import provider

OPENAI = provider("openai")


def test_every_flavor_has_a_parser() -> None:
    assert set(PARSERS) == set(ApiFlavor)


def test_every_usage_family_registers_its_parsers() -> None:
    # NONE has none of its own: its requests are all "other".
    assert set(PARSERS_BY_FAMILY) == set(UsageFamily) - {UsageFamily.NONE}
    assert all(PARSERS_BY_FAMILY.values())
    # Each flavor belongs to exactly one family.
    registered = [flavor for parsers in PARSERS_BY_FAMILY.values() for flavor in parsers]
    assert len(registered) == len(set(registered))


def test_a_flavor_this_version_does_not_know_reads_as_other() -> None:
    """A flavor string from elsewhere (a saved flow of another version) is never a KeyError."""
    assert parser_for(cast(ApiFlavor, "openai-chat")) is PARSERS[ApiFlavor.OPENAI_CHAT]
    assert parser_for(cast(ApiFlavor, "no-such-flavor")) is from_openai
    body = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    found = usage_from_body(OPENAI, cast(ApiFlavor, "no-such-flavor"), body)
    assert found is not None and (found.input_tokens, found.output_tokens) == (3, 4)


def test_usage_from_body_without_usage() -> None:
    assert usage_from_body(OPENAI, ApiFlavor.OPENAI_CHAT, b"") is None
    assert usage_from_body(OPENAI, ApiFlavor.OPENAI_CHAT, b"<html>Bad gateway</html>") is None
    assert (
        usage_from_body(
            provider("huggingface"), ApiFlavor.OPENAI_CHAT, b'{"error":"Model not found"}'
        )
        is None
    )
    assert (
        usage_from_body(
            OPENAI,
            ApiFlavor.OPENAI_CHAT,
            b'{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}',
        )
        is None
    )
    assert (
        usage_from_body(
            provider("vectara"), ApiFlavor.OTHER, b'{"summary":"x","search_results":[]}'
        )
        is None
    )
    assert (
        usage_from_body(OPENAI, ApiFlavor.OPENAI_CHAT, b'{"usage": {"prompt_tokens": true}}')
        is None
    )
